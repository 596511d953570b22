"""Login throttling per account and per client IP: after N failures in a window, 429 with an exponentially growing wait.

The counters live behind ``ThrottleStore`` (in process here; a Redis store can implement the same three calls when
gateways scale out). Account keys are the normalised username whether or not the account exists, so the answers for
existing and unknown usernames are the same.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from auth_api.core.errors import RateLimited
from mlstack.settings import Settings


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
    """Failure counters by key. ``now`` is monotonic seconds; implementations must make ``fail`` atomic per key."""

    def blocked_for(self, key: str, now: float) -> float: ...

    def fail(self, key: str, now: float, policy: Policy) -> float: ...

    def reset(self, key: str) -> None: ...


class MemoryThrottleStore:
    """Per-process counters, LRU-bounded so a spray of random usernames cannot grow memory without limit."""

    def __init__(self, max_keys: int = 100_000):
        self.max_keys = max_keys
        # key -> (failures in the current run, time of the last failure, blocked until)
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def blocked_for(self, key: str, now: float) -> float:
        st = self._state.get(key)
        return max(0.0, st[2] - now) if st is not None else 0.0

    def fail(self, key: str, now: float, policy: Policy) -> float:
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

    def reset(self, key: str) -> None:
        self._state.pop(key, None)


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

        return cls(policy(s.gateway_login_max_failures), policy(s.gateway_login_ip_max_failures))

    def check(self, account_key: str, ip: str | None) -> None:
        """LoginThrottled when the account or the IP is blocked; the attempt counts and the wait grows."""
        now = time.monotonic()
        keys = self._keys(account_key, ip)
        blocked = [(k, p) for k, p in keys if self.store.blocked_for(k, now) > 0]
        if blocked:
            raise LoginThrottled(max(self.store.fail(k, now, p) for k, p in blocked))

    def failed(self, account_key: str, ip: str | None) -> None:
        now = time.monotonic()
        for k, p in self._keys(account_key, ip):
            self.store.fail(k, now, p)

    def succeeded(self, account_key: str) -> None:
        # Only the account: a client IP that also guessed at other accounts stays counted.
        self.store.reset(f"a:{account_key}")

    def _keys(self, account_key: str, ip: str | None) -> list[tuple[str, Policy]]:
        return [(f"a:{account_key}", self.account), (f"ip:{ip or 'unknown'}", self.ip)]
