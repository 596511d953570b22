"""Open WebSockets per user (``gateway_ws_max_connections_per_user``), counted for every gateway process together when
``MLSTACK_REDIS_URL`` is set; without Redis (and while it is unreachable) each process counts its own connections, so
N workers allow up to N x the limit.

In Redis, one hash per user holds a field per gateway process with that process's count, and each process keeps a
liveness key that its heartbeat refreshes. A process killed with -9 stops refreshing: its liveness key expires and the
next connection of the user drops its field, so its connections stop counting. Each heartbeat also rewrites this
process's fields with its own counts, which heals a close that could not reach Redis. Keys are hashed: the keyspace
holds no user ids or addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from typing import Any

logger = logging.getLogger(__name__)
EXTRAS_KEY = "ws_open"
PREFIX = "mlstack:ws:"
TTL_S = 15.0  # a killed process's connections stop counting after this
REDIS_RETRY_S = 1.0

# KEYS[1]: the user's hash; ARGV: this process, limit, ttl ms, liveness key prefix. 1 = admitted, 0 = at the limit.
ACQUIRE_LUA = """
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local proc = fields[i]
  if proc ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. proc) == 0 then
    redis.call('HDEL', KEYS[1], proc)
  else
    total = total + tonumber(fields[i + 1])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', ARGV[4] .. ARGV[1], '1', 'PX', ARGV[3])
return 1
"""
RELEASE_LUA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""


class OpenConnections:
    """``acquire(key, limit)`` before serving a WebSocket (False: refuse it), ``release(key)`` when it ends."""

    def __init__(self, redis_url: str | None, ttl_s: float = TTL_S):
        self.local: dict[str, int] = {}  # this process's open connections by principal key, whatever counted them
        self.ttl_ms = int(ttl_s * 1000)
        self.process = uuid.uuid4().hex[:16]
        self.client: Any = None
        self._resync: set[str] = set()  # keys whose Redis field may be off (a close that did not reach Redis)
        self._down_until = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        if redis_url:
            import redis.asyncio as aioredis  # only when configured

            self.client = aioredis.Redis.from_url(redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
            self._acquire = self.client.register_script(ACQUIRE_LUA)
            self._release = self.client.register_script(RELEASE_LUA)

    @property
    def backend(self) -> str:
        return "redis" if self.client is not None else "local"

    def _hkey(self, key: str) -> str:
        return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]

    def _shared(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            logger.warning("WebSocket connection limits: Redis unreachable (%s); this process counts its own until it is "
                           "back", type(exc).__name__)
        self._down_until = time.monotonic() + REDIS_RETRY_S

    async def acquire(self, key: str, limit: int) -> bool:
        mine = self.local.get(key, 0)
        if self.client is not None:
            self._start_heartbeat()
        if self._shared():
            self.local[key] = mine + 1  # counted before the round trip: a heartbeat meanwhile never undercounts
            try:
                ok = await self._acquire(keys=[self._hkey(key)],
                                         args=[self.process, limit, self.ttl_ms, f"{PREFIX}alive:"])
            except Exception as exc:
                self._failed(exc)
                self._resync.add(key)
            else:
                if int(ok) == 1:
                    return True
                self._drop(key)
                return False
            self._drop(key)
        if mine >= limit:
            return False
        self.local[key] = mine + 1
        return True

    async def release(self, key: str) -> None:
        self._drop(key)
        if self.client is None:
            return
        self._resync.add(key)  # until Redis has it: a failed or cancelled call leaves it to the heartbeat
        if not self._shared():
            return
        try:
            await self._release(keys=[self._hkey(key)], args=[self.process])
        except Exception as exc:
            self._failed(exc)
            return
        self._resync.discard(key)

    def _drop(self, key: str) -> None:
        n = self.local.get(key, 0) - 1
        if n > 0:
            self.local[key] = n
        else:
            self.local.pop(key, None)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat_forever(), name="ws-open-heartbeat")

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            await self.beat()

    async def beat(self) -> None:
        """Refresh this process's liveness and write its own count into each of its users' hashes."""
        if self.client is None or not (self.local or self._resync):
            return
        keys = set(self.local) | self._resync
        pipe = self.client.pipeline(transaction=False)
        pipe.set(f"{PREFIX}alive:{self.process}", "1", px=self.ttl_ms)
        for key in keys:
            hkey, n = self._hkey(key), self.local.get(key, 0)
            if n > 0:
                pipe.hset(hkey, self.process, n)
                pipe.pexpire(hkey, self.ttl_ms)
            else:
                pipe.hdel(hkey, self.process)
        try:
            await pipe.execute()
        except Exception as exc:
            self._failed(exc)
            self._resync |= keys
            return
        self._resync.clear()
        self._down_until = 0.0

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self.client is not None:
            try:
                await self.client.delete(f"{PREFIX}alive:{self.process}")  # the others stop counting us at once
            except Exception:
                logger.debug("could not retire this process's WebSocket counts", exc_info=True)
            try:
                await self.client.aclose()
            except Exception:
                logger.debug("closing the WebSocket counter's Redis client failed", exc_info=True)


def open_connections(extras: dict[str, Any], redis_url: str | None) -> OpenConnections:
    """The gateway's counter (made at its first WebSocket)."""
    counter = extras.get(EXTRAS_KEY)
    if not isinstance(counter, OpenConnections):
        counter = extras[EXTRAS_KEY] = OpenConnections(redis_url)
    return counter


async def close_connections(extras: dict[str, Any]) -> None:
    counter = extras.get(EXTRAS_KEY)
    if isinstance(counter, OpenConnections):
        await counter.close()
