"""Fixtures for the data tests: a registry over a fresh store, and helpers to write small files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmos.data import Datasets
from llmos.runtime import Runtime


@pytest.fixture
def reg(runtime: Runtime) -> Datasets:
    return Datasets.of(runtime)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write a small input file (text as UTF-8, or raw bytes) under tmp_path and return its path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return _write


@pytest.fixture
def head(datasets: Path, tmp_path: Path) -> Callable[[str, int], Path]:
    """The first ``n`` lines of a real dataset file, as a temp file with the same name (a fast slice)."""

    def _head(rel: str, n: int) -> Path:
        src = datasets / rel
        out = tmp_path / "slices" / src.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(src, "rb") as fh:
            out.write_bytes(b"".join(line for _, line in zip(range(n), fh)))
        return out

    return _head


def assert_nothing_stored(reg: Datasets, runtime: Runtime) -> None:
    """No dataset row, no blob and no temp file: a failed import left no trace."""
    assert reg.list(all_versions=True) == []
    assert runtime.store.blobs.digests() == []
    assert list(runtime.settings.tmp_dir.iterdir()) == []
