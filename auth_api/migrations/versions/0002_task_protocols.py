"""Widen predictions.protocol to 32 characters for task-service calls ("task:simulate_battery").

SQLite does not enforce VARCHAR lengths, and rebuilding ``predictions`` there (batch mode) would trip the foreign key
from ``feedback`` on a database that has rows, so only other dialects are altered.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.alter_column('protocol', existing_type=sa.String(length=16), type_=sa.String(length=32),
                              existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.alter_column('protocol', existing_type=sa.String(length=32), type_=sa.String(length=16),
                              existing_nullable=False)
