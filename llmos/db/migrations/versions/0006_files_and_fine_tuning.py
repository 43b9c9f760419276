"""uploaded files and fine-tuning requests in OpenAI's shape

Revision ID: 0006
Revises: 0005

``files``: one row per upload (tenant, name, purpose, size, line count, the blob holding its bytes).
``fine_tuning_jobs``: what a ``POST /v1/fine_tuning/jobs`` asked (files, suffix, seed, metadata,
hyperparameters as sent) beside the ``train`` job that runs it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('filename', sa.String(length=260), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('lines', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=71), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_files_tenant'), ['tenant'], unique=False)
        batch_op.create_index(batch_op.f('ix_files_created_at'), ['created_at'], unique=False)
    op.create_table('fine_tuning_jobs',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=260), nullable=False),
    sa.Column('training_file', sa.String(length=64), nullable=False),
    sa.Column('validation_file', sa.String(length=64), nullable=True),
    sa.Column('result_name', sa.String(length=260), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('fine_tuning_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fine_tuning_jobs_tenant'), ['tenant'], unique=False)
        batch_op.create_index(batch_op.f('ix_fine_tuning_jobs_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('fine_tuning_jobs')
    op.drop_table('files')
