"""Datasets (uploaded tables and image ZIPs) and the tester role.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The tester role needs no schema change: users.role is a VARCHAR(16) checked by the API (auth_api/roles.py).
    op.create_table(
        'datasets',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('format', sa.String(length=8), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('sheet', sa.String(length=100), nullable=True),
        sa.Column('object_key', sa.String(length=200), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('profile', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_datasets_owner_id', 'datasets', ['owner_id'])
    op.create_index('ix_datasets_object_key', 'datasets', ['object_key'])


def downgrade() -> None:
    op.execute("UPDATE users SET role = 'user' WHERE role = 'tester'")
    op.drop_table('datasets')
