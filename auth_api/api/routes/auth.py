"""Login (form and JSON), registration, token refresh with rotation, logout, and the caller's own account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from auth_api import crud
from auth_api.core.errors import Forbidden, NotFound, Unauthorized
from auth_api.deps import CurrentPrincipal, GatewayDep, LoginPrincipal, SessionDep
from auth_api.models import LoginRequest, Message, RefreshRequest, TokenPair, User, UserCreate, UserPublic, UserRegister
from auth_api.state import Gateway

router = APIRouter(prefix="/auth", tags=["auth"])


def _issue(gw: Gateway, db: SessionDep, user: User) -> TokenPair:
    assert user.id is not None
    refresh, jti, exp = gw.codec.refresh_token(user.id)
    crud.store_refresh_token(db, user.id, jti, datetime.fromtimestamp(exp, UTC))
    return TokenPair(access_token=gw.codec.access_token(user.id, user.username, user.role), refresh_token=refresh,
                     expires_in=gw.codec.access_ttl_s)


def _login(gw: Gateway, db: SessionDep, username: str, password: str) -> TokenPair:
    user = crud.authenticate(db, username, password)
    if user is None:
        gw.metrics.auth_failures.labels("bad_credentials").inc()
        raise Unauthorized("incorrect username or password", code="bad_credentials")
    return _issue(gw, db, user)


@router.post("/token", response_model=TokenPair)
def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], gw: GatewayDep, db: SessionDep) -> TokenPair:
    """OAuth2 password flow (what Swagger's Authorize button uses)."""
    return _login(gw, db, form.username, form.password)


@router.post("/login", response_model=TokenPair)
def login(body: LoginRequest, gw: GatewayDep, db: SessionDep) -> TokenPair:
    """Log in with JSON credentials."""
    return _login(gw, db, body.username, body.password)


@router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def register(body: UserRegister, gw: GatewayDep, db: SessionDep) -> User:
    """Create an account with role 'user' (when self-registration is enabled)."""
    if not gw.settings.gateway_allow_registration:
        raise Forbidden("self-registration is disabled", code="registration_disabled")
    return crud.create_user(db, UserCreate(username=body.username, password=body.password, email=body.email))


@router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshRequest, gw: GatewayDep, db: SessionDep) -> TokenPair:
    """Exchange a refresh token for a new pair; the old one is revoked (reusing it revokes the whole session)."""
    try:
        claims = gw.codec.decode(body.refresh_token, "refresh")
    except Unauthorized as exc:
        gw.metrics.auth_failures.labels(exc.code).inc()
        raise
    row = crud.consume_refresh_token(db, str(claims.get("jti")))
    if row is None:
        known = crud.find_refresh_token(db, str(claims.get("jti")))
        if known is not None and known.revoked_at is not None:
            # A revoked token presented again: someone kept a copy. End every session of this user.
            crud.revoke_user_refresh_tokens(db, known.user_id)
        gw.metrics.auth_failures.labels("refresh_token_reused").inc()
        raise Unauthorized("refresh token revoked or unknown", code="refresh_token_revoked")
    user = crud.get_user(db, row.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("account disabled", code="inactive_user")
    return _issue(gw, db, user)


@router.post("/logout", response_model=Message)
def logout(body: RefreshRequest, p: LoginPrincipal, gw: GatewayDep, db: SessionDep) -> Message:
    """Revoke a refresh token of the caller."""
    try:
        claims = gw.codec.decode(body.refresh_token, "refresh")
    except Unauthorized:
        claims = {}
    row = crud.find_refresh_token(db, str(claims.get("jti", "")))
    if row is None or row.user_id != p.user_id:
        raise NotFound("refresh token not found", code="refresh_token_not_found")
    crud.consume_refresh_token(db, row.jti)
    return Message(message="logged out")


@router.get("/me", response_model=UserPublic)
def me(p: CurrentPrincipal, db: SessionDep) -> User:
    """The caller's account."""
    user = crud.get_user(db, p.user_id) if p.user_id is not None else None
    if user is None or not user.is_active:
        raise Unauthorized("account not found or disabled", code="inactive_user")
    return user
