"""Vector search inside PostgreSQL with pgvector, when the database has the ``kb_vectors`` table.

Each base's vectors are rows of ``kb_vectors`` (see ``llmos.db.vectors``), written in the transaction
that writes its chunks. Each base has its own HNSW index: an expression index over
``embedding::vector(<dim>)`` with ``vector_ip_ops`` (inner product over unit vectors = cosine), partial
on ``kb_id = <id>`` (and the dimension), the way pgvector's FAQ indexes vectors of several dimensions
in one column. A query carries the same predicate, as literals, so the planner can match the partial
index; being partial, the index holds only that base's current chunks, so a query never returns fewer
hits for having been filtered after the scan. The planner is told to use it (no sequential scan, no sort), small
bases too, where its cost model would pick an exact scan or the ``kb_id`` b-tree plus a sort: searches
behave the same at every size.

The rows are written with the chunks, and checked before a search (``sync``): a base written before
the table existed, or while another process did not see it, is filled again from
``kb_chunks.embedding`` under the table lock. Every transaction here that writes the table takes
``SHARE ROW EXCLUSIVE`` on it first, so two of them (whose ``CREATE INDEX`` / ``DROP INDEX`` would
otherwise wait on each other's row locks) never deadlock; searches only read and are not blocked by
inserts.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, TextClause, text
from sqlalchemy.orm import Session

from llmos.db import vectors as vector_table
from llmos.db.engine import Database
from llmos.kb.index import EF_CONSTRUCTION, EF_SEARCH, HNSW_M, Hit, VersionIndex

TABLE = vector_table.TABLE
MAX_DIM = 2000  # pgvector's limit for an HNSW index over ``vector``; larger embeddings stay on FAISS
MAX_EF_SEARCH = 1000
KIND = "pgvector-hnsw"
_available: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()

ChunkRows = Callable[[], tuple[np.ndarray, np.ndarray]]  # the base's chunk ids and embeddings, id order


def vectors_for(db: Database) -> PgVectors | None:
    """pgvector for ``db`` when it has the table; None: search FAISS files (SQLite, or no extension)."""
    found = _available.get(db.engine)
    if found is None:
        with db.engine.connect() as conn:
            found = vector_table.exists(conn)
        _available[db.engine] = found
    return PgVectors(db) if found else None


def index_name(kb_id: int, dim: int) -> str:
    return f"{TABLE}_hnsw_{int(kb_id)}_{int(dim)}"


def search_sql(kb_id: int, dim: int) -> str:
    """The query a search runs (``:q`` the query vector as text, ``:n`` how many); its ORDER BY is the
    index's expression and operator, its WHERE the index's predicate."""
    d = int(dim)
    return (f"SELECT chunk_id, (embedding::vector({d})) <#> CAST(:q AS vector({d})) AS distance FROM {TABLE} "
            f"WHERE {_predicate(kb_id, d)} ORDER BY distance LIMIT :n")


def literal(vector: np.ndarray) -> str:
    """pgvector's text form; nine significant digits read back to the same float32."""
    return "[" + ",".join("%.9g" % x for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


@dataclass
class PgVectors:
    db: Database

    # -- writes, each inside the caller's transaction ----------------------------------------------
    def lock(self, s: Session) -> None:
        """Take the writers' lock now: before anything in the transaction touches the table."""
        lock(s)

    def add(self, s: Session, kb_id: int, chunk_ids: list[int], vectors: np.ndarray, digest: str) -> None:
        """The new chunks' vectors; the base's index made when it has none yet."""
        lock(s)
        if not chunk_ids:
            return
        dim = vectors.shape[1]
        if dim > MAX_DIM:
            return
        _insert(s, kb_id, chunk_ids, vectors, digest)
        s.execute(text(_create_index_sql(kb_id, dim)))

    def replace(self, s: Session, kb_id: int, chunk_ids: list[int], vectors: np.ndarray, digest: str) -> None:
        """Every vector of the base anew (a new embedding model: perhaps another dimension)."""
        self.remove(s, kb_id)
        self.add(s, kb_id, chunk_ids, vectors, digest)

    def remove(self, s: Session, kb_id: int) -> None:
        """The base's rows and indexes (its chunks' deletion would cascade to the rows; the index would stay)."""
        lock(s)
        s.execute(text(f"DELETE FROM {TABLE} WHERE kb_id = :k"), {"k": kb_id})
        for name in _indexes(s, kb_id):
            s.execute(text(f'DROP INDEX IF EXISTS "{name}"'))

    # -- reads -------------------------------------------------------------------------------------
    def can_index(self, kb_id: int) -> bool:
        """The base's embeddings fit pgvector's HNSW (an empty base: yes)."""
        return _stored_dim(self.db, kb_id) <= MAX_DIM

    def sync(self, kb_id: int, digest: str | None, chunks: int, rows: ChunkRows) -> bool:
        """Make the base's rows and index match its ``chunks`` chunks; False when pgvector cannot index
        them (embeddings over ``MAX_DIM``): then the caller searches FAISS."""
        with self.db.session() as s:
            if _in_step(s, kb_id, digest, chunks):
                return True
        if not self.can_index(kb_id):
            return False
        with self.db.session() as s:
            lock(s)  # writers of the base wait from here on; then look again, at what they committed
            chunks = int(s.execute(text("SELECT count(*) FROM kb_chunks WHERE kb_id = :k"), {"k": kb_id}).scalar_one())
            if not _in_step(s, kb_id, digest, chunks):
                ids, vectors = rows()
                self.replace(s, kb_id, [int(i) for i in ids], vectors, digest or "")
        return True

    def search(self, kb_id: int, query: np.ndarray, n: int) -> list[Hit]:
        """The ``n`` nearest chunks of the base by inner product (score = cosine for unit vectors)."""
        with self.db.session() as s:
            found = s.execute(*_prepared(s, kb_id, query, n)).all()
        return [Hit(int(cid), -float(distance)) for cid, distance in found]

    def plan(self, kb_id: int, query: np.ndarray, n: int) -> str:
        """PostgreSQL's plan for that search (EXPLAIN), under the same settings."""
        with self.db.session() as s:
            statement, params = _prepared(s, kb_id, query, n)
            return "\n".join(s.execute(text(f"EXPLAIN {statement.text}"), params).scalars())


class PgVersionIndex:
    """One version's search: vectors from pgvector, keywords from the version's BM25 files."""

    kind = KIND

    def __init__(self, keywords: VersionIndex, vectors: PgVectors, kb_id: int) -> None:
        self._keywords, self._vectors, self.kb_id = keywords, vectors, kb_id

    @property
    def ids(self) -> np.ndarray:
        return self._keywords.ids

    @property
    def size(self) -> int:
        return self._keywords.size

    def vector_search(self, query: np.ndarray, n: int) -> list[Hit]:
        n = min(n, self.size)
        return self._vectors.search(self.kb_id, query, n) if n > 0 else []

    def keyword_search(self, query: str, n: int) -> list[Hit]:
        return self._keywords.keyword_search(query, n)


def _prepared(s: Session, kb_id: int, query: np.ndarray, n: int) -> tuple[TextClause, dict[str, object]]:
    """The search statement, after the transaction's settings: sorting and sequential scans disabled, so
    the only plan left that is not penalised is the base's HNSW index, whose scan returns rows in order."""
    ef = min(MAX_EF_SEARCH, max(EF_SEARCH, int(n)))
    s.execute(text("SELECT set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true), "
                   f"set_config('hnsw.ef_search', '{ef}', true)"))  # one round trip; true: this transaction only
    return text(search_sql(kb_id, int(query.shape[-1]))), {"q": literal(query.reshape(-1)), "n": int(n)}


def lock(s: Session) -> None:
    """Writers of the table one at a time (readers go on); held to the end of the transaction."""
    s.execute(text(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE"))


def _insert(s: Session, kb_id: int, chunk_ids: list[int], vectors: np.ndarray, digest: str) -> None:
    s.execute(text(f"INSERT INTO {TABLE} (chunk_id, kb_id, embed_digest, embedding) "
                   "VALUES (:c, :k, :d, CAST(:v AS vector))"),
              [{"c": c, "k": kb_id, "d": digest, "v": literal(v)} for c, v in zip(chunk_ids, vectors)])


def _create_index_sql(kb_id: int, dim: int) -> str:
    return (f'CREATE INDEX IF NOT EXISTS "{index_name(kb_id, dim)}" ON {TABLE} USING hnsw '
            f"((embedding::vector({int(dim)})) vector_ip_ops) WITH (m = {HNSW_M}, ef_construction = {EF_CONSTRUCTION}) "
            f"WHERE {_predicate(kb_id, dim)}")


def _predicate(kb_id: int, dim: int) -> str:
    """The partial index's predicate, repeated word for word by the query so the planner can match it. The
    dimension is part of it: CREATE INDEX also reads rows its own transaction deleted (a re-embedding's old
    vectors), and the cast to ``vector(dim)`` must never be tried on a row of another dimension."""
    return f"kb_id = {int(kb_id)} AND vector_dims(embedding) = {int(dim)}"


def _in_step(s: Session, kb_id: int, digest: str | None, chunks: int) -> bool:
    """A row from ``digest`` for every chunk, all of one dimension, and the index of that dimension (one
    query: every search asks it)."""
    mine, other, low, high, indexed = s.execute(text(
        "SELECT count(*) FILTER (WHERE embed_digest = :d), count(*) FILTER (WHERE embed_digest <> :d), "
        "min(vector_dims(embedding)), max(vector_dims(embedding)), "
        f"to_regclass(:prefix || coalesce(max(vector_dims(embedding)), 0)) IS NOT NULL FROM {TABLE} WHERE kb_id = :k"),
        {"d": digest or "", "k": kb_id, "prefix": index_name(kb_id, 0)[:-1]}).one()
    if other or mine != chunks:
        return False
    return chunks == 0 or (low == high and bool(indexed))


def _stored_dim(db: Database, kb_id: int) -> int:
    with db.session() as s:
        size = s.execute(text("SELECT octet_length(embedding) FROM kb_chunks WHERE kb_id = :k LIMIT 1"),
                         {"k": kb_id}).scalar()
    return int(size or 0) // 4  # float32


def _indexes(s: Session, kb_id: int) -> list[str]:
    prefix = f"{TABLE}_hnsw_{int(kb_id)}_"
    return [n for (n,) in s.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": TABLE})
            if n.startswith(prefix) and n[len(prefix):].isdigit()]
