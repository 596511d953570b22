"""The prediction cache across a gateway's workers: a flush or a policy change reaches every worker, counts add up.

With the in-process backend each worker (``auth_api.serve`` runs ``gateway_workers`` of them) holds its own entries, so
a flush is sent to every sibling over its control socket (``auth_api.workers``) and the answer says how many workers
were cleared. With Redis the store is one for every worker: one flush empties it, the siblings only re-read the
model's policy and live version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from auth_api import workers
from auth_api.proxy.cache import CacheUnavailable, PredictionCache, cache_of

logger = logging.getLogger(__name__)
OP_FLUSH, OP_FORGET, OP_COUNTS = "cache.flush", "cache.forget", "cache.counts"


@dataclass(frozen=True)
class Flushed:
    cleared: int  # answers dropped, every worker's together
    workers: int  # processes of this gateway
    workers_cleared: int  # workers whose view of the cache no longer holds the model (all of them with Redis)

    def as_dict(self) -> dict[str, int]:
        return {"cleared": self.cleared, "workers": self.workers, "workers_cleared": self.workers_cleared}


async def flush_everywhere(cache: PredictionCache, name: str) -> Flushed:
    """Flush ``name`` here and in every sibling worker; CacheUnavailable when the shared store cannot be reached."""
    n = await cache.flush(name)
    info = workers.current()
    if info is None:
        return Flushed(n, 1, 1)
    answers = await workers.ask_siblings(info, {"op": OP_FLUSH, "model": name})
    if cache.backend != "memory":
        return Flushed(n, info.count, info.count)  # one shared store, emptied above
    missed = sorted(i for i, a in answers.items() if a is None)
    if missed:
        logger.warning("prediction cache of %s: workers %s did not answer the flush; their entries expire by TTL",
                       name, missed)
    answered = [a for a in answers.values() if a is not None]
    return Flushed(n + sum(int(a.get("cleared", 0)) for a in answered), info.count, 1 + len(answered))


async def forget_everywhere(cache: PredictionCache, name: str) -> None:
    """Every worker re-reads ``name``'s cache policy at its next request (after a policy change)."""
    cache.forget(name)
    if (info := workers.current()) is not None:
        await workers.ask_siblings(info, {"op": OP_FORGET, "model": name})


async def counts_everywhere(cache: PredictionCache, name: str) -> dict[str, Any]:
    """Hits and misses of ``name`` summed over the workers that answered."""
    total = cache.counts(name)
    info = workers.current()
    if info is None:
        return {**total, "workers": 1, "workers_counted": 1}
    answered = [a for a in (await workers.ask_siblings(info, {"op": OP_COUNTS, "model": name})).values() if a is not None]
    for a in answered:
        for k in ("hits", "misses"):
            total[k] += float(a.get(k, 0))
    return {**total, "workers": info.count, "workers_counted": 1 + len(answered)}


def handlers(extras: dict[str, Any]) -> dict[str, workers.ControlHandler]:
    """This worker's answers to its siblings' cache requests (``auth_api.workers.serve_control``)."""

    def model_of(request: dict[str, Any]) -> tuple[PredictionCache, str]:
        cache, name = cache_of(extras), request.get("model")
        if cache is None or not isinstance(name, str):
            raise ValueError("no cache or no model")
        return cache, name

    async def flush(request: dict[str, Any]) -> dict[str, Any]:
        cache, name = model_of(request)
        if cache.backend == "memory":
            return {"cleared": await cache.flush(name)}
        cache.forget(name)  # the asking worker emptied the shared store
        return {"cleared": 0}

    async def forget(request: dict[str, Any]) -> dict[str, Any]:
        cache, name = model_of(request)
        cache.forget(name)
        return {}

    async def counts(request: dict[str, Any]) -> dict[str, Any]:
        cache, name = model_of(request)
        return cache.counts(name)

    return {OP_FLUSH: flush, OP_FORGET: forget, OP_COUNTS: counts}


async def flush_quietly(extras: dict[str, Any], name: str) -> None:
    """Flush after a serving change, on every worker; a store that is down only gets a warning (entries expire by TTL)."""
    cache = cache_of(extras)
    if cache is None:
        return
    try:
        await flush_everywhere(cache, name)
    except CacheUnavailable as exc:
        logger.warning("prediction cache of %s not flushed: %s", name, exc)


def flush_from_thread(extras: dict[str, Any], name: str) -> None:
    """``flush_quietly`` from a sync route (the threadpool): the store belongs to the event loop."""
    from anyio import from_thread

    from_thread.run(flush_quietly, extras, name)
