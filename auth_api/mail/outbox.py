"""The outbox table: ``enqueue`` adds a message to the caller's transaction; the sender claims, sends and marks rows
(a sent row keeps no code: ``mark_sent`` redacts it)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, or_, select, update

from auth_api.mail.templates import redact_subject, render
from auth_api.models import OutboxMessage, utcnow


def enqueue(db: Session, recipient: str, kind: str, user_id: int | None = None, **values: object) -> OutboxMessage:
    """Add a rendered message to ``db``'s transaction (the caller commits it with the change that needs it)."""
    msg = render(kind, **values)
    row = OutboxMessage(recipient=recipient, subject=msg.subject, body_text=msg.text, body_html=msg.html, user_id=user_id)
    db.add(row)
    return row


def claim_due(db: Session, now: datetime, lease_s: float, limit: int = 20) -> list[OutboxMessage]:
    """Rows due for delivery, each held for ``lease_s`` by this sender: a conditional UPDATE per row, so two gateway
    processes never both claim one."""
    free = or_(col(OutboxMessage.claimed_until).is_(None), col(OutboxMessage.claimed_until) < now)
    ids = db.exec(select(OutboxMessage.id).where(col(OutboxMessage.sent_at).is_(None), col(OutboxMessage.next_attempt_at) <= now,
                                                  free).order_by(col(OutboxMessage.id)).limit(limit)).all()
    claimed = []
    for msg_id in ids:
        res = db.execute(update(OutboxMessage).where(col(OutboxMessage.id) == msg_id, col(OutboxMessage.sent_at).is_(None), free)
                         .values(claimed_until=now + timedelta(seconds=lease_s)))
        if getattr(res, "rowcount", 0) == 1:
            claimed.append(msg_id)
    db.commit()
    return list(db.exec(select(OutboxMessage).where(col(OutboxMessage.id).in_(claimed)).order_by(col(OutboxMessage.id)))) if claimed else []


def mark_sent(db: Session, msg_id: int) -> None:
    """Delivered: the bodies are blanked and the subject's values removed (they carry one-time codes, which must not
    stay readable in the database); recipient, kind of message (from the subject), attempts and sent_at stay."""
    subject = db.exec(select(OutboxMessage.subject).where(col(OutboxMessage.id) == msg_id)).first()
    db.execute(update(OutboxMessage).where(col(OutboxMessage.id) == msg_id)
               .values(sent_at=utcnow(), claimed_until=None, subject=redact_subject(subject or ""), body_text="", body_html=""))
    db.commit()


def redact_delivered(db: Session) -> int:
    """Redact rows marked sent before ``mark_sent`` redacted them (an older version's rows); how many were."""
    rows = db.exec(select(OutboxMessage.id, OutboxMessage.subject)
                   .where(col(OutboxMessage.sent_at).is_not(None), col(OutboxMessage.body_text) != "")).all()
    for msg_id, subject in rows:
        db.execute(update(OutboxMessage).where(col(OutboxMessage.id) == msg_id)
                   .values(subject=redact_subject(subject), body_text="", body_html=""))
    db.commit()
    return len(rows)


def mark_failed(db: Session, msg_id: int, attempts: int, retry_at: datetime, error: str) -> None:
    db.execute(update(OutboxMessage).where(col(OutboxMessage.id) == msg_id)
               .values(attempts=attempts, next_attempt_at=retry_at, claimed_until=None, last_error=error[:300]))
    db.commit()


def drop_unsent_for(db: Session, user_id: int) -> None:
    """A deleted account's address is personal data: unsent mail to it goes (the caller commits)."""
    db.execute(delete(OutboxMessage).where(col(OutboxMessage.user_id) == user_id, col(OutboxMessage.sent_at).is_(None)))
