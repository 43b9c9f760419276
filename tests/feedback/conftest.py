"""Fixtures for the feedback-loop tests: a module home with MiniLM, a Banking77 slice of four intents
(training, validation, a pool of user traffic, held-out evaluation), and the daemon's app on a port."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmos.daemon import create_app
from llmos.data import ImportOptions
from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner
from llmos.runtime import Runtime, open_runtime
from tests.api.server import serving
from tests.conftest import ModuleDirs, make_settings
from tests.train.conftest import FAST, MINILM, Daemon, Home

INTENTS = ["card_arrival", "exchange_rate", "top_up_failed", "lost_or_stolen_card"]


class LoopHome(Home):
    def open(self) -> Runtime:
        return open_runtime(make_settings(self.root, **FAST, loop_interval=0), builtins=False)


@dataclass
class Slices:
    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    traffic: list[tuple[str, str]]  # what users send (and correct)
    held_out: list[tuple[str, str]]  # never trained on, never corrected: the served accuracy


def banking_slices(datasets: Path) -> Slices:
    by: dict[str, list[str]] = {c: [] for c in INTENTS}
    with open(datasets / "banking77/train.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in by:
                by[row["category"]].append(row["text"])
    cut = {"train": (0, 6), "validation": (6, 16), "traffic": (16, 36), "held_out": (36, 51)}
    return Slices(**{k: [(t, c) for c in INTENTS for t in by[c][a:b]] for k, (a, b) in cut.items()})


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Iterator[LoopHome]:
    h = LoopHome(module_dirs("loop") / "home", builtin_runtime)
    h.add_builtin(MINILM)
    yield h
    h.close()


@pytest.fixture(scope="module")
def slices(home: LoopHome, datasets: Path) -> Slices:
    s = banking_slices(datasets)
    tmp = home.root.parent / "slices"
    ds = home.datasets
    ds.import_file(write_csv(tmp / "train.csv", s.train), "intents", ImportOptions(split="train"))
    ds.import_file(write_csv(tmp / "val.csv", s.validation), "intents", ImportOptions(split="validation", append=True))
    return s


@pytest.fixture(scope="module")
def daemon(home: LoopHome) -> Iterator[Daemon]:
    rt = home.open()
    kernel = Kernel(rt.settings, rt.store.registry)
    jobs = JobRunner(rt)
    home.runners.append((jobs, rt))
    app = create_app(rt, kernel, jobs)
    with serving(app) as url:
        d = Daemon(url, kernel, jobs)
        d.app = app  # type: ignore[attr-defined]
        yield d
        d.http.close()
