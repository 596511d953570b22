"""First start: create the admin account (password from MLSTACK_ADMIN_PASSWORD or random, shown once)."""

from __future__ import annotations

import logging
import secrets
import sys

from sqlalchemy import Engine
from sqlmodel import Session, select

from auth_api import crud, passwords
from auth_api.core.errors import Conflict
from auth_api.models import User, UserCreate
from mlstack.settings import Settings

logger = logging.getLogger(__name__)


def ensure_admin(engine: Engine, settings: Settings) -> str | None:
    """Create the admin if no admin exists; returns the generated password (None if none was generated)."""
    with Session(engine) as db:
        if db.exec(select(User).where(User.role == "admin")).first() is not None:
            return None
        given = settings.admin_password.get_secret_value() if settings.admin_password is not None else ""
        password = given or secrets.token_urlsafe(18)
        why = passwords.problem(password, settings.admin_username)
        if why is not None:
            raise RuntimeError(f"MLSTACK_ADMIN_PASSWORD is refused by the password policy: {why}")
        try:
            crud.create_user(db, UserCreate(username=settings.admin_username, password=password, role="admin"))
        except Conflict:  # another gateway process created it at the same moment
            return None
    if given:
        logger.info("created admin user '%s' with the password from MLSTACK_ADMIN_PASSWORD", settings.admin_username)
        return None
    # Shown once, on stderr only (not the log file), so it is not kept anywhere.
    sys.stderr.write(f"mlstack gateway: created admin user '{settings.admin_username}' with password: {password}\n"
                     "  (shown once; set MLSTACK_ADMIN_PASSWORD to choose it)\n")
    logger.warning("created admin user '%s' with a generated password (printed once on stderr)", settings.admin_username)
    return password
