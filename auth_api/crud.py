"""Every write goes through here: users, API keys, refresh tokens, feedback."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from auth_api.core import security
from auth_api.core.errors import Conflict, NotFound
from auth_api.models import ApiKey, ApiKeyCreate, Feedback, FeedbackCreate, RefreshToken, User, UserCreate, UserUpdate, utcnow


# --- users ------------------------------------------------------------------------------------
def get_user(db: Session, user_id: int) -> User | None:
    return db.get(User, user_id)


def get_user_by_username(db: Session, username: str) -> User | None:
    return db.exec(select(User).where(User.username == username)).first()


def create_user(db: Session, data: UserCreate) -> User:
    user = User(username=data.username, email=data.email, role=data.role, password_hash=security.hash_password(data.password))
    db.add(user)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        raise Conflict(f"username '{data.username}' is taken", code="username_taken") from exc
    db.refresh(user)
    return user


def update_user(db: Session, user: User, data: UserUpdate) -> User:
    fields = data.model_dump(exclude_unset=True)
    if "password" in fields:
        pw = fields.pop("password")
        if pw is not None:
            user.password_hash = security.hash_password(pw)
    for k, v in fields.items():
        if v is not None:
            setattr(user, k, v)
    db.add(user)
    db.commit()
    db.refresh(user)
    return user


def authenticate(db: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, else None (same work either way)."""
    user = get_user_by_username(db, username)
    ok = security.verify_password(password, user.password_hash if user else None)
    return user if ok and user is not None and user.is_active else None


def list_users(db: Session, limit: int, offset: int) -> list[User]:
    return list(db.exec(select(User).order_by(col(User.id)).offset(offset).limit(limit)))


# --- API keys ---------------------------------------------------------------------------------
def create_api_key(db: Session, owner: User, data: ApiKeyCreate) -> tuple[ApiKey, str]:
    full, prefix, secret_hash = security.new_api_key()
    expires = utcnow() + timedelta(days=data.expires_in_days) if data.expires_in_days else None
    assert owner.id is not None
    key = ApiKey(prefix=prefix, secret_hash=secret_hash, name=data.name, owner_id=owner.id, scopes=list(data.scopes),
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
