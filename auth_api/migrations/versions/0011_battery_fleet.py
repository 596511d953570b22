"""Battery fleet: batteries, telemetry, analyses, twins, thermal images.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
