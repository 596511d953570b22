"""Who may call an inference route: credentials → Principal, rate limit, anonymous policy, API-key scope.

Shared by the ASGI fast path (raw header values) and FastAPI's ``authorize_inference`` dependency.
"""

from __future__ import annotations

from auth_api.authn import ANONYMOUS, Principal
from auth_api.core.errors import Forbidden, RateLimited, Unauthorized
from auth_api.state import Gateway


async def authorize(gw: Gateway, authorization: str | None, x_api_key: str | None, client_host: str | None) -> Principal:
    """The caller; anonymous passes only when anonymous inference is enabled (rate-limited per client IP)."""
    p = await gw.auth.resolve(authorization, x_api_key)
    if p is None:
        if not gw.settings.gateway_allow_anonymous:
            gw.metrics.auth_failures.labels("missing_credentials").inc()
            raise Unauthorized("authentication required", code="missing_credentials")
        await take(gw, f"ip:{client_host or 'unknown'}")
        return ANONYMOUS
    await take(gw, p.bucket)
    if p.kind == "api_key" and "predict" not in p.scopes:
        raise Forbidden("this API key lacks the 'predict' scope", code="missing_scope")
    # Usage dashboard: requests per caller by numeric id (no names in /metrics; bounded in count_principal).
    gw.metrics.count_principal(p.kind, p.user_id)
    return p


async def take(gw: Gateway, bucket: str) -> None:
    """One token from ``bucket``'s rate limit; counts refusals."""
    try:
        await gw.buckets.take(bucket)
    except RateLimited:
        gw.metrics.rate_limited.inc()
        raise
