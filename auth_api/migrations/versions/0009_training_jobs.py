"""Training jobs and model ownership: training_jobs (state, progress, log, result), model_shares.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'training_jobs',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('progress', sa.Float(), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('dataset_id', sa.String(length=64), nullable=False),
        sa.Column('dataset_sha256', sa.String(length=64), nullable=True),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('version', sa.Integer(), nullable=True),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('error_code', sa.String(length=64), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('log', sa.Text(), nullable=False, server_default=''),
        sa.Column('runner', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_training_jobs_owner_id', 'training_jobs', ['owner_id'])
    op.create_index('ix_training_jobs_state', 'training_jobs', ['state'])
    op.create_table(
        'model_shares',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('shared_by', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('model_shares')
    op.drop_table('training_jobs')
