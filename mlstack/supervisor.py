"""One supervisor for every tier: starts replicas in order, restarts one that dies (backoff, restart budget), counts
restarts in ``mlstack_tier_restarts_total{tier}`` and gives up — stopping everything — only when a tier keeps failing.

A replica is anything with ``start(timeout)``, ``stop()`` and ``died() -> str | None`` (``mlstack.process.ManagedProcess``
and the launchers built on it); several replicas of a tier are several entries with the same tier name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

logger = logging.getLogger(__name__)
Report = Callable[[str], None]


class Supervised(Protocol):
    def start(self, timeout: float | None = None) -> None: ...

    def stop(self) -> None: ...

    def died(self) -> str | None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """Wait ``backoff_s`` · 2^(n-1) (at most ``backoff_max_s``) before the n-th restart in a row; more than ``budget``
    restarts of one replica within ``window_s`` means the tier keeps failing. A replica up for ``stable_s`` starts over
    at the first backoff step."""

    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    budget: int = 5
    window_s: float = 600.0
    stable_s: float = 60.0

    def delay(self, consecutive: int) -> float:
        return float(min(self.backoff_s * 2 ** max(consecutive - 1, 0), self.backoff_max_s))


@dataclass
class Replica:
    tier: str
    name: str  # "gateway", or "gateway-2" for a second replica
    process: Supervised
    url: str
    on_ready: Callable[[Report], None] | None = None
    restarts: deque[float] = field(default_factory=deque)
    consecutive: int = 0
    up_since: float = 0.0
    due: float | None = None  # restart time while waiting out the backoff
    thread: threading.Thread | None = None
    start_error: str | None = None
    running: bool = False  # started by the supervisor and not stopped by it
    healthy: bool = False  # ready and not known dead


class SupervisorMetrics:
    """Restart counts and live replicas per tier, on a registry of their own, optionally served on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.restarts = Counter("mlstack_tier_restarts", "Restarts of a tier's processes by the supervisor", ["tier"],
                                registry=self.registry)
        self.up = Gauge("mlstack_tier_replicas_up", "Replicas of a tier currently running", ["tier"], registry=self.registry)
        self._server: Any = None

    def serve(self, host: str, port: int) -> bool:
        """Serve ``/metrics`` on host:port; False (and a warning) when the port is taken: metrics are not worth a stack."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            logger.warning("supervisor metrics not served on %s:%d: %s", host, port, exc)
            return False
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Supervisor:
    """Replicas started in the order added, stopped in ``stop_order`` (tier names; default: reverse start order)."""

    def __init__(self, policy: RestartPolicy | None = None, metrics: SupervisorMetrics | None = None,
                 start_timeout: Callable[[str], float | None] = lambda tier: None) -> None:
        self.policy = policy or RestartPolicy()
        self.metrics = metrics or SupervisorMetrics()
        self.start_timeout = start_timeout
        self.replicas: list[Replica] = []
        self.stop_order: list[str] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def add(self, tier: str, process: Supervised, url: str, on_ready: Callable[[Report], None] | None = None) -> Replica:
        n = sum(r.tier == tier for r in self.replicas)
        replica = Replica(tier, tier if n == 0 else f"{tier}-{n + 1}", process, url, on_ready)
        self.replicas.append(replica)
        self.metrics.up.labels(tier).set(0)
        self.metrics.restarts.labels(tier)  # the series exists (at 0) before the first restart
        return replica

    def start(self, report: Report) -> None:
        """Start every replica in order, waiting for each to be ready; raises on the first failure (``stop`` cleans up)."""
        for r in self.replicas:
            report(f"starting {r.name} ...")
            r.running = True  # from here on `stop` stops it, even half-started
            r.process.start(self.start_timeout(r.tier))
            self._mark_up(r)
            report(f"{r.name} ready at {r.url}")
            if r.on_ready is not None:
                r.on_ready(report)

    def _mark_up(self, r: Replica) -> None:
        r.up_since, r.due, r.start_error, r.healthy = time.monotonic(), None, None, True
        self._count_up(r.tier)

    def _count_up(self, tier: str) -> None:
        self.metrics.up.labels(tier).set(sum(x.tier == tier and x.healthy for x in self.replicas))

    def check(self, report: Report) -> str | None:
        """One supervision pass; the reason to stop the stack when a tier exceeded its restart budget, else None."""
        now = time.monotonic()
        for r in self.replicas:
            if not r.running or self._stopping.is_set():
                continue
            if r.thread is not None:
                if r.thread.is_alive():
                    continue
                r.thread = None
                if r.start_error is None:
                    self._mark_up(r)
                    report(f"{r.name} restarted and ready at {r.url}")
                    continue
                failure = f"restart failed: {r.start_error}"
            elif r.due is not None:
                if now >= r.due:
                    self._restart(r)
                continue
            else:
                reason = r.process.died()
                if reason is None:
                    if r.consecutive and now - r.up_since >= self.policy.stable_s:
                        r.consecutive = 0
                    continue
                failure = f"died ({reason})"
                r.process.stop()  # reap it and whatever it left in its process group
            giving_up = self._failed(r, failure, now, report)
            if giving_up:
                return giving_up
        return None

    def _failed(self, r: Replica, failure: str, now: float, report: Report) -> str | None:
        r.healthy = False
        self._count_up(r.tier)
        while r.restarts and now - r.restarts[0] > self.policy.window_s:
            r.restarts.popleft()
        if len(r.restarts) >= self.policy.budget:
            msg = (f"{r.name} keeps failing ({len(r.restarts)} restarts in {self.policy.window_s:g} s); "
                   f"stopping the stack. Last failure: {failure}")
            logger.info(msg)  # the caller reports it
            return msg
        r.consecutive += 1
        delay = self.policy.delay(r.consecutive)
        r.due = now + delay
        report(f"warning: {r.name} {failure}; restarting in {delay:g} s")
        logger.info("%s %s; restart %d in %.3g s", r.name, failure, len(r.restarts) + 1, delay)
        return None

    def _restart(self, r: Replica) -> None:
        r.due = None
        r.restarts.append(time.monotonic())
        self.metrics.restarts.labels(r.tier).inc()
        r.start_error = None

        def run() -> None:
            try:
                r.process.start(self.start_timeout(r.tier))
            except Exception as exc:  # any start failure is a failed restart, judged by the budget
                r.start_error = str(getattr(exc, "message", exc))

        r.thread = threading.Thread(target=run, name=f"restart-{r.name}", daemon=True)
        r.thread.start()

    def run(self, stop: threading.Event, report: Report, interval_s: float = 0.5) -> int:
        """Supervise until ``stop`` is set (0) or a tier keeps failing (1, after reporting why)."""
        while not stop.wait(interval_s):
            reason = self.check(report)
            if reason is not None:
                report(f"error: {reason}")
                return 1
        return 0

    def stop(self, report: Report) -> None:
        """Stop every replica (idempotent); restarts in flight are cancelled first."""
        self._stopping.set()
        with self._lock:
            started = [r for r in self.replicas if r.running]
            order = self.stop_order or list(dict.fromkeys(r.tier for r in reversed(started)))
            rank = {tier: i for i, tier in enumerate(order)}
            for r in sorted(reversed(started), key=lambda x: rank.get(x.tier, -1)):
                report(f"stopping {r.name}")
                r.running = r.healthy = False
                try:
                    while r.thread is not None and r.thread.is_alive():  # a restart in flight: kill it until it gives up
                        r.process.stop()
                        r.thread.join(0.2)
                    r.process.stop()
                except Exception:  # one failing stop must not leave the others running
                    logger.exception("stopping %s failed", r.name)
                self._count_up(r.tier)
        self.metrics.close()
