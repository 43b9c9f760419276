"""The small parts on their own: chunk boundaries and overlap, fusion, the scope table's kb rules."""

from __future__ import annotations

import pytest

from llmos.auth.policy import required_scopes
from llmos.auth.scopes import INFER, READ, TRAIN
from llmos.errors import InvalidInput
from llmos.kb.chunking import chunk_text
from llmos.kb.index import Hit, tokenize
from llmos.kb.retrieval import RRF_K, fuse


def test_chunks_cover_the_text_with_overlap_at_boundaries() -> None:
    text = " ".join(f"Word{i}." for i in range(400))
    pieces = chunk_text(text, size=200, overlap=50)
    assert len(pieces) > 5
    for a, b in zip(pieces, pieces[1:]):
        assert b.start < a.end <= b.end  # neighbours overlap
        assert text[b.start - 1] == " "  # a chunk starts at a word
    assert pieces[0].start == 0 and pieces[-1].end == len(text)
    assert all(len(p.text) <= 200 for p in pieces)
    with pytest.raises(InvalidInput, match="overlap"):
        chunk_text(text, size=200, overlap=100)


def test_rrf_prefers_what_both_rankings_like() -> None:
    vector = [Hit(1, 0.9), Hit(2, 0.8), Hit(3, 0.7)]
    keyword = [Hit(3, 9.0), Hit(4, 8.0), Hit(2, 1.0)]
    ranked = fuse(vector, keyword, 3)
    assert [r.chunk_id for r in ranked] == [3, 2, 1]
    assert ranked[0].score == pytest.approx(1 / (RRF_K + 3) + 1 / (RRF_K + 1))
    assert (ranked[0].vector_rank, ranked[0].keyword_rank) == (3, 1)


def test_tokens_fold_plurals_and_drop_stop_words() -> None:
    assert tokenize(["What are the fees for my cards and currencies?"]) == [["fee", "card", "currency"]]


def test_kb_scopes() -> None:
    assert set(required_scopes("POST", "/v1/kb/help/search")) == {READ, INFER}
    assert required_scopes("POST", "/v1/kb/help/documents") == (TRAIN,)
    assert required_scopes("POST", "/v1/kb") == (TRAIN,)
    assert required_scopes("DELETE", "/v1/kb/help") == (TRAIN,)
    assert set(required_scopes("GET", "/v1/kb/help")) == {READ, TRAIN, INFER}
    assert required_scopes("POST", "/v1/kb/a/b/search") == (TRAIN,)  # "*" is one whole segment


def test_a_large_version_gets_a_graph_that_finds_the_nearest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from llmos.kb import index as kb_index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(kb_index.EXACT_UNTIL + 500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 10 + len(vectors), dtype=np.int64)
    built = kb_index.build(tmp_path / "v1", ids, vectors, [f"chunk {i}" for i in range(len(vectors))])
    assert type(built._vectors).__name__ == "IndexHNSWFlat"
    loaded = kb_index.load(tmp_path / "v1")
    assert loaded is not None and loaded.size == len(vectors)
    for row in (0, 7, 1999, 2400):
        assert loaded.vector_search(vectors[row], 1)[0].chunk_id == ids[row]
    assert loaded.keyword_search("chunk 2400", 1)[0].chunk_id == ids[2400]
