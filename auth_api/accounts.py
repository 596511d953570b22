"""The live account behind a credential: role, active flag and token version, cached ~1 s per process.

Authorization reads these, never the claims frozen in a token. Every change to an account is announced on an
``Invalidations`` bus and drops the cached copy at once; the bus is in-process now, and a Redis pub/sub channel can
implement the same two calls so that other gateway processes drop theirs too (until then they catch up within the
TTL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import UpstreamUnavailable
from auth_api.models import User

logger = logging.getLogger(__name__)

Handler = Callable[[str, str], None]


class Invalidations(Protocol):
    """Announces that something a credential depends on changed: ``("user", "<id>")`` or ``("api_key", "<prefix>")``."""

    def publish(self, kind: str, ident: str) -> None: ...

    def subscribe(self, handler: Handler) -> None: ...


class LocalInvalidations:
    """In-process bus: handlers run synchronously in ``publish``, so the change is visible to the next request."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def publish(self, kind: str, ident: str) -> None:
        for handler in list(self._handlers):
            try:
                handler(kind, ident)
            except Exception:  # one broken subscriber must not hide the change from the others
                logger.exception("invalidation handler failed for %s %s", kind, ident)

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    username: str
    role: str
    is_active: bool
    token_version: int
    fetched: float  # time.monotonic() when read from the database


class AccountCache:
    """``await get(user_id)``: a dict lookup while fresh; one coalesced database read per user when stale."""

    def __init__(self, engine: Engine, ttl_s: float = 1.0, max_size: int = 100_000):
        self.engine = engine
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._entries: dict[int, Account] = {}
        self._loading: dict[int, asyncio.Future[Account]] = {}
        self._generation = 0  # bumped by every drop: a read that started before it is not cached

    async def get(self, user_id: int) -> Account:
        acct = self._entries.get(user_id)
        if acct is not None and time.monotonic() - acct.fetched < self.ttl_s:
            return acct
        task = self._loading.get(user_id)
        if task is None:
            # A task of its own: a caller that disconnects does not cancel the read the others wait for.
            task = self._loading[user_id] = asyncio.ensure_future(self._fetch(user_id, self._generation))
        return await asyncio.shield(task)

    async def _fetch(self, user_id: int, generation: int) -> Account:
        me = asyncio.current_task()
        try:
            acct = await run_in_threadpool(self._load, user_id)
        except Exception as exc:
            # Nobody can change an account while its database is down, so the last copy is still the truth.
            stale = self._entries.get(user_id)
            if stale is None:
                raise UpstreamUnavailable("the account database is unavailable", code="accounts_unavailable") from exc
            logger.warning("account %s: database read failed (%s); using the copy from %.0f s ago", user_id,
                           type(exc).__name__, time.monotonic() - stale.fetched)
            acct = replace(stale, fetched=time.monotonic())
        finally:
            if self._loading.get(user_id) is me:
                del self._loading[user_id]
        if generation == self._generation:
            if len(self._entries) >= self.max_size:
                self._entries.clear()  # rare; refilling costs one read per active user
            self._entries[user_id] = acct
        return acct

    def drop(self, user_id: int) -> None:
        """Forget the cached copy (called from any thread): the next request reads the database."""
        self._generation += 1
        self._entries.pop(user_id, None)
        self._loading.pop(user_id, None)

    def _load(self, user_id: int) -> Account:
        with Session(self.engine) as db:
            user = db.get(User, user_id)
            if user is None:  # deleted: cached as inactive so a flood of its tokens does not hit the database
                return Account(user_id, "", "", False, -1, time.monotonic())
            return Account(user_id, user.username, user.role, user.is_active, user.token_version, time.monotonic())
