"""Password hashing off the request threads: argon2 runs on a small dedicated pool so logins queue, inference does not.

One argon2 verify costs ~0.2 s of CPU; run on the shared threadpool, 16 concurrent bad logins took both cores of a
2-core box and pushed v2 infer p50 from 2.2 ms to 51 ms. Here at most ``workers`` hashes run at once and at most
``max_waiting`` wait; beyond that a login gets 503 at once instead of a growing queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from auth_api.core import security
from mlstack.errors import MlstackError

T = TypeVar("T")


class HashingBusy(MlstackError):
    code = "login_busy"
    status = 503


class HashPool:
    """``await pool.verify(...)`` / ``await pool.hash(...)`` on ``workers`` threads of their own."""

    def __init__(self, workers: int = 1, max_waiting: int = 64):
        self.workers = workers
        self.max_waiting = max_waiting
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._lock = threading.Lock()
        self._running = 0
        self.peak_running = 0  # observed concurrency (tests and debugging)
        self._pending = 0

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """True when ``password`` matches (a dummy hash is verified when there is none: same cost either way)."""
        return await self._run(security.verify_password, password, password_hash)

    async def hash(self, password: str) -> str:
        return await self._run(security.hash_password, password)

    async def _run(self, fn: Callable[[str, str | None], T] | Callable[[str], T], *args: str | None) -> T:
        if self._pending >= self.workers + self.max_waiting:
            raise HashingBusy("too many logins in progress; retry in a moment", details={"retry_after_s": 1})
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)
        finally:
            self._pending -= 1

    def _call(self, fn: Callable[..., T], args: tuple[str | None, ...]) -> T:
        with self._lock:
            self._running += 1
            self.peak_running = max(self.peak_running, self._running)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._running -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
