"""Login (form and JSON), registration with a mailed verification code, token refresh with rotation, logout, password
change and reset by mailed code, token introspection, the caller's account.

Logins are throttled per account and per client IP (core/throttle.py) and verify passwords on the dedicated hashing
pool (core/hashpool.py), so a burst of logins queues instead of starving inference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlmodel import Session

from auth_api import codes, crud, identities, passwords
from auth_api.api.strict_query import no_unknown_query
from auth_api.core import security
from auth_api.core.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from auth_api.core.hashpool import HashingBusy
from auth_api.core.throttle import LoginThrottled
from auth_api.deps import CurrentPrincipal, GatewayDep, LoginPrincipal, SessionDep
from auth_api.models import (
    Accepted,
    LoginRequest,
    Message,
    PasswordChange,
    PasswordForgot,
    PasswordReset,
    RefreshRequest,
    ResendCode,
    TokenInfo,
    TokenPair,
    User,
    UserCreate,
    UserPublic,
    UserRegister,
    UserUpdate,
    VerifyEmail,
    utcnow,
)
from auth_api.state import Gateway

router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(no_unknown_query)])


def _issue(gw: Gateway, db: Session, user: User) -> TokenPair:
    assert user.id is not None
    refresh, jti, exp = gw.codec.refresh_token(user.id, user.token_version)
    crud.store_refresh_token(db, user.id, jti, datetime.fromtimestamp(exp, UTC))
    return TokenPair(access_token=gw.codec.access_token(user.id, user.username, user.role, user.token_version),
                     refresh_token=refresh, expires_in=gw.codec.access_ttl_s)


async def _verified(request: Request, gw: Gateway, username: str, password: str) -> User:
    """The active user with these credentials; throttled, and the same answer and work for unknown usernames."""
    key = identities.login_key(username)
    ip = request.client.host if request.client else None
    try:
        await gw.throttle.check(key, ip)
    except LoginThrottled:
        gw.metrics.auth_failures.labels("login_throttled").inc()
        raise
    user = await gw.run_db(crud.get_user_by_login, username)
    ok = await gw.hashing.verify(password, user.password_hash if user is not None else None)
    if not ok or user is None or not user.is_active:
        await gw.throttle.failed(key, ip)
        gw.metrics.auth_failures.labels("bad_credentials").inc()
        raise Unauthorized("incorrect username or password", code="bad_credentials")
    await gw.throttle.succeeded(key)
    return user


async def _upgrade_hash(gw: Gateway, user: User, password: str) -> None:
    """A hash stored with older argon2 parameters (e.g. parallelism=4) is replaced at the first login that proves the
    password; skipped (retried at the next login) while the hashing pool is full."""
    old = user.password_hash
    if user.id is None or not old or not security.needs_rehash(old):
        return
    try:
        new = await gw.hashing.hash(password)
    except HashingBusy:
        return
    if await gw.run_db(crud.upgrade_password_hash, user.id, old, new):
        user.password_hash = new


async def _login(request: Request, gw: Gateway, username: str, password: str) -> TokenPair:
    user = await _verified(request, gw, username, password)
    await _upgrade_hash(gw, user, password)
    if gw.settings.require_email_verification and not user.email_verified:
        # Only after the password matched: this answer says nothing about accounts the caller cannot log into.
        raise Forbidden("the account's email is not verified yet", code="email_not_verified",
                        details={"hint": "enter the code mailed at registration with POST /api/v1/auth/verify-email; "
                                         "POST /api/v1/auth/resend-code mails a new one"})
    return await gw.run_db(lambda db: _issue(gw, db, user))


def _wake_mailer(gw: Gateway) -> None:
    sender = gw.extras.get("mailer")
    if sender is not None:
        sender.wake()


@router.post("/token", response_model=TokenPair)
async def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], gw: GatewayDep) -> TokenPair:
    """OAuth2 password flow (what Swagger's Authorize button uses); ``username`` may be the account's email."""
    return await _login(request, gw, form.username, form.password)


@router.post("/login", response_model=TokenPair)
async def login(request: Request, body: LoginRequest, gw: GatewayDep) -> TokenPair:
    """Log in with the username or the email (either letter case) and the password; 429 with Retry-After after repeated
    failures."""
    return await _login(request, gw, body.username, body.password)


@router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
async def register(body: UserRegister, gw: GatewayDep) -> User:
    """Create an account with role 'user' (when self-registration is enabled); 409 when the name or email is taken
    in any letter case."""
    if not gw.settings.gateway_allow_registration:
        raise Forbidden("self-registration is disabled", code="registration_disabled")
    data = UserCreate(username=body.username, password=body.password, email=body.email)
    password_hash = await gw.hashing.hash(body.password)
    user = await gw.run_db(crud.create_user, data, password_hash, code_key=gw.codec.code_key,
                           require_email=gw.settings.require_email_verification)
    _wake_mailer(gw)
    return user


@router.post("/verify-email", response_model=Message)
async def verify_email(body: VerifyEmail, gw: GatewayDep) -> Message:
    """Confirm the account's email with the 6-digit code mailed to it (15 minutes, 5 tries); 400 says why a code is
    refused: ``code_invalid``, ``code_expired``, ``code_used``, ``code_exhausted``."""

    def verify(db: Session) -> None:
        user = crud.get_user_by_login(db, body.login)
        user = user if user is not None and user.deleted_at is None else None
        row = codes.consume(db, gw.codec.code_key, user.id if user else None, "verify", body.code)
        assert user is not None and user.id is not None
        if row.email_key != user.email_key:  # mailed to an address the account no longer has
            db.rollback()
            raise codes.CodeRejected("the code was sent to a previous email of this account; request a new one",
                                     code="code_invalid")
        crud.mark_email_verified(db, user.id)

    await gw.run_db(verify)
    return Message(message="email verified; you can log in now")


def _mail_code(gw: Gateway, login: str, purpose: str) -> None:
    """Mail a fresh code when the account exists and may get one (runs after the answer is sent: same answer and
    timing whether or not it exists). At most one code per minute and purpose."""

    def send(db: Session) -> bool:
        user = crud.get_user_by_login(db, login)
        if user is None or user.id is None or not user.email or not user.is_active or user.deleted_at is not None:
            return False
        if purpose == "verify" and user.email_verified:
            return False
        crud.lock_user(db, user.id)
        if codes.recently_sent(db, user.id, purpose, utcnow()):
            return False
        crud.send_code(db, gw.codec.code_key, user, purpose)
        db.commit()
        return True

    with Session(gw.engine) as db:
        if send(db):
            _wake_mailer(gw)


_RESEND_ANSWER = "if the account exists and is unverified, a new code is on its way (at most one a minute)"
_FORGOT_ANSWER = "if an account has this email, a reset code is on its way (at most one a minute)"


@router.post("/resend-code", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED)
def resend_code(body: ResendCode, gw: GatewayDep, background: BackgroundTasks) -> Accepted:
    """Mail a new verification code (the previous one dies); always 202 with the same answer."""
    background.add_task(_mail_code, gw, body.login, "verify")
    return Accepted(message=_RESEND_ANSWER)


@router.post("/password/forgot", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED)
def forgot_password(body: PasswordForgot, gw: GatewayDep, background: BackgroundTasks) -> Accepted:
    """Mail a single-use reset code (30 minutes) to the account with this email; always 202 with the same body and
    timing, whether or not such an account exists (the lookup runs after the answer is sent)."""
    background.add_task(_mail_code, gw, body.email, "reset")
    return Accepted(message=_FORGOT_ANSWER)


@router.post("/password/reset", response_model=Message)
async def reset_password(request: Request, body: PasswordReset, gw: GatewayDep) -> Message:
    """Set a new password with the mailed code: every session of the account ends (refresh tokens revoked, access
    tokens refused). Wrong, expired, used or exhausted codes: 400 (unknown emails answer like a wrong code)."""

    def consume(db: Session) -> tuple[int, str]:
        user = crud.get_user_by_login(db, body.email)
        user = user if user is not None and user.deleted_at is None and user.is_active else None
        # The code first: whatever the password, a caller without the right code hears code_invalid, known account or not.
        codes.consume(db, gw.codec.code_key, user.id if user else None, "reset", body.code)
        assert user is not None and user.id is not None
        try:  # the account's own rules (not its username) only for its owner
            passwords.check(body.new_password, user.username, user.email)
        except InvalidInput:
            db.rollback()  # the code is not spent: the owner may try another password with it
            raise
        ident = (user.id, user.username)
        db.commit()
        return ident

    user_id, username = await gw.run_db(consume)
    password_hash = await gw.hashing.hash(body.new_password)
    try:
        await gw.run_db(crud.reset_password, user_id, password_hash)
    finally:
        gw.auth.invalidate_user(user_id)
    await gw.throttle.succeeded(identities.login_key(username))  # the owner proved themselves: lift the lockout
    await gw.throttle.succeeded(identities.login_key(body.email))
    return Message(message="password changed; log in with the new one (every other session has ended)")


@router.post("/password/change", response_model=TokenPair)
async def change_password(request: Request, body: PasswordChange, p: LoginPrincipal, gw: GatewayDep) -> TokenPair:
    """Set a new password (the current one is required): every other session of the account ends (refresh tokens
    revoked, access tokens refused); the answer is a fresh token pair for this client."""
    user = await _verified(request, gw, p.username, body.old_password)
    if user.id != p.user_id:  # the account's name now belongs to someone else: never change theirs
        raise Unauthorized("incorrect username or password", code="bad_credentials")
    passwords.check(body.new_password, user.username, user.email)
    password_hash = await gw.hashing.hash(body.new_password)

    def change(db: Session) -> TokenPair:
        fresh = crud.get_user(db, user.id) if user.id is not None else None
        if fresh is None:
            raise Unauthorized("account not found or disabled", code="inactive_user")
        return _issue(gw, db, crud.update_user(db, fresh, UserUpdate(password=body.new_password), password_hash))

    try:
        return await gw.run_db(change)
    finally:
        assert p.user_id is not None
        gw.auth.invalidate_user(p.user_id)


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
        owner = crud.get_user(db, known.user_id) if known is not None and known.revoked_at is not None else None
        if known is not None and owner is not None and claims.get("tv", 0) == owner.token_version:
            # A token revoked by rotation presented again: someone kept a copy. End every session of this user.
            # (Tokens revoked by a password change or deactivation are merely dead: an old device retrying one
            # must not end the session the user just started.)
            crud.revoke_user_refresh_tokens(db, known.user_id)
        gw.metrics.auth_failures.labels("refresh_token_reused").inc()
        raise Unauthorized("refresh token revoked or unknown", code="refresh_token_revoked")
    user = crud.get_user(db, row.user_id)
    if user is None or not user.is_active:
        raise Unauthorized("account disabled", code="inactive_user")
    if claims.get("tv", user.token_version) != user.token_version:  # minted while the password was being changed
        raise Unauthorized("refresh token revoked or unknown", code="refresh_token_revoked")
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


@router.get("/verify", response_model=TokenInfo)
async def verify_token(request: Request, p: CurrentPrincipal, gw: GatewayDep) -> TokenInfo:
    """200 with the subject, role and expiry of a valid credential (access token or API key); 401 otherwise."""
    expires = None
    if p.kind == "user":
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        expires = datetime.fromtimestamp(gw.codec.decode(token, "access")["exp"], UTC)
    elif p.api_key_id is not None:
        key_id = p.api_key_id
        key = await gw.run_db(lambda db: crud.get_api_key(db, key_id))
        expires = key.expires_at if key is not None else None
    return TokenInfo(sub=str(p.user_id), username=p.username, role=p.role, kind=p.kind, expires_at=expires)


@router.get("/me", response_model=UserPublic)
def me(p: CurrentPrincipal, db: SessionDep) -> User:
    """The caller's account."""
    user = crud.get_user(db, p.user_id) if p.user_id is not None else None
    if user is None or not user.is_active:
        raise Unauthorized("account not found or disabled", code="inactive_user")
    return user
