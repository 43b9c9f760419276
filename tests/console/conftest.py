"""Console fixtures: apps over a fresh store (auth off) and over the built-in models (auth on, a key
of a tenant of its own so nothing here shows up for other tests), and sign-in helpers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime, open_runtime
from tests.api.conftest import SlowFakeEngine
from tests.conftest import ModuleDirs, make_settings

SCRIPT = '<script>alert("pwned")</script>'
TENANT = "console-test"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign ``client`` in with ``key``; returns the CSRF token its pages carry afterwards."""
    token = csrf_of(client.get("/console/login").text)
    r = client.post("/console/login", data={"key": key, "csrf_token": token, "next": "/console/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/console/").text)


def fake_kernel(rt: Runtime) -> Kernel:
    return Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: SlowFakeEngine(ref))


@pytest.fixture(scope="module")
def fresh_runtime(module_dirs: ModuleDirs) -> Iterator[Runtime]:
    """An empty store (no built-ins), auth off: the loopback default."""
    rt = open_runtime(make_settings(module_dirs("console-home")), builtins=False)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def anon(fresh_runtime: Runtime) -> Iterator[TestClient]:
    kernel = fake_kernel(fresh_runtime)
    with TestClient(create_app(fresh_runtime, kernel)) as client:
        yield client
    kernel.close()


@pytest.fixture(scope="module")
def secured(builtin_runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The built-in models with auth on; engines are fakes (this is about the console, not the model)."""
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, auth="on")
    rt = Runtime(settings=s, db=builtin_runtime.db, store=builtin_runtime.store)
    kernel = fake_kernel(rt)
    with TestClient(create_app(rt, kernel)) as client:
        yield client
    kernel.close()


@pytest.fixture(scope="module")
def keys(builtin_runtime: Runtime) -> dict[str, str]:
    """Raw keys of the console test tenant: one per scope set the tests need."""
    db = builtin_runtime.db
    return {name: create_key(db, tenant=TENANT, name=name, scopes=scopes)[1]
            for name, scopes in (("reader", ["read"]), ("user", ["read", "infer"]), ("admin", ["admin"]))}


@pytest.fixture(scope="session")
def sst2_slice(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 rows of SST-2 dev, with a script tag injected as the first sentence."""
    lines = (datasets / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("console-data") / "sst2_slice.tsv"
    path.write_text("\n".join([lines[0], f"{SCRIPT} a fine film\t1", *lines[1:40]]) + "\n", encoding="utf-8")
    return path
