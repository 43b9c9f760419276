"""Knowledge bases on PostgreSQL: vectors searched by pgvector (pgserver's bundled server, which has the
extension), and FAISS on a PostgreSQL server without it (Debian's, where installed). Real files, the
real MiniLM through the kernel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from llmos.errors import NotFound
from llmos.kb import KernelEmbedder, KnowledgeBases, search
from llmos.kb import index as kb_index
from llmos.kb.pgvector import index_name
from llmos.kb.retrieval import open_index
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime, open_runtime
from tests import postgres
from tests.conftest import copy_builtin, make_settings
from tests.kb.conftest import EMBED

QUERIES = ["my card was stolen, what should I do?", "how long does a refund take", "exchange rate markup",
           "transfer money from another country", "change my PIN"]


@pytest.fixture(scope="module")
def pgvector_server() -> Iterator[str]:
    yield from postgres.started(postgres.pgserver_bindir(), "the pgserver package (PostgreSQL with pgvector) is not "
                                "installed")


@pytest.fixture(scope="module")
def plain_server() -> Iterator[str]:
    yield from postgres.started(postgres.debian_bindir(), "no Debian PostgreSQL server installed")


def _runtime(server_url: str, home: Path, builtin: Runtime) -> Runtime:
    rt = open_runtime(make_settings(home, database_url=postgres.new_database(server_url)), builtins=False)
    copy_builtin(rt, builtin, EMBED)
    return rt


@pytest.fixture
def pg_runtime(pgvector_server: str, tmp_path: Path, builtin_runtime: Runtime) -> Iterator[Runtime]:
    rt = _runtime(pgvector_server, tmp_path / "home", builtin_runtime)
    yield rt
    rt.close()


@pytest.fixture
def pg_kernel(pg_runtime: Runtime) -> Iterator[Kernel]:
    k = Kernel(pg_runtime.settings, pg_runtime.store.registry)
    yield k
    k.close()


def _files(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in paths]


def _rows(kbs: KnowledgeBases, kb_id: int) -> int:
    with kbs.db.session() as s:
        return s.execute(text("SELECT count(*) FROM kb_vectors WHERE kb_id = :k"), {"k": kb_id}).scalar_one()


def _indexes(kbs: KnowledgeBases) -> list[str]:
    with kbs.db.session() as s:
        return sorted(s.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'kb_vectors' "
                                     "AND indexname LIKE 'kb_vectors_hnsw_%'")).scalars())


def test_vectors_are_searched_by_pgvector_and_agree_with_faiss(pg_runtime: Runtime, pg_kernel: Kernel,
                                                              docs: list[Path], tmp_path: Path) -> None:
    kbs = KnowledgeBases.of(pg_runtime, "acme")
    embedder = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    kbs.create("help", embedder, chunk_size=120, overlap=20)
    kbs.add("help", _files(docs), lambda m: embedder)
    info, detail = kbs.get("help"), kbs.show("help")
    kb_id = kbs.kb_id(info)
    assert detail.vector_index == "pgvector" and info.chunks >= 6
    assert _rows(kbs, kb_id) == info.chunks and _indexes(kbs) == [index_name(kb_id, 384)]

    for mode in ("hybrid", "vector", "keyword"):
        found = search(kbs, "help", QUERIES[0], embedder, k=3, mode=mode)
        assert found.data[0].document == "cards.html", (mode, found.data)
        assert found.vector_index == (None if mode == "keyword" else "pgvector-hnsw")

    # the query a search runs is an index scan of the base's HNSW index
    pg = kbs.pgvectors()
    assert pg is not None
    plan = pg.plan(kb_id, embedder.embed([QUERIES[0]])[0], 5)
    assert f"Index Scan using {index_name(kb_id, 384)}" in plan and "Sort" not in plan, plan

    # the same chunks, the same vectors: pgvector's ranking is FAISS's exact one
    pg_index = open_index(kbs, info)
    ids, vectors, texts = kbs.chunk_rows("help")
    flat = kb_index.build(tmp_path / "faiss", ids, vectors, texts)
    assert pg_index.kind == "pgvector-hnsw" and flat.kind == "faiss-flat"
    for q in QUERIES:
        qv = embedder.embed([q])[0]
        pg_hits, faiss_hits = pg_index.vector_search(qv, 5), flat.vector_search(qv, 5)
        assert [h.chunk_id for h in pg_hits] == [h.chunk_id for h in faiss_hits], q
        assert np.allclose([h.score for h in pg_hits], [h.score for h in faiss_hits], atol=1e-5)


def test_new_versions_replacements_and_reembedding_keep_the_rows(pg_runtime: Runtime, pg_kernel: Kernel,
                                                                 docs: list[Path], tmp_path: Path) -> None:
    kbs = KnowledgeBases.of(pg_runtime, "acme")
    embedder = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    kbs.create("help", embedder)
    kbs.add("help", _files(docs[:2]), lambda m: embedder)
    assert search(kbs, "help", "top up by bank transfer", embedder, k=1, mode="vector").data[0].document != "topup.txt"
    second = kbs.add("help", _files(docs[2:3]), lambda m: embedder)  # a new version with another file
    kb_id = kbs.kb_id(kbs.get("help"))
    assert second.version == 3 and _rows(kbs, kb_id) == kbs.get("help").chunks
    found = search(kbs, "help", "top up by bank transfer", embedder, k=1, mode="vector")
    assert (found.version, found.data[0].document) == (3, "topup.txt")

    docs[0].write_text("# Refunds\n\nRefunds now reach your account within 2 business days.\n")
    kbs.add("help", _files(docs[:1]), lambda m: embedder)  # replaced: the old chunks' vectors go with them
    with kbs.db.session() as s:
        stale = s.execute(text("SELECT count(*) FROM kb_vectors v LEFT JOIN kb_chunks c ON c.id = v.chunk_id "
                               "WHERE v.kb_id = :k AND c.id IS NULL"), {"k": kb_id}).scalar_one()
    assert stale == 0 and _rows(kbs, kb_id) == kbs.get("help").chunks
    assert "2 business days" in search(kbs, "help", "refund time", embedder, k=1, mode="vector").data[0].text

    assert kbs.reembed("help", embedder) == kbs.get("help").chunks  # every vector written again
    assert _rows(kbs, kb_id) == kbs.get("help").chunks and _indexes(kbs) == [index_name(kb_id, 384)]
    assert search(kbs, "help", QUERIES[0], embedder, k=1, mode="vector").data[0].document == "cards.html"

    # the embedding model's name now resolves to a new version: the next search re-embeds, rows follow
    registry = pg_runtime.store.registry
    registry.add(EMBED, registry.get(EMBED).manifest.model_copy(update={"license": "another version"}), replace=True)
    newer = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    assert newer.digest != embedder.digest
    assert search(kbs, "help", QUERIES[0], newer, k=1, mode="vector").data[0].document == "cards.html"
    with kbs.db.session() as s:
        digests = s.execute(text("SELECT DISTINCT embed_digest FROM kb_vectors WHERE kb_id = :k"), {"k": kb_id}).scalars()
        assert list(digests) == [newer.digest]
    embedder = newer

    # rows missing (a base written before the table existed): filled again from the chunks at the next search
    with kbs.db.session() as s:
        s.execute(text("DELETE FROM kb_vectors WHERE kb_id = :k"), {"k": kb_id})
    assert search(kbs, "help", QUERIES[0], embedder, k=1, mode="vector").data[0].document == "cards.html"
    assert _rows(kbs, kb_id) == kbs.get("help").chunks
    with kbs.db.session() as s:  # the index lost: made again
        s.execute(text(f'DROP INDEX "{index_name(kb_id, 384)}"'))
    assert search(kbs, "help", QUERIES[0], embedder, k=1, mode="vector").vector_index == "pgvector-hnsw"
    assert _indexes(kbs) == [index_name(kb_id, 384)]


def test_another_dimension_gets_its_own_index(pg_runtime: Runtime, pg_kernel: Kernel, docs: list[Path]) -> None:
    """A base re-embedded by a model of another size: its rows and index change dimension together."""
    kbs = KnowledgeBases.of(pg_runtime, "acme")
    embedder = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    kbs.create("help", embedder)
    kbs.add("help", _files(docs), lambda m: embedder)
    kb_id = kbs.kb_id(kbs.get("help"))
    ids, vectors, _ = kbs.chunk_rows("help")
    small = vectors[:, :64] / np.linalg.norm(vectors[:, :64], axis=1, keepdims=True)  # a 64-dim "model"
    pg = kbs.pgvectors()
    assert pg is not None
    with kbs.db.session() as s:
        pg.replace(s, kb_id, [int(i) for i in ids], small, "sha256:small")
    assert _indexes(kbs) == [index_name(kb_id, 64)]
    query = small[3]
    assert pg.search(kb_id, query, 1)[0].chunk_id == int(ids[3])
    assert f"Index Scan using {index_name(kb_id, 64)}" in pg.plan(kb_id, query, 1)


def test_a_base_written_before_the_migration_is_filled(pg_runtime: Runtime, pg_kernel: Kernel,
                                                       docs: list[Path]) -> None:
    """A database that had bases before 0008 (here: migrated back to 0007, then opened again)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from llmos.db.engine import alembic_config, open_database

    kbs = KnowledgeBases.of(pg_runtime, "acme")
    embedder = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    kbs.create("help", embedder)
    kbs.add("help", _files(docs), lambda m: embedder)
    url = pg_runtime.db.url
    with pg_runtime.db.engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    assert "kb_vectors" not in pg_runtime.db.tables()
    db = open_database(url)
    try:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert db.revision() == head and "kb_vectors" in db.tables()
        again = KnowledgeBases(db, kbs.blobs, kbs.root, kbs.locks, "acme")
        assert _rows(again, again.kb_id(again.get("help"))) == 0
        found = search(again, "help", QUERIES[0], embedder, k=1, mode="vector")
        assert (found.vector_index, found.data[0].document) == ("pgvector-hnsw", "cards.html")
        assert _rows(again, again.kb_id(again.get("help"))) == again.get("help").chunks
    finally:
        db.close()


def test_tenants_are_apart_and_remove_takes_the_vectors(pg_runtime: Runtime, pg_kernel: Kernel,
                                                        docs: list[Path]) -> None:
    acme, other = KnowledgeBases.of(pg_runtime, "acme"), KnowledgeBases.of(pg_runtime, "other")
    embedder = KernelEmbedder.of(pg_kernel, EMBED, "acme")
    acme.create("help", embedder)
    acme.add("help", _files(docs[:2]), lambda m: embedder)  # refunds, cards
    other.create("help", embedder)
    other.add("help", _files(docs[2:3]), lambda m: embedder)  # top-ups
    assert {p.document for p in search(other, "help", QUERIES[0], embedder, k=10, mode="vector").data} == {"topup.txt"}
    assert {p.document for p in search(acme, "help", "top up", embedder, k=10, mode="vector").data} <= {
        "refunds.md", "cards.html"}

    acme_id, other_id = acme.kb_id(acme.get("help")), other.kb_id(other.get("help"))
    other.remove("help")
    assert _rows(acme, other_id) == 0 and _indexes(acme) == [index_name(acme_id, 384)]
    with pytest.raises(NotFound):
        search(other, "help", "top up", embedder)
    assert search(acme, "help", QUERIES[0], embedder, k=1, mode="vector").data[0].document == "cards.html"


def test_postgresql_without_pgvector_searches_faiss(plain_server: str, tmp_path: Path, builtin_runtime: Runtime,
                                                    docs: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="llmos.db.vectors"):
        rt = _runtime(plain_server, tmp_path / "home", builtin_runtime)
    kernel = Kernel(rt.settings, rt.store.registry)
    try:
        assert "kb_vectors" not in rt.db.tables()
        assert "PostgreSQL without pgvector" in caplog.text
        kbs = KnowledgeBases.of(rt, "acme")
        embedder = KernelEmbedder.of(kernel, EMBED, "acme")
        kbs.create("help", embedder)
        kbs.add("help", _files(docs), lambda m: embedder)
        assert kbs.show("help").vector_index == "faiss"
        for mode in ("hybrid", "vector", "keyword"):
            found = search(kbs, "help", QUERIES[0], embedder, k=3, mode=mode)
            assert found.data[0].document == "cards.html", (mode, found.data)
            assert found.vector_index == (None if mode == "keyword" else "faiss-flat")
        kbs.remove("help")
    finally:
        kernel.close()
        rt.close()
