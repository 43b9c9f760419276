"""Fixtures for prompt tasks: a module's own store (the built-ins copied in), its daemon on a loopback
port, and small slices of the real datasets."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime, open_runtime
from tests.api.server import serving
from tests.conftest import ModuleDirs, copy_builtin, make_settings

MINILM, SMOL = "minilm-l6", "smollm2-135m-instruct"


@dataclass
class Daemon:
    url: str
    rt: Runtime
    http: httpx.Client

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.http.post(path, json=body)

    def ok(self, path: str, body: dict) -> dict:
        r = self.post(path, body)
        assert r.status_code == 200, r.text
        return r.json()

    def names(self) -> set[str]:
        return {m["id"] for m in self.http.get("/v1/models").json()["data"]}


@pytest.fixture(scope="module")
def store(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Iterator[Runtime]:
    """A store of this module's own, holding copies of both built-ins (the session's stay untouched)."""
    rt = open_runtime(make_settings(module_dirs("prompt") / "home", keep_alive=600), builtins=False)
    for name in (MINILM, SMOL):
        copy_builtin(rt, builtin_runtime, name)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def daemon(store: Runtime) -> Iterator[Daemon]:
    kernel = Kernel(store.settings, store.store.registry)
    with serving(create_app(store, kernel)) as url, httpx.Client(base_url=url, timeout=600) as http:
        yield Daemon(url, store, http)


def sst2_dev(datasets: Path, n: int) -> list[tuple[str, str]]:
    """The first ``n`` rows of SST-2 dev as (text, "negative" | "positive")."""
    with (datasets / "sst2" / "dev.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:n]
    return [(r["sentence"].strip(), ["negative", "positive"][int(r["label"])]) for r in rows]


def conll_sentences(datasets: Path, n: int) -> list[tuple[list[str], list[str]]]:
    """The first ``n`` CoNLL-2003 validation sentences of 6 to 24 tokens that hold an entity."""
    out = []
    for block in (datasets / "conll2003" / "valid.txt").read_text(encoding="utf-8").split("\n\n"):
        rows = [line.split() for line in block.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
        if 6 < len(rows) < 25 and any(r[3] != "O" for r in rows):
            out.append(([r[0] for r in rows], [r[3] for r in rows]))
        if len(out) == n:
            break
    return out
