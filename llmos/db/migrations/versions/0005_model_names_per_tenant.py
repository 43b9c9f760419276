"""model names per tenant; loop policies per tenant and name

Revision ID: 0005
Revises: 0004

A tenant's ``NAME`` and another tenant's ``NAME`` are different models, so the unique key of
``models`` gains ``tenant``; public models (tenant NULL) keep one ``name:tag`` each through a partial
unique index, since NULLs never collide in a unique constraint. Loop policies belong to a tenant's
name, so their primary key becomes (tenant, name).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_POLICY_COLUMNS = ('tenant', 'name', 'settings', 'state', 'root_dataset', 'job_id', 'candidate', 'baseline',
                   'feedback_cutoff', 'round_cutoff', 'canary', 'updated_at')


def _policies_table(name: str, primary: tuple[str, ...]) -> None:
    op.create_table(name,
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('root_dataset', sa.String(length=160), nullable=True),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('candidate', sa.String(length=260), nullable=True),
    sa.Column('baseline', sa.String(length=71), nullable=True),
    sa.Column('feedback_cutoff', sa.Integer(), nullable=False),
    sa.Column('round_cutoff', sa.Integer(), nullable=False),
    sa.Column('canary', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint(*primary, name=f'pk_{name}')
    )


def _swap_policies(primary: tuple[str, ...]) -> None:
    with op.batch_alter_table('loop_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loop_policies_tenant'))
    _policies_table('loop_policies_next', primary)
    cols = ', '.join(_POLICY_COLUMNS)
    op.execute(f'INSERT INTO loop_policies_next ({cols}) SELECT {cols} FROM loop_policies')
    op.drop_table('loop_policies')
    op.rename_table('loop_policies_next', 'loop_policies')
    with op.batch_alter_table('loop_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loop_policies_tenant'), ['tenant'], unique=False)


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_constraint('uq_models_name_tag', type_='unique')
        batch_op.create_unique_constraint('uq_models_tenant_name_tag', ['tenant', 'name', 'tag'])
    op.create_index('uq_models_public_name_tag', 'models', ['name', 'tag'], unique=True,
                    sqlite_where=sa.text('tenant IS NULL'), postgresql_where=sa.text('tenant IS NULL'))
    _swap_policies(('tenant', 'name'))


def downgrade() -> None:
    _swap_policies(('name',))
    op.drop_index('uq_models_public_name_tag', table_name='models')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_constraint('uq_models_tenant_name_tag', type_='unique')
        batch_op.create_unique_constraint('uq_models_name_tag', ['name', 'tag'])
