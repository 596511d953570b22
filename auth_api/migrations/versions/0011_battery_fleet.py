"""Battery fleet: batteries, telemetry, analyses, twins, thermal images (the apps.battery tables).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_TS = sa.Float(precision=53)


def _battery_fk() -> sa.Column:
    return sa.Column('battery_id', sa.Integer(), sa.ForeignKey('battery_batteries.id', ondelete='CASCADE'), nullable=False)


def upgrade() -> None:
    op.create_table(
        'battery_batteries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('serial', sa.String(length=64), nullable=False),
        sa.Column('chemistry', sa.String(length=16), nullable=False),
        sa.Column('nominal_capacity_ah', sa.Float(), nullable=False),
        sa.Column('nominal_voltage_v', sa.Float(), nullable=False),
        sa.Column('installed_on', sa.Date(), nullable=True),
        sa.Column('metadata', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint('owner_id', 'serial', name='uq_battery_owner_serial'),
    )
    op.create_index('ix_battery_batteries_owner_id', 'battery_batteries', ['owner_id'])
    op.create_table(
        'battery_telemetry',
        _battery_fk(),
        sa.Column('ts', _TS, nullable=False),
        sa.Column('voltage', sa.Float(), nullable=False),
        sa.Column('current', sa.Float(), nullable=False),
        sa.Column('temperature', sa.Float(), nullable=False),
        sa.Column('soc', sa.Float(), nullable=True),
        sa.Column('ambient', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('battery_id', 'ts'),  # the (battery, time) index: range scans and ON CONFLICT
    )
    op.create_table(
        'battery_analyses',
        sa.Column('id', sa.Integer(), primary_key=True),
        _battery_fk(),
        sa.Column('owner_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('from_ts', _TS, nullable=True),
        sa.Column('to_ts', _TS, nullable=True),
        sa.Column('verdict', sa.String(length=16), nullable=True),
        sa.Column('summary', sa.JSON(), nullable=False),
        sa.Column('windows', sa.JSON(), nullable=False),
        sa.Column('explanation', sa.JSON(), nullable=True),
        sa.Column('error', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_battery_analyses_battery_id', 'battery_analyses', ['battery_id'])
    op.create_index('ix_battery_analyses_owner_id', 'battery_analyses', ['owner_id'])
    op.create_table(
        'battery_twins',
        sa.Column('battery_id', sa.Integer(), sa.ForeignKey('battery_batteries.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('fit', sa.JSON(), nullable=False),
        sa.Column('fitted_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'battery_twin_runs',
        sa.Column('id', sa.Integer(), primary_key=True),
        _battery_fk(),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('request', sa.JSON(), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_battery_twin_runs_battery_id', 'battery_twin_runs', ['battery_id'])
    op.create_table(
        'battery_thermal_images',
        sa.Column('id', sa.Integer(), primary_key=True),
        _battery_fk(),
        sa.Column('object_key', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=64), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('stats', sa.JSON(), nullable=False),
        sa.Column('hotspots', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_battery_thermal_images_battery_id', 'battery_thermal_images', ['battery_id'])


def downgrade() -> None:
    for table in ('battery_thermal_images', 'battery_twin_runs', 'battery_twins', 'battery_analyses', 'battery_telemetry',
                  'battery_batteries'):
        op.drop_table(table)
