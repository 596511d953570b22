"""Login throttling per account and per client IP: after N failures in a window, 429 with an exponentially growing wait.

The counters live behind ``ThrottleStore``: in process by default; in Redis when ``MLSTACK_REDIS_URL`` is set, so every
gateway process counts the same failures (one Lua script per counter, Redis's clock). Redis unreachable: each process
counts on its own until it is back, never a failed login. Account keys are the normalised username whether or not the
account exists, so the answers for existing and unknown usernames are the same.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from auth_api.core.errors import RateLimited
from mlstack.settings import Settings

logger = logging.getLogger(__name__)


class LoginThrottled(RateLimited):
    code = "login_throttled"

    def __init__(self, retry_after_s: float):
        super().__init__(retry_after_s)
        self.message = "too many failed login attempts; retry later"


@dataclass(frozen=True)
class Policy:
    max_failures: int
    window_s: float
    base_s: float
    cap_s: float

    def block_for(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 below the threshold); doubles with each failure."""
        if failures < self.max_failures:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - self.max_failures, 40))


class ThrottleStore(Protocol):
    """Failure counters by key; ``fail`` must be atomic per key (several requests, or processes, fail at once)."""

    backend: str

    async def blocked_for(self, key: str) -> float: ...

    async def fail(self, key: str, policy: Policy) -> float: ...

    async def reset(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryThrottleStore:
    """Per-process counters, LRU-bounded so a spray of random usernames cannot grow memory without limit."""

    backend = "local"

    def __init__(self, max_keys: int = 100_000):
        self.max_keys = max_keys
        # key -> (failures in the current run, time of the last failure, blocked until), monotonic seconds
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    async def blocked_for(self, key: str) -> float:
        st = self._state.get(key)
        return max(0.0, st[2] - time.monotonic()) if st is not None else 0.0

    async def fail(self, key: str, policy: Policy) -> float:
        now = time.monotonic()
        failures, last, until = self._state.get(key, (0, now, 0.0))
        if now - last > policy.window_s:  # a quiet window forgets the run
            failures, until = 0, 0.0
        failures += 1
        until = max(until, now + policy.block_for(failures))
        self._state[key] = (failures, now, until)
        self._state.move_to_end(key)
        if len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return max(0.0, until - now)

    async def reset(self, key: str) -> None:
        self._state.pop(key, None)

    async def close(self) -> None:
        """Nothing to release."""


# The same arithmetic as MemoryThrottleStore.fail, on Redis's clock so every process ages a run alike. KEYS[1]: the
# counter; ARGV: max_failures, window_s, base_s, cap_s. Returns the wait as a string (a Lua number reply is truncated).
FAIL_LUA = """
local maxf, window, base, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'n', 'last', 'until')
local n, last, untl = tonumber(s[1]) or 0, tonumber(s[2]) or now, tonumber(s[3]) or 0
if now - last > window then n, untl = 0, 0 end
n = n + 1
if n >= maxf then untl = math.max(untl, now + math.min(cap, base * 2 ^ math.min(n - maxf, 40))) end
redis.call('HSET', KEYS[1], 'n', tostring(n), 'last', tostring(now), 'until', tostring(untl))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(window, untl - now) + 1) * 1000))
return tostring(math.max(0, untl - now))
"""
BLOCKED_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = tonumber(redis.call('HGET', KEYS[1], 'until')) or 0
return tostring(math.max(0, untl - now))
"""
REDIS_RETRY_S = 1.0


class RedisThrottleStore:
    """The counters in Redis, shared by every gateway process; this process's own counters while Redis is unreachable.

    Keys are hashed: the Redis keyspace holds no usernames or addresses.
    """

    backend = "redis"

    def __init__(self, url: str, prefix: str = "mlstack:lt:"):
        import redis.asyncio as aioredis  # only when configured

        self.prefix = prefix
        self.local = MemoryThrottleStore()
        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self._fail = self.client.register_script(FAIL_LUA)
        self._blocked = self.client.register_script(BLOCKED_LUA)
        self._down_until = 0.0
        self.last_error: str | None = None

    def _key(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()[:32]

    async def _shared(self, call: Any) -> Any:
        """``call()``'s reply, or None when Redis is unreachable (then the caller uses the local counters)."""
        if self._down_until and time.monotonic() < self._down_until:
            return None
        try:
            reply = await call()
        except Exception as exc:
            if self.last_error is None:
                logger.warning("login throttling: Redis unreachable (%s); each process counts failures on its own until "
                               "it is back", type(exc).__name__)
            self.last_error, self._down_until = type(exc).__name__, time.monotonic() + REDIS_RETRY_S
            return None
        if self.last_error is not None:
            logger.info("login throttling: shared through Redis again")
            self.last_error, self._down_until = None, 0.0
        return reply

    async def blocked_for(self, key: str) -> float:
        reply = await self._shared(lambda: self._blocked(keys=[self._key(key)]))
        return await self.local.blocked_for(key) if reply is None else float(reply)

    async def fail(self, key: str, policy: Policy) -> float:
        args = [policy.max_failures, policy.window_s, policy.base_s, policy.cap_s]
        reply = await self._shared(lambda: self._fail(keys=[self._key(key)], args=args))
        return await self.local.fail(key, policy) if reply is None else float(reply)

    async def reset(self, key: str) -> None:
        await self.local.reset(key)
        await self._shared(lambda: self.client.delete(self._key(key)))

    async def close(self) -> None:
        await self.client.aclose()


class LoginThrottle:
    """``check`` before verifying a password, ``failed``/``succeeded`` after; every attempt while blocked counts."""

    def __init__(self, account: Policy, ip: Policy, store: ThrottleStore | None = None):
        self.account = account
        self.ip = ip
        self.store: ThrottleStore = store or MemoryThrottleStore()

    @classmethod
    def from_settings(cls, s: Settings) -> LoginThrottle:
        def policy(n: int) -> Policy:
            return Policy(n, s.gateway_login_failure_window_s, s.gateway_login_lockout_base_s, s.gateway_login_lockout_max_s)

        store = RedisThrottleStore(s.redis_url) if s.redis_url else None
        return cls(policy(s.gateway_login_max_failures), policy(s.gateway_login_ip_max_failures), store)

    async def check(self, account_key: str, ip: str | None) -> None:
        """LoginThrottled when the account or the IP is blocked; the attempt counts and the wait grows."""
        blocked = [(k, p) for k, p in self._keys(account_key, ip) if await self.store.blocked_for(k) > 0]
        if blocked:
            raise LoginThrottled(max([await self.store.fail(k, p) for k, p in blocked]))

    async def failed(self, account_key: str, ip: str | None) -> None:
        for k, p in self._keys(account_key, ip):
            await self.store.fail(k, p)

    async def succeeded(self, account_key: str) -> None:
        # Only the account: a client IP that also guessed at other accounts stays counted.
        await self.store.reset(f"a:{account_key}")

    async def close(self) -> None:
        await self.store.close()

    def _keys(self, account_key: str, ip: str | None) -> list[tuple[str, Policy]]:
        return [(f"a:{account_key}", self.account), (f"ip:{ip or 'unknown'}", self.ip)]
