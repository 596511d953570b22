"""Mailed one-time codes (email verification, password reset): 6 digits, stored as a keyed hash, single use.

A code dies when it expires, when it is used, after ``MAX_ATTEMPTS`` wrong tries, or when a newer one of the same purpose
is issued. Whether it expired, was used or ran out of tries is only said to a caller who presents the right code;
everyone else hears ``code_invalid``, so a stranger learns nothing about an account from the answers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select, update

from auth_api.models import AccountCode, utcnow
from mlstack.errors import MlstackError

MAX_ATTEMPTS = 5
RESEND_AFTER = timedelta(minutes=1)
TTL = {"verify": timedelta(minutes=15), "reset": timedelta(minutes=30)}


class CodeRejected(MlstackError):
    status = 400
    code = "code_invalid"


_MESSAGES = {
    "code_invalid": "the code is wrong, or no code was requested for this account",
    "code_expired": "the code has expired; request a new one",
    "code_used": "the code was already used; request a new one",
    "code_exhausted": f"the code is dead after {MAX_ATTEMPTS} wrong tries; request a new one",
}


def _reject(code: str) -> CodeRejected:
    return CodeRejected(_MESSAGES[code], code=code)


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def code_hash(key: bytes, user_id: int, purpose: str, code: str) -> str:
    # Keyed with the server's secret: a leaked table of 6-digit codes cannot be brute-forced offline.
    return hmac.new(key, f"{purpose}:{user_id}:{code.strip()}".encode(), hashlib.sha256).hexdigest()


def latest(db: Session, user_id: int, purpose: str) -> AccountCode | None:
    return db.exec(select(AccountCode).where(AccountCode.user_id == user_id, AccountCode.purpose == purpose)
                   .order_by(col(AccountCode.id).desc())).first()


def recently_sent(db: Session, user_id: int, purpose: str, now: datetime) -> bool:
    row = latest(db, user_id, purpose)
    return row is not None and row.used_at is None and _aware(row.created_at) > now - RESEND_AFTER


def issue(db: Session, key: bytes, user_id: int, purpose: str, email_key: str | None) -> str:
    """A fresh code in ``db``'s transaction (the caller commits with the outbox row that carries it); older ones die."""
    now = utcnow()
    db.execute(update(AccountCode).where(col(AccountCode.user_id) == user_id, col(AccountCode.purpose) == purpose,
                                         col(AccountCode.used_at).is_(None), col(AccountCode.expires_at) > now)
               .values(expires_at=now))
    code = new_code()
    db.add(AccountCode(user_id=user_id, purpose=purpose, code_hash=code_hash(key, user_id, purpose, code), email_key=email_key,
                       expires_at=now + TTL[purpose]))
    return code


def consume(db: Session, key: bytes, user_id: int | None, purpose: str, code: str) -> AccountCode:
    """Use the account's current code (commits); CodeRejected with the reason otherwise. ``user_id`` None (no such
    account) is answered like a wrong code."""
    row = latest(db, user_id, purpose) if user_id is not None else None
    if row is None or user_id is None:
        raise _reject("code_invalid")
    assert row.id is not None
    right = hmac.compare_digest(row.code_hash, code_hash(key, user_id, purpose, code))
    now = utcnow()
    if row.used_at is not None:
        raise _reject("code_used" if right else "code_invalid")
    if row.attempts >= MAX_ATTEMPTS:
        raise _reject("code_exhausted" if right else "code_invalid")
    if _aware(row.expires_at) <= now:
        raise _reject("code_expired" if right else "code_invalid")
    if not right:
        # Counted in SQL: concurrent guesses cannot share one try.
        db.execute(update(AccountCode).where(col(AccountCode.id) == row.id).values(attempts=AccountCode.attempts + 1))
        db.commit()
        raise _reject("code_invalid")
    res = db.execute(update(AccountCode).where(col(AccountCode.id) == row.id, col(AccountCode.used_at).is_(None),
                                               col(AccountCode.attempts) < MAX_ATTEMPTS).values(used_at=now))
    if getattr(res, "rowcount", 0) != 1:  # a concurrent request used it first
        db.rollback()
        raise _reject("code_used")
    return row


def _aware(ts: datetime) -> datetime:
    """SQLite hands timestamps back naive (they were stored as UTC)."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
