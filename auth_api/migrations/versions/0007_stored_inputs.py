"""Stored inputs: stored_objects (one row per owned blob in object storage) and prediction_inputs (what a prediction kept).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'stored_objects',
        sa.Column('key', sa.String(length=200), primary_key=True),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('content_type', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        # Set before every write of the blob: gc spares a recently touched object whose row reference is on its way.
        sa.Column('touched_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_stored_objects_owner_id', 'stored_objects', ['owner_id'])
    op.create_table(
        'prediction_inputs',
        sa.Column('prediction_id', sa.String(length=36), primary_key=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('object_key', sa.String(length=200), nullable=True),
        sa.Column('kept', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_prediction_inputs_object_key', 'prediction_inputs', ['object_key'])
    op.create_index('ix_prediction_inputs_user_id', 'prediction_inputs', ['user_id'])
    op.create_index('ix_prediction_inputs_created_at', 'prediction_inputs', ['created_at'])


def downgrade() -> None:
    op.drop_table('prediction_inputs')
    op.drop_table('stored_objects')
