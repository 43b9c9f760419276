"""dataset versions per tenant; record how derived versions were made

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:00:00

Dataset versions are numbered per (tenant, name), so the unique key gains ``tenant``; a tenant must
never collide with, or learn of, another tenant's dataset of the same name. ``derivation`` records the
operation (clean, split, augment, append), its parameters and its report for versions with a parent.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('derivation', sa.JSON(), nullable=True))
        batch_op.drop_constraint('uq_datasets_name_version', type_='unique')
        batch_op.create_unique_constraint('uq_datasets_tenant_name_version', ['tenant', 'name', 'version'])


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint('uq_datasets_tenant_name_version', type_='unique')
        batch_op.create_unique_constraint('uq_datasets_name_version', ['name', 'version'])
        batch_op.drop_column('derivation')
