"""The prediction cache of a model: its policy (on/off, TTL) and hit counts, changing the policy, clearing it."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from auth_api.core.errors import Forbidden, UpstreamUnavailable
from auth_api.deps import EngineerPrincipal, GatewayDep
from auth_api.jobs.ownership import ensure_visible, may_manage, owner_of
from auth_api.proxy.cache import CacheUnavailable, PredictionCache, cache_of, effective_policy
from auth_api.proxy.cache_admin import counts_everywhere, flush_everywhere, forget_everywhere
from auth_api.state import Gateway
from mlstack.errors import ModelNotFound
from mlstack.repository.caching import MAX_TTL_S, CachePolicy, read_policy, set_policy

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])
NamePath = Annotated[str, Path(max_length=64)]


class CachePolicyIn(BaseModel):
    """A model's cache policy, written into its config.pbtxt (``mlstack_cache``, ``mlstack_cache_ttl_s``)."""

    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool = Field(description="Cache this model's successful v2 answers.")
    ttl_s: float | None = Field(None, gt=0, le=MAX_TTL_S, allow_inf_nan=False,
                                description="Lifetime of a cached answer (s); null: the gateway's default "
                                            "(MLSTACK_GATEWAY_PREDICTION_CACHE_TTL_S).")


def _cache(gw: Gateway) -> PredictionCache:
    cache = cache_of(gw.extras)
    if cache is None:
        raise UpstreamUnavailable("the prediction cache is not running")
    return cache


async def _view(gw: Gateway, cache: PredictionCache, name: str, policy: CachePolicy) -> dict[str, Any]:
    on, ttl = effective_policy(gw.settings, policy.enabled, policy.ttl_s)
    return {"name": name, "enabled": on, "ttl_s": ttl,
            "configured": {"enabled": policy.enabled, "ttl_s": policy.ttl_s},  # null: the gateway's default applies
            "backend": cache.backend, **await counts_everywhere(cache, name)}


@router.get("/{name}/cache")
async def get_cache(name: NamePath, p: EngineerPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """The model's cache policy (what its config says, and what applies) and its hits and misses on every worker."""
    ensure_visible(gw.extras, p, name)
    policy = await run_in_threadpool(read_policy, gw.settings.repository, name)
    return await _view(gw, _cache(gw), name, policy)


@router.put("/{name}/cache")
async def put_cache(name: NamePath, body: CachePolicyIn, p: EngineerPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Turn the model's cache on or off and set its TTL; every gateway worker applies it at its next request.

    Written into the model's config.pbtxt: a polling Triton reloads the model (the same version, swapped in while the
    old copy serves). Answers already cached keep the TTL they were stored with; clear them to drop them now."""
    ensure_visible(gw.extras, p, name)
    if owner_of(name) is not None and not may_manage(p, name):
        raise Forbidden(f"'{name}' is in another user's namespace", code="namespace_reserved")
    cache = _cache(gw)
    policy, changed = await run_in_threadpool(set_policy, gw.settings.repository, name, body.enabled, body.ttl_s)
    await forget_everywhere(cache, name)
    logger.info("%s set the prediction cache of %s: enabled=%s ttl_s=%s", p.username, name, body.enabled, body.ttl_s)
    return {**await _view(gw, cache, name, policy), "changed": changed}


@router.post("/{name}/cache/clear")
async def clear_cache(name: NamePath, p: EngineerPrincipal, gw: GatewayDep) -> dict[str, Any]:
    """Drop every cached prediction of the model on every gateway worker (one shared store with Redis); the answer
    counts the answers dropped and the workers cleared."""
    ensure_visible(gw.extras, p, name)
    if not gw.catalog.versions(name):
        raise ModelNotFound(name)
    cache = _cache(gw)
    try:
        flushed = await flush_everywhere(cache, name)
    except CacheUnavailable as exc:
        raise UpstreamUnavailable("the prediction cache store cannot be reached; entries expire by their TTL",
                                  code="cache_unavailable", details={"backend": cache.backend}) from exc
    logger.info("%s cleared the prediction cache of %s (%d answers, %d of %d workers)", p.username, name,
                flushed.cleared, flushed.workers_cleared, flushed.workers)
    return {"name": name, **flushed.as_dict(), "backend": cache.backend}
