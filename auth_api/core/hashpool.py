"""Password hashing off the request threads: argon2 runs on a small dedicated pool so logins queue, inference does not.

One argon2 verify costs ~0.2 s of CPU; run on the shared threadpool, 16 concurrent bad logins took both cores of a
2-core box and pushed v2 infer p50 from 2.2 ms to 51 ms. Here at most ``workers`` hashes run at once and at most
``max_waiting`` wait; beyond that a login gets 503 at once instead of a growing queue.

The bound holds per host, not per process: with ``lock_dir`` (the gateway passes ``var_dir``) a pool thread holds an
exclusive ``flock`` on one of ``workers`` lock files there for each hash, so every gateway worker process (and every
gateway) sharing that ``var_dir`` shares the same ``workers`` slots. Each hash is single-threaded (argon2
parallelism=1, core/security.py), so ``workers`` is also the number of cores logins can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from auth_api.core import security
from mlstack.errors import MlstackError
from mlstack.private import private_dir, private_file

T = TypeVar("T")


class HashingBusy(MlstackError):
    code = "login_busy"
    status = 503


class HostSlots:
    """``workers`` hashing slots shared by every process using ``lock_dir``: one lock file per slot, held with
    ``flock(LOCK_EX)`` while a hash runs (released by the kernel if the process dies)."""

    def __init__(self, lock_dir: Path, workers: int):
        private_dir(lock_dir)
        self.paths = [private_file(lock_dir / f"password-hashing-{i}.lock") for i in range(workers)]
        self.waiting = 0  # threads of this process blocked on a slot another process (or thread) holds
        self._count = threading.Lock()
        self._mine = threading.local()
        self._threads = itertools.count()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        fds = [os.open(p, os.O_RDWR) for p in self.paths]
        try:
            held = next((fd for fd in fds if _try_lock(fd)), None)
            if held is None:  # every slot busy: wait for one (each thread its own, so all slots get waiters)
                if not hasattr(self._mine, "slot"):
                    self._mine.slot = next(self._threads) % len(fds)
                held = fds[self._mine.slot]
                with self._count:
                    self.waiting += 1
                try:
                    fcntl.flock(held, fcntl.LOCK_EX)
                finally:
                    with self._count:
                        self.waiting -= 1
            yield
        finally:
            for fd in fds:
                os.close(fd)  # closing the descriptor releases its lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class HashPool:
    """``await pool.verify(...)`` / ``await pool.hash(...)`` on ``workers`` threads of their own (and, with
    ``lock_dir``, within the host-wide ``workers`` slots)."""

    def __init__(self, workers: int = 1, max_waiting: int = 64, lock_dir: Path | None = None):
        self.workers = workers
        self.max_waiting = max_waiting
        self.slots = HostSlots(lock_dir, workers) if lock_dir is not None else None
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._lock = threading.Lock()
        self._running = 0
        self.peak_running = 0  # observed concurrency in this process (tests and debugging)
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

    @property
    def pending(self) -> int:
        """Hashes this process has queued or running."""
        return self._pending

    def _call(self, fn: Callable[..., T], args: tuple[str | None, ...]) -> T:
        with self.slots.hold() if self.slots is not None else contextlib.nullcontext():
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
