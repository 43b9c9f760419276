"""registry clock: one row whose tick moves with every write of a model name or manifest

Revision ID: 0009
Revises: 0008

Lets a process cache name resolutions and know, by reading one number, whether any process changed the
store since (``llmos.store.registry.Registry.clock``).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    clock = op.create_table('registry_clock',
                            sa.Column('id', sa.Integer(), nullable=False),
                            sa.Column('tick', sa.Integer(), nullable=False),
                            sa.PrimaryKeyConstraint('id'))
    op.bulk_insert(clock, [{'id': 1, 'tick': 0}])


def downgrade() -> None:
    op.drop_table('registry_clock')
