"""Database engine (SQLite under var_dir by default, PostgreSQL via MLSTACK_DATABASE_URL) and Alembic upgrade."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, make_url
from sqlmodel import create_engine

from mlstack.private import private_dir, private_file
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def database_url(settings: Settings) -> str:
    """The configured URL, or a SQLite file under ``var_dir``."""
    if settings.database_url:
        return settings.database_url
    var = private_dir(settings.var_dir)
    return f"sqlite:///{(var / 'gateway.db').resolve()}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with sane pooling; SQLite gets WAL and a busy timeout so the writer and readers coexist."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, **kwargs)


def _private_sqlite_file(url: str) -> None:
    """The database holds password hashes: create it 0600 before SQLite does (its -wal/-shm files copy the mode)."""
    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        private_file(path)
        for extra in (Path(path + "-wal"), Path(path + "-shm")):
            if extra.exists():
                private_file(extra)


def alembic_config() -> Config:
    """Programmatic Alembic config: no alembic.ini, the scripts live in ``auth_api/migrations``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine`` (idempotent; run on every start)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    logger.info("database schema at head (%s)", engine.url.render_as_string(hide_password=True))
