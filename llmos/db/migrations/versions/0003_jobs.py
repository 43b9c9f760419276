"""job control: per-job runner bookkeeping (control requests, pid, checkpoint, result)

Revision ID: 0003
Revises: 0002

The kernel's job runner writes here (llmos.jobs.store.JobControl): the pending control request
the runner process polls, the runner's pid plus its start time (so a reused pid is never mistaken for
the runner), the last checkpoint a restart resumes from, and the job's result.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_control',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('requested', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('reason', sa.String(length=128), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('pid_started', sa.Float(), nullable=True),
    sa.Column('checkpoint', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ),
    sa.PrimaryKeyConstraint('job_id')
    )


def downgrade() -> None:
    op.drop_table('job_control')
