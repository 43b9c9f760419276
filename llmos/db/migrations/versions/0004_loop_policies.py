"""feedback loop policies: per model name, its settings, the running round and the canary split

Revision ID: 0004
Revises: 0003

One row per served model name with a loop (llmos.feedback.policy). The canary column persists the live
traffic split so a restarted daemon resumes it unchanged.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('loop_policies',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
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
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('loop_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loop_policies_tenant'), ['tenant'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('loop_policies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loop_policies_tenant'))
    op.drop_table('loop_policies')
