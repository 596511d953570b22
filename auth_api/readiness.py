"""Readiness of each dependency (database, Triton, BentoML, Redis when configured), probed fast and cached.

Every probe has a short timeout of its own and results are reused for ``TTL_S``, so ``/health/ready`` answers within
about ``PROBE_TIMEOUT_S`` whatever hangs behind it (a frozen Triton accepts connections and never answers). At most
one probe per dependency is in flight: a database call stuck in a thread is awaited again, never started twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import UpstreamTimeout, UpstreamUnavailable
from auth_api.proxy.bento import EXTRAS_KEY as BENTO_KEY
from auth_api.proxy.cache import cache_of
from auth_api.state import Gateway
from auth_api.stored_inputs import EXTRAS_KEY as STORAGE_KEY
from mlstack.repository.sandbox import sanitize

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5
TTL_S = 0.5
EXTRAS_KEY = "readiness"
NOT_RESPONDING = "not responding"


@dataclass
class Probe:
    """What one dependency answered: ``up`` / ``down`` / ``not responding``, with a human detail."""

    state: str
    detail: str = ""
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dependency:
    name: str
    required: bool
    check: Callable[[], Awaitable[Probe]]
    # Said when the dependency is not up: what stops working (and, for an optional one, what keeps working).
    impact: str


def model_states(index: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Triton's repository index -> per model ``{"state", "versions", "reason"?}``.

    ``ready``: a version serves; ``loading``: one is being loaded and none serves yet; ``broken``: Triton failed to
    load it (its reason, paths removed); ``unloaded``: deliberately not served.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for m in index:
        by_name.setdefault(str(m.get("name", "")), []).append(m)
    out: dict[str, dict[str, Any]] = {}
    for name, entries in sorted(by_name.items()):
        states = {str(e.get("version", "")): str(e.get("state", "UNAVAILABLE")) for e in entries}
        failures = [str(e.get("reason", "")) for e in entries
                    if e.get("state") == "UNAVAILABLE" and e.get("reason") not in (None, "", "unloaded")]
        item: dict[str, Any] = {"versions": states}
        if "READY" in states.values():
            item["state"] = "ready"
        elif "LOADING" in states.values():
            item["state"] = "loading"
        elif failures:
            item["state"] = "broken"
        else:
            item["state"] = "unloaded"
        if failures:
            item["reason"] = sanitize(failures[0], 500)
        out[name] = item
    return out


class Readiness:
    """``await report()`` -> ``(ready, body)``; dependencies probed concurrently, each bounded, results cached."""

    def __init__(self, gw: Gateway, timeout_s: float = PROBE_TIMEOUT_S, ttl_s: float = TTL_S) -> None:
        self.gw, self.timeout_s, self.ttl_s = gw, timeout_s, ttl_s
        self.deps = [
            Dependency("database", True, self._database, "nothing that needs an account or history works"),
            Dependency("triton", True, self._triton, "no inference (v2, predict, tasks)"),
            Dependency("bento", False, self._bento,
                       "tasks (/api/v1/tasks/*) are unavailable; v2 inference and /api/v1/predict are unaffected"),
        ]
        if gw.extras.get(STORAGE_KEY) is not None:
            self.deps.append(Dependency("storage", False, self._storage,
                                        "uploaded inputs are not kept (history says not_kept); predictions still succeed"))
        cache = cache_of(gw.extras)
        if cache is not None and cache.backend == "redis":
            self.deps.append(Dependency("redis", False, self._redis,
                                        "the prediction cache is not shared (misses); rate limits fall back to each "
                                        "worker's share (limit/N); WebSocket connections per user are counted per worker; "
                                        "revocations reach the other workers within the cache "
                                        "TTL (1 s) instead of at once; requests still succeed"))
        self._inflight: dict[str, asyncio.Task[Probe]] = {}
        self._last: tuple[float, dict[str, Probe]] | None = None
        self._round: asyncio.Task[dict[str, Probe]] | None = None

    async def report(self) -> tuple[bool, dict[str, Any]]:
        probes = await self._probes()
        deps: dict[str, dict[str, Any]] = {}
        for dep in self.deps:
            pr = probes[dep.name]
            item: dict[str, Any] = {"state": pr.state, "required": dep.required, "latency_ms": round(pr.latency_ms, 1)}
            if pr.detail:
                item["detail"] = pr.detail
            if pr.state != "up":
                item["impact"] = dep.impact
            deps[dep.name] = item
        failing = [d.name for d in self.deps if d.required and probes[d.name].state != "up"]
        models = probes["triton"].extra.get("models") or {}
        body = {
            "status": "ready" if not failing else "not_ready",
            "failing": failing,
            "degraded": [d.name for d in self.deps if not d.required and probes[d.name].state != "up"],
            "checks": {name: item["state"] == "up" for name, item in deps.items()},
            "dependencies": deps,
            "models": models,
            "broken": sorted(n for n, m in models.items() if m["state"] == "broken"),
        }
        return not failing, body

    async def _probes(self) -> dict[str, Probe]:
        if self._last is not None and time.monotonic() - self._last[0] < self.ttl_s:
            return self._last[1]
        if self._round is None or self._round.done():  # concurrent callers share one round
            self._round = asyncio.ensure_future(self._probe_all())
        return await asyncio.shield(self._round)

    async def _probe_all(self) -> dict[str, Probe]:
        results = await asyncio.gather(*(self._bounded(d) for d in self.deps))
        out = {d.name: r for d, r in zip(self.deps, results, strict=True)}
        self._last = (time.monotonic(), out)
        return out

    async def _bounded(self, dep: Dependency) -> Probe:
        task = self._inflight.get(dep.name)
        if task is None or task.done():
            task = self._inflight[dep.name] = asyncio.ensure_future(dep.check())
        start = time.perf_counter()
        try:
            probe = await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except TimeoutError:
            probe = Probe(NOT_RESPONDING, f"no answer within {self.timeout_s:g} s")
        except Exception as exc:  # a probe must report, never fail the readiness answer
            probe = Probe("down", type(exc).__name__)
        probe.latency_ms = (time.perf_counter() - start) * 1000
        return probe

    # ---- probes ---------------------------------------------------------------------------
    async def _database(self) -> Probe:
        def select_one() -> None:
            with self.gw.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(select_one)
        except Exception as exc:
            return Probe("down", f"{type(exc).__name__}: the database does not answer queries")
        return Probe("up")

    async def _triton(self) -> Probe:
        # aiohttp's own timeout slightly above ours: the outer wait_for decides, this one frees the connection.
        t = self.timeout_s + 0.1
        try:
            up = await self.gw.upstream.request("GET", "/v2/health/ready", timeout=t)
            index = await self.gw.upstream.request("POST", "/v2/repository/index", content=b"{}", timeout=t)
        except UpstreamTimeout:
            return Probe(NOT_RESPONDING, "accepts connections but does not answer")
        except UpstreamUnavailable as exc:
            return Probe("down", f"unreachable ({exc.details.get('reason', 'connection failed')})")
        models = model_states(json.loads(index.content)) if index.status == 200 else None
        extra: dict[str, Any] = {"models": models}
        if len(self.gw.upstream.urls) > 1:  # several replicas: up while any is; each one's state in the details
            extra["replicas"] = self.gw.upstream.describe()
        if up.status != 200:
            return Probe("down", f"/v2/health/ready answered HTTP {up.status}", extra=extra)
        return Probe("up", extra=extra)

    async def _bento(self) -> Probe:
        client = self.gw.extras.get(BENTO_KEY)
        session = getattr(client, "session", None)
        if session is None:
            return Probe("down", "the gateway has no task-service client")
        try:
            async with session.get("/readyz", timeout=aiohttp.ClientTimeout(total=self.timeout_s + 0.1)) as resp:
                await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return Probe(NOT_RESPONDING, "accepts connections but does not answer")
        except aiohttp.ClientError as exc:
            return Probe("down", f"unreachable ({type(exc).__name__})")
        return Probe("up") if status == 200 else Probe("down", f"/readyz answered HTTP {status}")

    async def _storage(self) -> Probe:
        try:
            await run_in_threadpool(self.gw.extras[STORAGE_KEY].storage.check)
        except Exception as exc:
            return Probe("down", f"unreachable ({type(exc).__name__})")
        return Probe("up")

    async def _redis(self) -> Probe:
        cache = cache_of(self.gw.extras)
        client = getattr(getattr(cache, "store", None), "client", None)
        if client is None:
            return Probe("down", "no Redis client")
        try:
            await client.ping()
        except Exception as exc:
            return Probe("down", f"unreachable ({type(exc).__name__})")
        return Probe("up")


def readiness_of(gw: Gateway) -> Readiness:
    """The app's Readiness (made on first use; it keeps the cached probe results between requests)."""
    r = gw.extras.get(EXTRAS_KEY)
    if not isinstance(r, Readiness):
        r = gw.extras[EXTRAS_KEY] = Readiness(gw)
    return r
