"""Search over a knowledge base: vector (cosine), keyword (BM25), or both fused (hybrid).

Hybrid fuses the two rankings by reciprocal-rank fusion: a chunk scores ``sum 1 / (RRF_K + rank)`` over
the lists it appears in (rank 1-based, each list cut at ``candidates``). RRF needs no score calibration
between cosine and BM25, and a chunk both methods rank well beats one only a single method likes.

Vectors are searched by pgvector inside PostgreSQL when the database has it (``llmos.kb.pgvector``),
otherwise by the version's FAISS index file; keywords always by its BM25 files. The reply names which
vector index answered (``vector_index``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from llmos.errors import InvalidInput
from llmos.kb import index as kb_index
from llmos.kb.embed import Embedder
from llmos.kb.info import KbInfo, Passage, SearchMode, SearchResult
from llmos.kb.pgvector import PgVersionIndex
from llmos.kb.store import KnowledgeBases

RRF_K = 60
MAX_K = 100
MAX_QUERY_CHARS = 4000
_CACHE = kb_index.IndexCache()


@dataclass(frozen=True)
class Ranked:
    chunk_id: int
    score: float
    vector_rank: int | None
    keyword_rank: int | None


def search(kbs: KnowledgeBases, name: str, query: str, embedder: Embedder, *, k: int = 5,
           mode: SearchMode = "hybrid") -> SearchResult:
    """The ``k`` best passages of ``name`` for ``query``."""
    if not query.strip():
        raise InvalidInput("the query is empty", param="query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}", param="query")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be 1..{MAX_K}", param="k")
    kbs.ensure_current(name, embedder)
    info = kbs.get(name)
    index = open_index(kbs, info)
    ranked = rank(index, query, embedder if mode != "keyword" else None, k=k, mode=mode)
    found = kbs.passages([r.chunk_id for r in ranked])
    data = [Passage(document=found[r.chunk_id][0], chunk=found[r.chunk_id][1], chunk_id=r.chunk_id, score=r.score,
                    text=found[r.chunk_id][2], vector_rank=r.vector_rank, keyword_rank=r.keyword_rank)
            for r in ranked if r.chunk_id in found]
    return SearchResult(knowledge_base=name, version=info.version, mode=mode, data=data,
                        vector_index=index.kind if mode != "keyword" else None)


def open_index(kbs: KnowledgeBases, info: KbInfo) -> kb_index.SearchIndex:
    """The version's index: from memory, from its folder, or built again from the stored embeddings;
    its vectors in pgvector when the database has it and can index them."""
    pg = kbs.pgvectors()
    if pg is not None:
        kb_id = kbs.kb_id(info)
        if pg.sync(kb_id, info.embed_digest, info.chunks, lambda: kbs.chunk_rows(info.name)[:2]):
            return PgVersionIndex(_open_files(kbs, info, vectors=False), pg, kb_id)
    return _open_files(kbs, info, vectors=True)


def _open_files(kbs: KnowledgeBases, info: KbInfo, *, vectors: bool) -> kb_index.VersionIndex:
    folder = kbs.index_folder(info)
    if not vectors:  # BM25 alone: its own folder, never mistaken for one with FAISS vectors
        folder = folder.with_name(f"{folder.name}-bm25")
    index = _CACHE.get(folder, vectors=vectors)
    if index is None:
        ids, stored, texts = kbs.chunk_rows(info.name)
        index = kb_index.build(folder, ids, stored if vectors else None, texts)
        _CACHE.put(folder, index)
        _prune(folder)
    return index


def _prune(folder: Path) -> None:
    """Older versions' index folders go once a newer one is built (they are rebuilt on demand)."""
    for old in folder.parent.iterdir():
        if old != folder and old.name.startswith("v") and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def rank(index: kb_index.SearchIndex, query: str, embedder: Embedder | None, *, k: int,
         mode: SearchMode, candidates: int | None = None) -> list[Ranked]:
    n = candidates or max(50, 4 * k)
    vector = index.vector_search(embedder.embed([query])[0], n) if embedder is not None else []
    keyword = index.keyword_search(query, n) if mode != "vector" else []
    if mode == "vector":
        return [Ranked(h.chunk_id, h.score, i, None) for i, h in enumerate(vector[:k], start=1)]
    if mode == "keyword":
        return [Ranked(h.chunk_id, h.score, None, i) for i, h in enumerate(keyword[:k], start=1)]
    return fuse(vector, keyword, k)


def fuse(vector: list[kb_index.Hit], keyword: list[kb_index.Hit], k: int) -> list[Ranked]:
    """Reciprocal-rank fusion of two rankings; ties keep the vector ranking's order."""
    vranks = {h.chunk_id: i for i, h in enumerate(vector, start=1)}
    kranks = {h.chunk_id: i for i, h in enumerate(keyword, start=1)}
    scores: dict[int, float] = {}
    for ranks in (vranks, kranks):
        for cid, r in ranks.items():
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + r)
    best = sorted(scores, key=lambda c: (-scores[c], vranks.get(c, len(vranks) + 1)))[:k]
    return [Ranked(c, scores[c], vranks.get(c), kranks.get(c)) for c in best]
