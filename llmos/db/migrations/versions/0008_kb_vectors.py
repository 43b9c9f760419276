"""pgvector: chunk embeddings in a ``vector`` column, on PostgreSQL servers that have the extension

Revision ID: 0008
Revises: 0007

``kb_vectors`` (chunk id, base id, model digest, embedding as an untyped ``vector``), created only on
PostgreSQL and only when ``CREATE EXTENSION vector`` succeeds (see ``llmos.db.vectors``). Elsewhere this
revision changes nothing and knowledge bases keep searching FAISS index files. Existing bases fill the
table from ``kb_chunks.embedding`` on their first search.
"""
from __future__ import annotations

from alembic import op

from llmos.db import vectors

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    vectors.create(op.get_bind())


def downgrade() -> None:
    vectors.drop(op.get_bind())
