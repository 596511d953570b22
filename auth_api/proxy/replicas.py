"""Several Triton replicas behind one gateway: least-outstanding choice, health checks, and what metrics see of them.

A replica is taken out of the balance when a call to it is refused or reset before any byte of an answer, or when its
``/v2/health/ready`` check fails; the health loop puts it back once a check passes. When every replica is out, calls
still go to one of them (the least recently failed answer is as good a guess as any), so a stack whose only Triton
restarts serves again as soon as it is back, without waiting for the next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auth_api.proxy.rawhttp import RawPool

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Replica:
    """One Triton: its hot-path pool, its aiohttp session (metadata, registry, health) and its counters."""

    url: str
    raw: RawPool
    session: aiohttp.ClientSession
    outstanding: int = 0
    ready: bool = True
    down_reason: str = ""
    requests: int = 0
    failures: int = 0
    retried_away: int = 0  # calls that failed here unanswered and were sent to another replica
    changed_at: float = field(default_factory=time.monotonic)

    def mark(self, ready: bool, reason: str = "") -> None:
        if ready != self.ready:
            self.changed_at = time.monotonic()
            if ready:
                logger.info("Triton replica %s is back in the balance", self.url)
            else:
                logger.warning("Triton replica %s taken out of the balance: %s", self.url, reason)
        self.ready, self.down_reason = ready, ("" if ready else reason)


class ReplicaSet:
    """The replicas of one gateway process, in configuration order."""

    def __init__(self, replicas: list[Replica], health_interval_s: float, health_timeout_s: float):
        self.replicas = replicas
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    def __len__(self) -> int:
        return len(self.replicas)

    def pick(self, exclude: Replica | None = None) -> Replica | None:
        """The ready replica with the fewest calls in flight (ties: round robin); None when only ``exclude`` is left."""
        candidates = [r for r in self.replicas if r is not exclude]
        if not candidates:
            return None
        ready = [r for r in candidates if r.ready] or candidates
        n = len(ready)
        start = self._next % n
        self._next += 1
        best = ready[start]
        for i in range(1, n):
            r = ready[(start + i) % n]
            if r.outstanding < best.outstanding:
                best = r
        return best

    def start(self) -> None:
        if len(self.replicas) > 1 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._health_loop(), name="triton-replica-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self, replica: Replica) -> None:
        """One /v2/health/ready check; marks the replica in or out."""
        try:
            timeout = aiohttp.ClientTimeout(total=self.health_timeout_s)
            async with replica.session.get("/v2/health/ready", timeout=timeout) as resp:
                await resp.read()
                ok, reason = resp.status == 200, f"/v2/health/ready answered HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, reason = False, f"health check failed: {type(exc).__name__}"
        replica.mark(ok, reason)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.check(r) for r in self.replicas))
            await asyncio.sleep(self.health_interval_s)

    def describe(self) -> list[dict[str, object]]:
        """What /health/ready reports of each replica."""
        return [{"url": r.url, "ready": r.ready, "outstanding": r.outstanding, **({"reason": r.down_reason} if r.down_reason
                                                                                  else {})} for r in self.replicas]


class ReplicaCollector(Collector):
    """Per-upstream metrics read at scrape time: nothing on the hot path but two integer increments."""

    def __init__(self, replicas: Iterable[Replica]):
        self.replicas = list(replicas)

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("gateway_upstream_ready", "1 when the Triton replica is in the balance.", labels=["upstream"])
        outstanding = GaugeMetricFamily("gateway_upstream_outstanding", "Inference calls in flight to the replica.",
                                        labels=["upstream"])
        calls = CounterMetricFamily("gateway_upstream_calls", "Inference calls sent to the replica.", labels=["upstream"])
        failed = CounterMetricFamily("gateway_upstream_failures", "Calls the replica refused or dropped unanswered.",
                                     labels=["upstream"])
        retried = CounterMetricFamily("gateway_upstream_retried_away",
                                      "Unanswered calls sent once more to another replica.", labels=["upstream"])
        for r in self.replicas:
            ready.add_metric([r.url], 1.0 if r.ready else 0.0)
            outstanding.add_metric([r.url], r.outstanding)
            calls.add_metric([r.url], r.requests)
            failed.add_metric([r.url], r.failures)
            retried.add_metric([r.url], r.retried_away)
        yield from (ready, outstanding, calls, failed, retried)
