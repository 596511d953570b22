"""Case-insensitive unique usernames and emails (NFKC + casefold keys), and users.token_version.

Columns are added with plain ALTER TABLE ADD COLUMN (no batch rebuild: on SQLite that would trip the foreign keys
pointing at ``users``). Existing rows get their keys here; when two older accounts collide (``admin`` and ``Admin``),
the lowest id keeps the key and the others get ``<key>~<id>``, which is also what they log in with until renamed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import logging
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

logger = logging.getLogger(__name__)


def _key(text: str) -> str:
    # A frozen copy of identities.lookup_key: a migration must not change when the app code does.
    return unicodedata.normalize("NFKC", text).strip().casefold()


def upgrade() -> None:
    op.add_column('users', sa.Column('username_key', sa.String(length=64), nullable=True))
    op.add_column('users', sa.Column('email_key', sa.String(length=254), nullable=True))
    op.add_column('users', sa.Column('token_version', sa.Integer(), nullable=False, server_default='0'))
    bind = op.get_bind()
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('username', sa.String),
                     sa.column('email', sa.String), sa.column('username_key', sa.String), sa.column('email_key', sa.String))
    seen_names: set[str] = set()
    seen_emails: set[str] = set()
    for uid, username, email in bind.execute(sa.select(users.c.id, users.c.username, users.c.email).order_by(users.c.id)):
        ukey = _key(username)[:64]
        if ukey in seen_names:
            suffix = f"~{uid}"
            ukey = ukey[:64 - len(suffix)] + suffix
            logger.warning("user %s: username '%s' collides case-insensitively with an older account; it logs in as '%s'",
                           uid, username, ukey)
        seen_names.add(ukey)
        ekey = _key(email) if email else None
        if ekey is not None and ekey in seen_emails:
            logger.warning("user %s: email collides case-insensitively with an older account; left without a unique key", uid)
            ekey = None
        if ekey is not None:
            seen_emails.add(ekey)
        bind.execute(users.update().where(users.c.id == uid).values(username_key=ukey, email_key=ekey))
    op.create_index('ix_users_username_key', 'users', ['username_key'], unique=True)
    op.create_index('ix_users_email_key', 'users', ['email_key'], unique=True)
    if bind.dialect.name != "sqlite":  # SQLite cannot add NOT NULL to an existing column without a rebuild
        op.alter_column('users', 'username_key', existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    op.drop_index('ix_users_email_key', table_name='users')
    op.drop_index('ix_users_username_key', table_name='users')
    op.drop_column('users', 'token_version')
    op.drop_column('users', 'email_key')
    op.drop_column('users', 'username_key')
