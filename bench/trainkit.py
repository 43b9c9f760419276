"""Helpers shared by the learning benchmarks: a home with MiniLM in its store, and real dataset slices
imported the way a user would (``llmos data import``)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)

from bench.common import DATASETS  # noqa: E402
from llmos.config import load_settings  # noqa: E402
from llmos.data import Datasets, ImportOptions  # noqa: E402
from llmos.data.info import DatasetInfo  # noqa: E402
from llmos.runtime import Runtime, open_runtime  # noqa: E402
from llmos.store.builtin import BUILTINS, locate  # noqa: E402
from llmos.store.importer import ImportOptions as ModelImport  # noqa: E402

MINILM = "minilm-l6"


def open_home(home: str | None, **settings: object) -> Runtime:
    """A runtime over ``home`` (default: a fresh temporary folder) holding the built-in MiniLM only:
    the chat model is not needed here, and converting it would add a minute to every run."""
    root = Path(home) if home else Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    rt = open_runtime(load_settings(home=root, **settings), builtins=False)
    if not rt.store.registry.exists(MINILM):
        model = BUILTINS.get(MINILM)
        rt.store.importer.import_path(locate(model), MINILM, ModelImport(license=model.license))
    return rt


def head_lines(src: Path, n: int | None, out: Path, *, header: bool = True) -> Path:
    """The first ``n`` data rows of a line-per-row file (all when ``n`` is None), header kept."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    out.write_text("".join(head + (body if n is None else body[:n])), encoding="utf-8")
    return out


def conll_sentences(src: Path, n: int | None, out: Path) -> Path:
    """The first ``n`` sentences of a CoNLL file (all when ``n`` is None)."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    out.write_text("\n\n".join(blocks if n is None else blocks[:n]) + "\n", encoding="utf-8")
    return out


def import_splits(rt: Runtime, name: str, files: list[tuple[Path, str | None]], **opts: object) -> DatasetInfo:
    """Import files as one dataset, each into its split (None: no split), unless it is already there."""
    ds = Datasets.of(rt)
    if any(d.name == name for d in ds.list()):
        return ds.get(name)
    info = None
    for i, (path, split) in enumerate(files):
        info = ds.import_file(path, name, ImportOptions(split=split, append=i > 0, **opts))
    assert info is not None
    return info


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmos-bench-data-"))


__all__ = ["DATASETS", "MINILM", "conll_sentences", "head_lines", "import_splits", "open_home", "scratch"]
