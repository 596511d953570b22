"""Reads and writes behind /api/v1/alert-rules and /api/v1/alerts (owner-scoped; admins see everyone's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from auth_api.alerts.models import (
    Alert,
    AlertCooldown,
    AlertCreate,
    AlertRule,
    AlertRuleCreate,
    AlertRuleUpdate,
    WebhookDelivery,
)
from auth_api.alerts.webhooks import new_secret
from auth_api.core.errors import NotFound
from auth_api.models import utcnow

if TYPE_CHECKING:  # crud.delete_user purges alerts, and authn imports crud
    from auth_api.authn import Principal


def _rules_of(p: Principal) -> Any:
    stmt = select(AlertRule)
    return stmt if p.role == "admin" else stmt.where(col(AlertRule.owner_id) == p.user_id)


def _alerts_of(p: Principal) -> Any:
    stmt = select(Alert)
    return stmt if p.role == "admin" else stmt.where(col(Alert.user_id) == p.user_id)


def create_rule(db: Session, p: Principal, body: AlertRuleCreate) -> AlertRule:
    data = body.model_dump(exclude={"condition", "name"})
    rule = AlertRule(**data, condition=body.condition.model_dump(exclude_none=True), owner_id=p.user_id,
                     name=body.name or f"{body.model} alert",
                     webhook_secret=new_secret() if "webhook" in body.channels else None)
    db.add(rule)
    db.commit()
    db.refresh(rule)
    return rule


def list_rules(db: Session, p: Principal, model: str | None) -> list[AlertRule]:
    stmt = _rules_of(p)
    if model:
        stmt = stmt.where(col(AlertRule.model) == model)
    return list(db.exec(stmt.order_by(col(AlertRule.id))))


def get_rule(db: Session, p: Principal, rule_id: int) -> AlertRule:
    rule = db.exec(_rules_of(p).where(col(AlertRule.id) == rule_id)).first()
    if rule is None:
        raise NotFound(f"alert rule {rule_id} not found", code="alert_rule_not_found")
    return rule


def update_rule(db: Session, rule: AlertRule, body: AlertRuleUpdate) -> AlertRule:
    changes = body.model_dump(exclude_unset=True, exclude={"condition"})
    if body.condition is not None:
        changes["condition"] = body.condition.model_dump(exclude_none=True)
    for k, v in changes.items():
        setattr(rule, k, v)
    if "webhook" in rule.channels and rule.webhook_secret is None:
        rule.webhook_secret = new_secret()
    rule.updated_at = utcnow()
    db.add(rule)
    db.commit()
    db.refresh(rule)
    return rule


def delete_rule(db: Session, rule: AlertRule) -> None:
    """The rule and its cool-down windows go; alerts it raised stay (they name it)."""
    db.execute(delete(AlertCooldown).where(col(AlertCooldown.rule_id) == rule.id))
    db.delete(rule)
    db.commit()


def list_alerts(db: Session, p: Principal, *, unread: bool | None, severity: str | None, asset: str | None,
                model: str | None, limit: int, offset: int) -> tuple[list[Alert], int, int]:
    """(page, total matching, unread among them)."""
    stmt = _alerts_of(p)
    if unread is not None:
        stmt = stmt.where(col(Alert.read_at).is_(None) if unread else col(Alert.read_at).is_not(None))
    for column, value in ((Alert.severity, severity), (Alert.asset, asset), (Alert.model, model)):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    sub = stmt.subquery()
    total = db.exec(select(func.count()).select_from(sub)).one()
    unread_n = db.exec(select(func.count()).select_from(sub).where(sub.c.read_at.is_(None))).one()
    rows = db.exec(stmt.order_by(col(Alert.id).desc()).offset(offset).limit(limit))
    return list(rows), int(total), int(unread_n)


def get_alert(db: Session, p: Principal, alert_id: int) -> Alert:
    alert = db.exec(_alerts_of(p).where(col(Alert.id) == alert_id)).first()
    if alert is None:
        raise NotFound(f"alert {alert_id} not found", code="alert_not_found")
    return alert


def mark_read(db: Session, p: Principal, alert_id: int) -> Alert:
    alert = get_alert(db, p, alert_id)
    if alert.read_at is None:
        alert.read_at = utcnow()
        db.add(alert)
        db.commit()
        db.refresh(alert)
    return alert


def mark_all_read(db: Session, p: Principal) -> int:
    """Every unread alert of the caller's own (an admin's too: read-all never touches other users' alerts)."""
    res = db.execute(update(Alert).where(col(Alert.user_id) == p.user_id, col(Alert.read_at).is_(None)).values(read_at=utcnow()))
    db.commit()
    return int(getattr(res, "rowcount", 0) or 0)


def create_manual(db: Session, p: Principal, body: AlertCreate) -> Alert:
    alert = Alert(user_id=body.user_id or p.user_id, severity=body.severity, title=body.title, message=body.message,
                  model=body.model, asset=body.asset, source="manual", rule_name=None, rule_id=None)
    db.add(alert)
    db.commit()
    db.refresh(alert)
    return alert


def purge_user(db: Session, user_id: int) -> None:
    """A purged account's rules (with their windows and undelivered webhooks) and alerts go (the caller commits)."""
    rules = select(AlertRule.id).where(col(AlertRule.owner_id) == user_id)
    db.execute(delete(WebhookDelivery).where(col(WebhookDelivery.rule_id).in_(rules), col(WebhookDelivery.sent_at).is_(None)))
    db.execute(delete(AlertCooldown).where(col(AlertCooldown.rule_id).in_(rules)))
    db.execute(delete(AlertRule).where(col(AlertRule.owner_id) == user_id))
    db.execute(delete(Alert).where(col(Alert.user_id) == user_id))
