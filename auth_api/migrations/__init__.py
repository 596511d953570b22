"""Alembic migrations of the gateway schema (run programmatically, see auth_api.core.db)."""
