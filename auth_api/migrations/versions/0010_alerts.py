"""Alert rules and alerts: alert_rules, alerts, alert_cooldowns (the cool-down guard), alert_webhooks (delivery outbox).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'alert_rules',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('key', sa.String(length=100), nullable=True, unique=True),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('asset', sa.String(length=128), nullable=True),
        sa.Column('condition', sa.JSON(), nullable=False),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('channels', sa.JSON(), nullable=False),
        sa.Column('webhook_url', sa.String(length=2000), nullable=True),
        sa.Column('webhook_secret', sa.String(length=100), nullable=True),
        sa.Column('cooldown_s', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=8), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_alert_rules_owner_id', 'alert_rules', ['owner_id'])
    op.create_index('ix_alert_rules_model', 'alert_rules', ['model'])
    op.create_table(
        'alerts',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('rule_id', sa.Integer(), nullable=True),
        sa.Column('rule_name', sa.String(length=100), nullable=True),
        sa.Column('model', sa.String(length=64), nullable=True),
        sa.Column('version', sa.String(length=16), nullable=True),
        sa.Column('asset', sa.String(length=128), nullable=True),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('label', sa.String(length=128), nullable=True),
        sa.Column('probability', sa.Float(), nullable=True),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('source', sa.String(length=64), nullable=True),
        sa.Column('prediction_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    )
    for column in ('user_id', 'rule_id', 'model', 'asset', 'severity', 'created_at'):
        op.create_index(f'ix_alerts_{column}', 'alerts', [column])
    op.create_table(
        'alert_cooldowns',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('user_key', sa.Integer(), nullable=False),
        sa.Column('asset_key', sa.String(length=128), nullable=False),
        sa.Column('fired_at', sa.Float(), nullable=False),
        sa.UniqueConstraint('rule_id', 'user_key', 'asset_key'),
    )
    op.create_table(
        'alert_webhooks',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('alert_id', sa.Integer(), nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('signature', sa.String(length=80), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_status', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=300), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    for column in ('alert_id', 'next_attempt_at', 'sent_at'):
        op.create_index(f'ix_alert_webhooks_{column}', 'alert_webhooks', [column])


def downgrade() -> None:
    op.drop_table('alert_webhooks')
    op.drop_table('alert_cooldowns')
    op.drop_table('alerts')
    op.drop_table('alert_rules')
