"""predictions.prediction_id (the UUIDv7 a client gets back) and journal_offsets (the history ingester's progress).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows written before ids existed keep none (they stay reachable by their integer id).
    op.add_column('predictions', sa.Column('prediction_id', sa.String(length=36), nullable=True))
    op.create_index('ix_predictions_prediction_id', 'predictions', ['prediction_id'], unique=True)
    op.create_table(
        'journal_offsets',
        sa.Column('segment', sa.String(length=200), primary_key=True),
        sa.Column('offset', sa.BigInteger(), nullable=False),
        sa.Column('records', sa.BigInteger(), nullable=False, server_default='0'),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('journal_offsets')
    op.drop_index('ix_predictions_prediction_id', table_name='predictions')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('prediction_id')
