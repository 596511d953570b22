"""Alembic environment: always runs on the connection handed over by auth_api.core.db.upgrade."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import auth_api.models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through auth_api.core.db.upgrade(engine)")
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
