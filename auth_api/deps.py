"""FastAPI dependencies as ``Annotated`` aliases: the gateway state, a DB session, the caller and role checks."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer, OAuth2PasswordBearer
from sqlmodel import Session

from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, RateLimited, Unauthorized
from auth_api.proxy.authorize import authorize
from auth_api.state import Gateway

# Declared for the OpenAPI schema (Swagger's Authorize button); the actual parsing is in Authenticator.
_oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
_bearer = HTTPBearer(auto_error=False, description="JWT access token or API key")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_db(gw: GatewayDep) -> Iterator[Session]:
    with Session(gw.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


async def _resolve(request: Request, gw: Gateway) -> Principal | None:
    p = await gw.auth.resolve(request.headers.get("authorization"), request.headers.get("x-api-key"))
    if p is not None:
        try:
            await gw.buckets.take(p.bucket)
        except RateLimited:
            gw.metrics.rate_limited.inc()
            raise
    return p


async def current_principal(request: Request, gw: GatewayDep, _t: Annotated[str | None, Depends(_oauth2)] = None,
                            _k: Annotated[str | None, Depends(_api_key)] = None) -> Principal:
    """The authenticated caller; 401 without credentials."""
    p = await _resolve(request, gw)
    if p is None:
        gw.metrics.auth_failures.labels("missing_credentials").inc()
        raise Unauthorized("authentication required", code="missing_credentials")
    return p


async def authorize_inference(request: Request, gw: Gateway) -> Principal:
    """The caller of an inference route; anonymous passes only when anonymous inference is enabled.

    Called directly (not as a dependency) by routes that authorize inline; the same rules as the v2 fast path.
    """
    client = request.client.host if request.client else None
    return await authorize(gw, request.headers.get("authorization"), request.headers.get("x-api-key"), client)


async def inference_principal(request: Request, gw: GatewayDep, _t: Annotated[str | None, Depends(_oauth2)] = None,
                              _k: Annotated[str | None, Depends(_api_key)] = None) -> Principal:
    """Like current_principal, but anonymous callers pass when anonymous inference is enabled."""
    return await authorize_inference(request, gw)


# For routes that authorize inline: the same security schemes in the OpenAPI document.
SECURITY_OPENAPI: dict[str, Any] = {"security": [{"OAuth2PasswordBearer": []}, {"APIKeyHeader": []}]}


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
InferencePrincipal = Annotated[Principal, Depends(inference_principal)]


def require_role(role: str, scope: str | None = None) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting callers with at least ``role`` (API keys also need ``scope``)."""

    async def check(p: CurrentPrincipal) -> Principal:
        if not p.at_least(role):
            raise Forbidden(f"requires role '{role}'", code="insufficient_role", details={"required": role, "role": p.role})
        if scope and p.kind == "api_key" and scope not in p.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope", code="missing_scope")
        return p

    return check


UserPrincipal = Annotated[Principal, Depends(require_role("user", "history"))]
EngineerPrincipal = Annotated[Principal, Depends(require_role("engineer", "models"))]
AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]


def require_user_session(p: CurrentPrincipal) -> Principal:
    """Routes that manage the account itself (API keys, logout) take a login token, not an API key."""
    if p.kind != "user":
        raise Forbidden("use a login token (not an API key) for this route", code="login_required")
    return p


LoginPrincipal = Annotated[Principal, Depends(require_user_session)]
