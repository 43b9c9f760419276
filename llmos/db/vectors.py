"""The pgvector table of knowledge-base chunk embeddings: on PostgreSQL, when the server has the extension.

``kb_vectors`` holds one row per chunk (``chunk_id`` references ``kb_chunks`` with ``ON DELETE CASCADE``,
so a chunk's vector goes in the same transaction as the chunk). The column is an untyped ``vector``: each
embedding model has its own dimension, and pgvector indexes one dimension at a time through an expression
index over ``embedding::vector(n)``, partial on one base (``WHERE kb_id = ...``). ``kb_chunks.embedding``
stays the record; this table is an index of it that lives inside the database.

SQLite, and a PostgreSQL server without the extension (or a role that may not create it), have no such
table: knowledge bases there search FAISS index files. The migration that introduced the table calls
``create``; ``open_database`` calls it again on every open of a PostgreSQL database without the table,
so a server that gains the extension later gets it then (``CREATE ... IF NOT EXISTS`` throughout).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

TABLE = "kb_vectors"
_warned: set[str] = set()


def create(conn: Connection) -> bool:
    """Create the extension and the table when possible; True when the table exists afterwards."""
    if conn.dialect.name != "postgresql":
        return False
    if exists(conn):
        return True
    if not conn.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first():
        _warn_once(conn, "the server has no pgvector extension")
        return False
    try:
        with conn.begin_nested():  # a failed CREATE EXTENSION must not abort the caller's transaction
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        _warn_once(conn, f"CREATE EXTENSION vector failed: {str(exc.orig).strip().splitlines()[0]}")
        return False
    conn.execute(text(f"""
        CREATE TABLE IF NOT EXISTS {TABLE} (
            chunk_id integer PRIMARY KEY REFERENCES kb_chunks (id) ON DELETE CASCADE,
            kb_id integer NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
            embed_digest varchar(71) NOT NULL,
            embedding vector NOT NULL
        )"""))
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_kb_id ON {TABLE} (kb_id)"))
    return True


def exists(conn: Connection) -> bool:
    """The table is there (and so the extension it needs)."""
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.execute(text(f"SELECT to_regclass('{TABLE}') IS NOT NULL")).scalar())


def drop(conn: Connection) -> None:
    """Drop the table (the extension stays: other schemas may use it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))


def _warn_once(conn: Connection, why: str) -> None:
    key = conn.engine.url.render_as_string(hide_password=True)
    if key not in _warned:
        _warned.add(key)
        log.warning("PostgreSQL without pgvector (%s): knowledge bases search FAISS index files instead", why)
