"""The search indexes of one knowledge-base version, kept as files under ``<home>/kb/<id>/<version>``.

Vectors: FAISS (inner product over unit vectors = cosine). Up to ``EXACT_UNTIL`` chunks a flat index
(exact; building a graph is not worth it there); above it an HNSW graph (M=32), whose query time grows
with log n where a scan grows with n: bench/kb.py measured 0.17 ms against a 16 ms numpy scan at 10k
chunks, recall@10 1.000 against the exact answer. Keywords: BM25 (bm25s, Lucene's variant) over lower-cased word
tokens with English stop words (scikit-learn's list) removed and a light plural folding.

The files are a cache: the database holds every chunk's text and embedding, so a missing or
unreadable folder is rebuilt from it. A build writes into a temp folder and renames it into place, so
a reader never sees half an index. Where the database is PostgreSQL with pgvector, vectors are searched
there (``llmos.kb.pgvector``) and a version's folder holds the BM25 index alone (``vectors=False``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

EXACT_UNTIL = 2_000
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 128
_WORD = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float


class SearchIndex(Protocol):
    """What retrieval ranks with: one version's vector and keyword search (hits carry chunk row ids)."""

    @property
    def kind(self) -> str | None: ...  # which vector index answers: faiss-flat, faiss-hnsw, pgvector-hnsw

    @property
    def size(self) -> int: ...

    def vector_search(self, query: np.ndarray, n: int) -> list[Hit]: ...

    def keyword_search(self, query: str, n: int) -> list[Hit]: ...


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased words, English stop words out, plurals folded (cards -> card)."""
    return [[_fold(w) for w in _WORD.findall(t.lower()) if w not in _stop_words()] for t in texts]


@functools.cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import (
        ENGLISH_STOP_WORDS,  # 318 words; bm25s's own list has 33
    )

    return frozenset(ENGLISH_STOP_WORDS)


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class VersionIndex:
    """Vector (FAISS; None when pgvector has the vectors) and keyword search over one version's chunks."""

    def __init__(self, ids: np.ndarray, vectors_index: object | None, bm25: object) -> None:
        self.ids = ids
        self._vectors = vectors_index
        self._bm25 = bm25

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def kind(self) -> str | None:
        if self._vectors is None:
            return None
        return "faiss-flat" if self.size <= EXACT_UNTIL else "faiss-hnsw"

    def vector_search(self, query: np.ndarray, n: int) -> list[Hit]:
        n = min(n, self.size)
        if n == 0 or self._vectors is None:
            return []
        scores, rows = self._vectors.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), n)  # type: ignore[attr-defined]
        return [Hit(int(self.ids[r]), float(s)) for s, r in zip(scores[0], rows[0]) if r >= 0]

    def keyword_search(self, query: str, n: int) -> list[Hit]:
        tokens = tokenize([query])[0]
        vocab = self._bm25.vocab_dict  # type: ignore[attr-defined]
        known = [t for t in tokens if t in vocab]
        n = min(n, self.size)
        if not known or n == 0:
            return []
        scores = self._bm25.get_scores(known)  # type: ignore[attr-defined]
        top = np.argsort(-scores, kind="stable")[:n]
        return [Hit(int(self.ids[r]), float(scores[r])) for r in top if scores[r] > 0]


def build(folder: Path, ids: np.ndarray, vectors: np.ndarray | None, texts: list[str]) -> VersionIndex:
    """Build both indexes (BM25 alone when ``vectors`` is None) and write them to ``folder`` atomically
    (temp folder + rename)."""
    index = VersionIndex(ids, None if vectors is None else _vector_index(vectors), _bm25_index(texts))
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        _save(index, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def _vector_index(vectors: np.ndarray) -> object:
    import faiss

    dim = vectors.shape[1] if vectors.size else 1
    if len(vectors) <= EXACT_UNTIL:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.hnsw.efSearch = EF_SEARCH
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _bm25_index(texts: list[str]) -> object:
    import bm25s

    bm25 = bm25s.BM25()
    bm25.index(tokenize(texts) or [[]], show_progress=False)
    return bm25


def _save(index: VersionIndex, folder: Path) -> None:
    import faiss

    np.save(folder / "ids.npy", index.ids)
    if index._vectors is not None:
        faiss.write_index(index._vectors, str(folder / "vectors.faiss"))
    index._bm25.save(str(folder / "bm25"), show_progress=False)  # type: ignore[attr-defined]


def load(folder: Path, *, vectors: bool = True) -> VersionIndex | None:
    """The index saved in ``folder`` (with its FAISS vectors unless ``vectors`` is False); None when it is
    missing or unreadable (then it is rebuilt)."""
    import bm25s
    import faiss

    try:
        ids = np.load(folder / "ids.npy")
        found = faiss.read_index(str(folder / "vectors.faiss")) if vectors else None
        bm25 = bm25s.BM25.load(str(folder / "bm25"), show_progress=False) if (folder / "bm25").is_dir() else None
    except (OSError, RuntimeError, ValueError):
        return None
    if bm25 is None or (found is not None and found.ntotal != len(ids)):
        return None
    if bm25.vocab_dict is None:
        return None
    return VersionIndex(ids, found, bm25)


class IndexCache:
    """Loaded indexes by folder, the most recently used few kept in memory."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._items: OrderedDict[Path, VersionIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Path, *, vectors: bool = True) -> VersionIndex | None:
        with self._lock:
            found = self._items.get(folder)
            if found is not None:
                self._items.move_to_end(folder)
                return found
        loaded = load(folder, vectors=vectors)
        if loaded is not None:
            self.put(folder, loaded)
        return loaded

    def put(self, folder: Path, index: VersionIndex) -> None:
        with self._lock:
            self._items[folder] = index
            self._items.move_to_end(folder)
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def drop(self, prefix: Path) -> None:
        with self._lock:
            for folder in [f for f in self._items if f.is_relative_to(prefix)]:
                del self._items[folder]
