"""An alert's other channels, written in the alert's own transaction: an email row in the mail outbox (sent by the
gateway's OutboxSender) and a signed webhook delivery (sent by auth_api.alerts.sender)."""

from __future__ import annotations

import html
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from auth_api.alerts.models import WebhookDelivery
from auth_api.alerts.rules import Rule
from auth_api.alerts.webhooks import sign
from auth_api.models import OutboxMessage, User, utcnow

OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]
USERS = User.__table__  # type: ignore[attr-defined]
DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]
PUBLIC_KEYS = ("id", "user_id", "rule_id", "rule_name", "model", "version", "asset", "severity", "title", "message", "label",
               "probability", "score", "value", "source", "prediction_id")


def payload(alert: dict[str, Any]) -> bytes:
    """The webhook body: ``{"event": "alert", "alert": {...}}`` as compact JSON (the signature covers these bytes)."""
    doc = {k: alert.get(k) for k in PUBLIC_KEYS}
    doc["created_at"] = alert["created_at"].isoformat()
    return json.dumps({"event": "alert", "alert": doc}, separators=(",", ":"), sort_keys=True).encode()


def _one_line(v: object) -> str:
    return " ".join(str(v).split())


def _email(conn: Connection, alert: dict[str, Any]) -> None:
    if alert["user_id"] is None:
        return
    user = conn.execute(sa.select(USERS.c.email, USERS.c.username).where(USERS.c.id == alert["user_id"],
                                                                         USERS.c.is_active.is_(True))).first()
    if user is None or not user.email:
        return
    subject = _one_line(f"[mlstack {alert['severity']}] {alert['title']}")[:200]
    text = (f"Hello {_one_line(user.username)},\n\n{_one_line(alert['message'])}\n\nAlert {alert['id']}: "
            f"GET /api/v1/alerts?unread=true lists your unread alerts; PUT /api/v1/alerts/{alert['id']}/read marks it read.\n")
    body_html = (f"<p>Hello {html.escape(_one_line(user.username))},</p><p>{html.escape(_one_line(alert['message']))}</p>"
                 f"<p>Alert {alert['id']} ({html.escape(alert['severity'])}).</p>")
    conn.execute(sa.insert(OUTBOX).values(user_id=alert["user_id"], recipient=user.email, subject=subject, body_text=text,
                                          body_html=body_html, attempts=0, next_attempt_at=utcnow(), created_at=utcnow()))


def enqueue(conn: Connection, rule: Rule, alert: dict[str, Any]) -> None:
    """Queue the alert on the rule's email and webhook channels (in-app is the alert row itself)."""
    if "email" in rule.channels:
        _email(conn, alert)
    if "webhook" in rule.channels and rule.webhook_url and rule.webhook_secret:
        body = payload(alert)
        conn.execute(sa.insert(DELIVERIES).values(alert_id=alert["id"], rule_id=rule.id, url=rule.webhook_url,
                                                  body=body.decode(), signature=sign(rule.webhook_secret, body), attempts=0,
                                                  next_attempt_at=utcnow(), created_at=utcnow()))
