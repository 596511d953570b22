"""Who may see and use a model: the served name carries its owner (``u<user id>-<name>``), so the check on the hot
path is a string parse plus a lookup in an in-memory set of shared names (refreshed in the background, updated at
once by this process's share/unshare) — no database round trip per request. Names without the prefix are public.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from auth_api.authn import Principal
from auth_api.jobs.tables import ModelShare
from mlstack.errors import ModelNotFound

logger = logging.getLogger(__name__)
OWNED_RE = re.compile(r"^u([1-9][0-9]{0,9})-")
REFRESH_S = 5.0
_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,64})\r\n')


def owner_of(name: str) -> int | None:
    """The user id a served name belongs to; None for public (built-in and engineer-published) models."""
    m = OWNED_RE.match(name)
    return int(m.group(1)) if m else None


def served_name(user_id: int, name: str) -> str:
    return f"u{user_id}-{name}"


class Shares:
    """Names of user models shared with everyone; read on every request, written by share/unshare and the refresher."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.names: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def load(self) -> None:
        with Session(self.engine) as db:
            self.names = frozenset(db.exec(select(ModelShare.name)).all())

    def set(self, name: str, shared: bool, by: int) -> None:
        with Session(self.engine) as db:
            row = db.get(ModelShare, name)
            if shared and row is None:
                db.add(ModelShare(name=name, shared_by=by))
            elif not shared and row is not None:
                db.delete(row)
            db.commit()
        self.names = self.names | {name} if shared else self.names - {name}

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:  # a database hiccup keeps the last known set
                logger.warning("could not refresh model shares: %s", exc)

    def start(self) -> None:
        """Refresh in the background (call ``load`` first)."""
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def may_use(p: Principal, name: str, shares: Shares | None) -> bool:
    owner = owner_of(name)
    if owner is None or p.user_id == owner or p.role == "admin":
        return True
    return shares is not None and name in shares.names


def may_manage(p: Principal, name: str) -> bool:
    """Delete / share: the owner or an admin (public models: as before, the registry's role rules)."""
    owner = owner_of(name)
    return p.role == "admin" or (owner is not None and p.user_id == owner)


def shares_of(extras: dict[str, Any]) -> Shares | None:
    got = extras.get("shares")
    return got if isinstance(got, Shares) else None


def ensure_visible(extras: dict[str, Any], p: Principal, name: str) -> None:
    """ModelNotFound (404, the same answer as a missing model) unless ``p`` may use ``name``."""
    if OWNED_RE.match(name) and not may_use(p, name, shares_of(extras)):
        raise ModelNotFound(name)


def task_model(body: bytes, content_type: str) -> str | None:
    """The ``model`` a task request names (JSON field or multipart form field), without a full parse when absent."""
    if b"model" not in body:
        return None
    if content_type.startswith("multipart/"):
        m = _MULTIPART_MODEL.search(body)
        return m.group(1).decode("utf-8", "replace").strip() if m else None
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        return None
    v = doc.get("model") if isinstance(doc, dict) else None
    return v if isinstance(v, str) else None
