"""The live account behind a credential: role, active flag and token version, cached ~1 s per process.

Authorization reads these, never the claims frozen in a token. Every change to an account is announced on an
``Invalidations`` bus and drops the cached copy at once. With ``MLSTACK_REDIS_URL`` the bus is a Redis pub/sub channel,
so every gateway worker drops its copy within milliseconds; without it the bus is in-process and the other workers
catch up within the cache TTLs (accounts ``gateway_account_cache_ttl_s``, 1 s; API keys 5 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

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


class RedisInvalidations:
    """``LocalInvalidations`` plus a Redis channel: what one process publishes, every other process's handlers hear.

    ``publish`` may be called from any thread; the Redis send runs on the loop ``start`` ran on. A message sent while
    this process's subscription was down is lost: the cache TTLs bound how long that process trusts its stale copy.
    """

    CHANNEL = "mlstack:invalidations"

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis  # only when configured

        self.local = LocalInvalidations()
        self.origin = uuid.uuid4().hex
        self.client: Any = aioredis.Redis.from_url(url, socket_connect_timeout=0.25)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def publish(self, kind: str, ident: str) -> None:
        self.local.publish(kind, ident)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        message = f"{self.origin} {kind} {ident}"
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._send_soon(message)
        else:
            loop.call_soon_threadsafe(self._send_soon, message)

    def subscribe(self, handler: Handler) -> None:
        self.local.subscribe(handler)

    def _send_soon(self, message: str) -> None:
        task = asyncio.ensure_future(self._send(message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, message: str) -> None:
        try:
            await self.client.publish(self.CHANNEL, message)
        except Exception as exc:
            logger.warning("invalidation not sent to the other gateway processes (%s); they catch up within the cache TTL",
                           type(exc).__name__)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub()
                await pubsub.subscribe(self.CHANNEL)
                self.subscribed.set()
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    origin, kind, ident = msg["data"].decode().split(" ", 2)
                    if origin != self.origin:
                        self.local.publish(kind, ident)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                logger.warning("invalidation channel down (%s); retrying in 1 s", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        await self.client.aclose()


def open_invalidations(redis_url: str | None) -> Invalidations:
    return RedisInvalidations(redis_url) if redis_url else LocalInvalidations()


async def start_invalidations(bus: Invalidations) -> None:
    if isinstance(bus, RedisInvalidations):
        await bus.start()


async def stop_invalidations(bus: Invalidations) -> None:
    if isinstance(bus, RedisInvalidations):
        await bus.stop()


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
