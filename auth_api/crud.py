"""Every write goes through here: users, API keys, refresh tokens, feedback."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from auth_api import identities
from auth_api.core import security
from auth_api.core.errors import Conflict, NotFound, Unauthorized
from auth_api.models import ApiKey, ApiKeyCreate, Feedback, FeedbackCreate, RefreshToken, User, UserCreate, UserUpdate, utcnow


# --- users ------------------------------------------------------------------------------------
def get_user(db: Session, user_id: int) -> User | None:
    return db.get(User, user_id)


def get_user_by_login(db: Session, login: str) -> User | None:
    """The account whose username or email is ``login``, case-insensitively (NFKC + casefold): how logins look it up."""
    key = identities.login_key(login)
    column = User.email_key if identities.is_email(login) else User.username_key
    return db.exec(select(User).where(column == key)).first()


def create_user(db: Session, data: UserCreate, password_hash: str | None = None) -> User:
    """``password_hash`` when the caller already hashed ``data.password`` (off the request threads, see HashPool)."""
    ukey = identities.lookup_key(data.username)
    ekey = identities.lookup_key(data.email) if data.email else None
    _ensure_free(db, ukey, ekey, None)
    user = User(username=data.username, email=data.email, role=data.role, username_key=ukey, email_key=ekey,
                password_hash=password_hash or security.hash_password(data.password))
    db.add(user)
    try:
        db.commit()
    except IntegrityError as exc:  # a concurrent registration won between the check and the insert
        db.rollback()
        _ensure_free(db, ukey, ekey, None)
        raise Conflict(f"username '{data.username}' is taken", code="username_taken") from exc
    db.refresh(user)
    return user


def _ensure_free(db: Session, ukey: str | None, ekey: str | None, user_id: int | None) -> None:
    if ukey is not None and db.exec(select(User.id).where(User.username_key == ukey, User.id != user_id)).first() is not None:
        raise Conflict("this username is taken (usernames are case-insensitive)", code="username_taken")
    if ekey is not None and db.exec(select(User.id).where(User.email_key == ekey, User.id != user_id)).first() is not None:
        raise Conflict("this email is already registered", code="email_taken")


def update_user(db: Session, user: User, data: UserUpdate, password_hash: str | None = None) -> User:
    """Apply ``data``; a new password or deactivation bumps the token version (old access tokens die) and revokes
    refresh tokens. Never leaves the system without an active admin (Conflict ``last_admin``)."""
    assert user.id is not None
    fields = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    password = fields.pop("password", None)
    demotes = user.role == "admin" and user.is_active and (
        fields.get("role", "admin") != "admin" or fields.get("is_active", True) is False)
    if demotes:
        _lock_active_admins(db)
    ends_sessions = password is not None or (fields.get("is_active") is False and user.is_active)
    if "email" in fields:
        ekey = identities.lookup_key(fields["email"])
        _ensure_free(db, None, ekey, user.id)
        user.email_key = ekey
    for k, v in fields.items():
        setattr(user, k, v)
    if password is not None:
        user.password_hash = password_hash or security.hash_password(password)
    if ends_sessions:  # in SQL: two concurrent changes both move the version on
        user.token_version = User.token_version + 1  # type: ignore[assignment]
    db.add(user)
    try:
        db.flush()
        if demotes and _active_admins(db) == 0:
            db.rollback()
            raise Conflict("this would leave no active admin; promote another admin first", code="last_admin")
        if ends_sessions:
            db.execute(update(RefreshToken).where(col(RefreshToken.user_id) == user.id, col(RefreshToken.revoked_at).is_(None))
                       .values(revoked_at=utcnow()))
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict("this email is already registered", code="email_taken") from exc
    db.refresh(user)
    return user


def _lock_active_admins(db: Session) -> None:
    """PostgreSQL: lock the active admins' rows so two admins demoting each other at once are serialised (the second
    then sees the first's change). SQLite serialises writers anyway and ignores FOR UPDATE."""
    db.exec(select(User.id).where(User.role == "admin", col(User.is_active).is_(True)).with_for_update()).all()


def _active_admins(db: Session) -> int:
    return int(db.exec(select(func.count()).select_from(User).where(User.role == "admin", col(User.is_active).is_(True))).one())


def list_users(db: Session, limit: int, offset: int, role: str | None = None) -> list[User]:
    stmt = select(User) if role is None else select(User).where(User.role == role)
    return list(db.exec(stmt.order_by(col(User.id)).offset(offset).limit(limit)))


# --- API keys ---------------------------------------------------------------------------------
def create_api_key(db: Session, owner_id: int, token_version: int | None, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    """A new key, only while the owner is active (and, for a login token, its version is current).

    The check is a conditional UPDATE of the owner's row in the key's own transaction: it reads the latest committed
    state and holds the row (PostgreSQL) or the database (SQLite) until commit, so a deactivation cannot slip between
    the check and the insert, and a token that went stale in another gateway process cannot mint a key.
    """
    cond = [col(User.id) == owner_id, col(User.is_active).is_(True)]
    if token_version is not None:
        cond.append(col(User.token_version) == token_version)
    res = db.execute(update(User).where(*cond).values(token_version=User.token_version))
    if getattr(res, "rowcount", 0) != 1:
        db.rollback()
        raise Unauthorized("account disabled or credentials changed; log in again", code="inactive_user")
    full, prefix, secret_hash = security.new_api_key()
    expires = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    key = ApiKey(prefix=prefix, secret_hash=secret_hash, name=data.name, owner_id=owner_id, scopes=list(data.scopes),
                 expires_at=expires)
    db.add(key)
    db.commit()
    db.refresh(key)
    return key, full


def list_api_keys(db: Session, owner_id: int) -> list[ApiKey]:
    return list(db.exec(select(ApiKey).where(ApiKey.owner_id == owner_id).order_by(col(ApiKey.id))))


def get_api_key_by_prefix(db: Session, prefix: str) -> ApiKey | None:
    return db.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()


def revoke_api_key(db: Session, owner_id: int, key_id: int, *, any_owner: bool = False) -> ApiKey:
    key = db.get(ApiKey, key_id)
    if key is None or (key.owner_id != owner_id and not any_owner):
        raise NotFound(f"API key {key_id} not found", code="api_key_not_found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.add(key)
        db.commit()
        db.refresh(key)
    return key


def touch_api_key(db: Session, key_id: int, when: datetime) -> None:
    db.execute(update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=when))
    db.commit()


# --- refresh tokens ---------------------------------------------------------------------------
def store_refresh_token(db: Session, user_id: int, jti: str, expires_at: datetime) -> None:
    db.add(RefreshToken(jti=jti, user_id=user_id, expires_at=expires_at))
    db.commit()


def consume_refresh_token(db: Session, jti: str) -> RefreshToken | None:
    """Revoke the token if it is live and return it; None if unknown, expired or already used (reuse)."""
    now = utcnow()
    # One conditional UPDATE: two concurrent refreshes with the same token cannot both win.
    res = db.execute(update(RefreshToken).where(col(RefreshToken.jti) == jti, col(RefreshToken.revoked_at).is_(None),
                                                col(RefreshToken.expires_at) > now).values(revoked_at=now))
    db.commit()
    if getattr(res, "rowcount", 0) != 1:
        return None
    return db.exec(select(RefreshToken).where(RefreshToken.jti == jti)).first()


def find_refresh_token(db: Session, jti: str) -> RefreshToken | None:
    return db.exec(select(RefreshToken).where(RefreshToken.jti == jti)).first()


def revoke_user_refresh_tokens(db: Session, user_id: int) -> int:
    res = db.execute(update(RefreshToken).where(col(RefreshToken.user_id) == user_id, col(RefreshToken.revoked_at).is_(None))
                     .values(revoked_at=utcnow()))
    db.commit()
    return int(getattr(res, "rowcount", 0) or 0)


# --- feedback ---------------------------------------------------------------------------------
def upsert_feedback(db: Session, prediction_id: int, user_id: int | None, data: FeedbackCreate) -> Feedback:
    fb = db.exec(select(Feedback).where(Feedback.prediction_id == prediction_id)).first()
    if fb is None:
        fb = Feedback(prediction_id=prediction_id, user_id=user_id, **data.model_dump())
    else:
        for k, v in data.model_dump().items():
            setattr(fb, k, v)
        fb.created_at = utcnow()
    db.add(fb)
    db.commit()
    db.refresh(fb)
    return fb
