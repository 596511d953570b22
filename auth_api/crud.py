"""Every write goes through here: users, API keys, refresh tokens, feedback."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select, update

from auth_api import codes, identities
from auth_api.alerts import store as alert_store
from auth_api.core import security
from auth_api.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from auth_api.mail import outbox
from auth_api.models import (
    AccountCode,
    ApiKey,
    ApiKeyCreate,
    Feedback,
    FeedbackCreate,
    Prediction,
    RefreshToken,
    User,
    UserCreate,
    UserUpdate,
    utcnow,
)


# --- users ------------------------------------------------------------------------------------
def get_user(db: Session, user_id: int) -> User | None:
    return db.get(User, user_id)


def get_user_by_login(db: Session, login: str) -> User | None:
    """The account whose username or email is ``login``, case-insensitively (NFKC + casefold): how logins look it up."""
    key = identities.login_key(login)
    column = User.email_key if identities.is_email(login) else User.username_key
    return db.exec(select(User).where(column == key)).first()


def create_user(db: Session, data: UserCreate, password_hash: str | None = None, *, code_key: bytes | None = None,
                require_email: bool = False) -> User:
    """``password_hash`` when the caller already hashed ``data.password`` (off the request threads, see HashPool).

    Admin-created accounts are verified. With ``code_key`` (self-registration) the account starts unverified and a
    verification code is mailed in the same transaction; ``require_email`` refuses an account without an email.
    """
    ukey = identities.lookup_key(data.username)
    ekey = identities.lookup_key(data.email) if data.email else None
    _ensure_free(db, ukey, ekey, None)
    if require_email and not data.email:
        raise InvalidInput("an email is required to register: the verification code is mailed to it", code="email_required")
    user = User(username=data.username, email=data.email, role=data.role, username_key=ukey, email_key=ekey,
                password_hash=password_hash or security.hash_password(data.password), email_verified=code_key is None)
    db.add(user)
    try:
        if code_key is not None and data.email:
            db.flush()
            send_code(db, code_key, user, "verify")
        db.commit()
    except IntegrityError as exc:  # a concurrent registration won between the check and the insert
        db.rollback()
        _ensure_free(db, ukey, ekey, None)
        raise Conflict(f"username '{data.username}' is taken", code="username_taken") from exc
    db.refresh(user)
    return user


def lock_user(db: Session, user_id: int) -> None:
    """Hold the user's row (PostgreSQL) or the database (SQLite) until commit: serialises e.g. two concurrent requests
    for a code, so the once-a-minute limit cannot be raced."""
    db.execute(update(User).where(col(User.id) == user_id).values(token_version=User.token_version))


def send_code(db: Session, key: bytes, user: User, purpose: str) -> None:
    """Issue a code and queue the mail carrying it, in ``db``'s transaction (the caller commits)."""
    assert user.id is not None and user.email
    code = codes.issue(db, key, user.id, purpose, user.email_key)
    minutes = int(codes.TTL[purpose].total_seconds() // 60)
    outbox.enqueue(db, user.email, "verify_email" if purpose == "verify" else "password_reset", user_id=user.id,
                   username=user.username, code=code, minutes=minutes)


def _ensure_free(db: Session, ukey: str | None, ekey: str | None, user_id: int | None) -> None:
    if ukey is not None and db.exec(select(User.id).where(User.username_key == ukey, User.id != user_id)).first() is not None:
        raise Conflict("this username is taken (usernames are case-insensitive)", code="username_taken")
    if ekey is not None and db.exec(select(User.id).where(User.email_key == ekey, User.id != user_id)).first() is not None:
        raise Conflict("this email is already registered", code="email_taken")


def update_user(db: Session, user: User, data: UserUpdate, password_hash: str | None = None, *, code_key: bytes | None = None) -> User:
    """Apply ``data``; a new password or deactivation bumps the token version (old access tokens die) and revokes
    refresh tokens. Never leaves the system without an active admin (Conflict ``last_admin``). A new email is
    unverified until its code (mailed when ``code_key`` is given) is entered."""
    assert user.id is not None
    if user.deleted_at is not None:
        raise NotFound(f"user {user.id} not found", code="user_not_found")
    fields = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    password = fields.pop("password", None)
    demotes = user.role == "admin" and user.is_active and (
        fields.get("role", "admin") != "admin" or fields.get("is_active", True) is False)
    if demotes:
        _lock_active_admins(db)
    ends_sessions = password is not None or (fields.get("is_active") is False and user.is_active)
    new_email = "email" in fields and identities.lookup_key(fields["email"]) != user.email_key
    if "email" in fields:
        ekey = identities.lookup_key(fields["email"])
        _ensure_free(db, None, ekey, user.id)
        user.email_key = ekey
    if new_email:
        user.email_verified = False
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
        if new_email and code_key is not None:
            send_code(db, code_key, user, "verify")
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
    stmt = select(User).where(col(User.deleted_at).is_(None))
    stmt = stmt if role is None else stmt.where(User.role == role)
    return list(db.exec(stmt.order_by(col(User.id)).offset(offset).limit(limit)))


def mark_email_verified(db: Session, user_id: int) -> None:
    db.execute(update(User).where(col(User.id) == user_id).values(email_verified=True))
    db.commit()


def upgrade_password_hash(db: Session, user_id: int, old_hash: str, new_hash: str) -> bool:
    """Store ``new_hash`` (the same password, current argon2 parameters) in place of ``old_hash``; only while ``old_hash``
    is still the stored one, so a password change in between wins. Sessions stay: the password did not change."""
    res = db.execute(update(User).where(col(User.id) == user_id, col(User.password_hash) == old_hash)
                     .values(password_hash=new_hash))
    db.commit()
    return getattr(res, "rowcount", 0) == 1


def reset_password(db: Session, user_id: int, password_hash: str) -> None:
    """A password set through a mailed code: every session ends; the mailbox is proven, so the email counts as verified."""
    db.execute(update(User).where(col(User.id) == user_id).values(password_hash=password_hash, email_verified=True,
                                                                   token_version=User.token_version + 1))
    db.execute(update(RefreshToken).where(col(RefreshToken.user_id) == user_id, col(RefreshToken.revoked_at).is_(None))
               .values(revoked_at=utcnow()))
    db.commit()


def delete_user(db: Session, user: User, *, purge: bool) -> None:
    """Anonymise the account (or with ``purge`` remove it and everything it owns); never the last active admin.

    Anonymised: the name becomes ``~deleted-<id>`` (outside the username alphabet: nobody can register it first and
    make the deletion fail), email and lookup keys are cleared (both free again), the password can never match, every
    token and API key dies. Its predictions stay for aggregate dashboards, without the client IP, and are tied only to
    the anonymous ``~deleted-<id>`` row.
    """
    assert user.id is not None
    if user.role == "admin" and user.is_active:
        # A no-op write first: it takes SQLite's write lock (and PostgreSQL's row locks) before counting, so two admins
        # deleting each other at once are serialised and the second sees the first's change.
        db.execute(update(User).where(col(User.role) == "admin", col(User.is_active).is_(True)).values(token_version=User.token_version))
        if _active_admins(db) <= 1:
            raise Conflict("this would leave no active admin; promote another admin first", code="last_admin")
    now = utcnow()
    outbox.drop_unsent_for(db, user.id)
    db.execute(delete(AccountCode).where(col(AccountCode.user_id) == user.id))
    if purge:
        alert_store.purge_user(db, user.id)
        mine = select(Prediction.id).where(col(Prediction.user_id) == user.id)
        db.execute(delete(Feedback).where(or_(col(Feedback.user_id) == user.id, col(Feedback.prediction_id).in_(mine))))
        db.execute(delete(Prediction).where(col(Prediction.user_id) == user.id))
        db.execute(delete(RefreshToken).where(col(RefreshToken.user_id) == user.id))
        db.execute(delete(ApiKey).where(col(ApiKey.owner_id) == user.id))
        db.execute(delete(User).where(col(User.id) == user.id))
    else:
        name = identities.anonymised_name(user.id)
        db.execute(update(Prediction).where(col(Prediction.user_id) == user.id).values(client_ip=None))
        db.execute(update(RefreshToken).where(col(RefreshToken.user_id) == user.id, col(RefreshToken.revoked_at).is_(None))
                   .values(revoked_at=now))
        db.execute(update(ApiKey).where(col(ApiKey.owner_id) == user.id, col(ApiKey.revoked_at).is_(None)).values(revoked_at=now))
        db.execute(update(User).where(col(User.id) == user.id).values(
            username=name, username_key=name, email=None, email_key=None, is_active=False, email_verified=False,
            password_hash="!deleted", deleted_at=now, token_version=User.token_version + 1))
    db.commit()


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


def get_api_key(db: Session, key_id: int) -> ApiKey | None:
    return db.get(ApiKey, key_id)


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
