"""Alert tables (migration 0010) and the API schemas of /api/v1/alert-rules and /api/v1/alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from auth_api.models import RequestBody, utcnow

Severity = Literal["info", "warning", "critical"]
Channel = Literal["in_app", "email", "webhook"]
Scope = Literal["own", "all"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
MAX_COOLDOWN_S = 30 * 86400


class Condition(BaseModel):
    """What a prediction must show for the rule to fire; every given test must hold (AND)."""

    model_config = ConfigDict(extra="forbid")

    label_in: list[str] | None = PydanticField(default=None, min_length=1, max_length=100, examples=[["setosa"]])
    label_not_in: list[str] | None = PydanticField(default=None, min_length=1, max_length=100)
    probability_gt: float | None = PydanticField(default=None, ge=0.0, le=1.0)
    score_lt: float | None = PydanticField(default=None, allow_inf_nan=False)
    value_gt: float | None = PydanticField(default=None, allow_inf_nan=False)

    @field_validator("label_in", "label_not_in")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not s or len(s) > 128 for s in v):
            raise ValueError("labels are 1..128 characters")
        return v

    @model_validator(mode="after")
    def _some(self) -> Any:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one of label_in, label_not_in, probability_gt, score_lt, value_gt")
        return self


class _RuleFields(RequestBody):
    @field_validator("channels", check_fields=False)
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        return list(dict.fromkeys(v)) if v is not None else v


class AlertRuleCreate(_RuleFields):
    name: str | None = Field(default=None, min_length=1, max_length=100, schema_extra={"examples": ["setosa seen"]})
    model: str = Field(min_length=1, max_length=64, schema_extra={"examples": ["iris-svm"]})
    asset: str | None = Field(default=None, min_length=1, max_length=128, description="Only events about this asset.")
    condition: Condition
    severity: Severity = "warning"
    channels: list[Channel] = Field(default_factory=lambda: ["in_app"], min_length=1, max_length=3)
    webhook_url: str | None = Field(default=None, max_length=2000, schema_extra={"examples": ["https://hooks.example.org/mlstack"]})
    cooldown_s: int = Field(default=300, ge=0, le=MAX_COOLDOWN_S)
    scope: Scope = Field(default="own", description="'all' (admins only): match every user's predictions, not only yours.")
    enabled: bool = True


class AlertRuleUpdate(_RuleFields):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    asset: str | None = Field(default=None, min_length=1, max_length=128)
    condition: Condition | None = None
    severity: Severity | None = None
    channels: list[Channel] | None = Field(default=None, min_length=1, max_length=3)
    webhook_url: str | None = Field(default=None, max_length=2000)
    cooldown_s: int | None = Field(default=None, ge=0, le=MAX_COOLDOWN_S)
    scope: Scope | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _not_null(self) -> Any:
        nulls = sorted(k for k in self.model_fields_set if getattr(self, k) is None and k not in ("asset", "webhook_url"))
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null (leave a field out to keep it)")
        return self


class AlertRule(SQLModel, table=True):
    __tablename__ = "alert_rules"
    id: int | None = Field(default=None, primary_key=True)
    key: str | None = Field(default=None, max_length=100, unique=True)  # built-in rules only (ensure_builtin_rule)
    owner_id: int | None = Field(default=None, index=True)  # None: a built-in rule (no FK: rules outlive a purge check)
    name: str = Field(max_length=100)
    model: str = Field(max_length=64, index=True)
    asset: str | None = Field(default=None, max_length=128)
    condition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    severity: str = Field(max_length=16)
    channels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    webhook_url: str | None = Field(default=None, max_length=2000)
    webhook_secret: str | None = Field(default=None, max_length=100)  # the HMAC key; shown once, at creation
    cooldown_s: int = 300
    scope: str = Field(default="own", max_length=8)  # own | all | builtin
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class AlertRulePublic(SQLModel):
    id: int
    key: str | None
    owner_id: int | None
    name: str
    model: str
    asset: str | None
    condition: dict[str, Any]
    severity: str
    channels: list[str]
    webhook_url: str | None
    cooldown_s: int
    scope: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class AlertRuleCreated(AlertRulePublic):
    webhook_secret: str | None = Field(description="HMAC-SHA256 key of the X-Mlstack-Signature header; shown only here.")


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(default=None, index=True)  # whose alert it is (None: an anonymous caller's, admins see it)
    rule_id: int | None = Field(default=None, index=True)  # None: a manual alert
    rule_name: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=64, index=True)
    version: str | None = Field(default=None, max_length=16)
    asset: str | None = Field(default=None, max_length=128, index=True)
    severity: str = Field(max_length=16, index=True)
    title: str = Field(max_length=200)
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    label: str | None = Field(default=None, max_length=128)
    probability: float | None = None
    score: float | None = None
    value: float | None = None
    source: str | None = Field(default=None, max_length=64)
    prediction_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    read_at: datetime | None = None


class AlertPublic(SQLModel):
    id: int
    user_id: int | None
    rule_id: int | None
    rule_name: str | None
    model: str | None
    version: str | None
    asset: str | None
    severity: str
    title: str
    message: str
    label: str | None
    probability: float | None
    score: float | None
    value: float | None
    source: str | None
    prediction_id: str | None
    created_at: datetime
    read_at: datetime | None


class AlertPage(SQLModel):
    items: list[AlertPublic]
    total: int
    unread: int
    limit: int
    offset: int


class AlertCreate(RequestBody):
    """A manual alert (in-app only): yours, or, for an admin, any user's."""

    severity: Severity = "info"
    title: str = Field(min_length=1, max_length=200, schema_extra={"examples": ["pack 3 inspected: connector loose"]})
    message: str = Field(default="", max_length=5000)
    model: str | None = Field(default=None, min_length=1, max_length=64)
    asset: str | None = Field(default=None, min_length=1, max_length=128)
    user_id: int | None = Field(default=None, ge=1, description="Admins only: whose alert it is (default: yours).")


class ReadAll(SQLModel):
    updated: int


class AlertCooldown(SQLModel, table=True):
    """The DB-level cool-down guard: one row per (rule, user, asset), moved forward only when the window has passed."""

    __tablename__ = "alert_cooldowns"
    __table_args__ = (UniqueConstraint("rule_id", "user_key", "asset_key"),)
    id: int | None = Field(default=None, primary_key=True)
    rule_id: int
    user_key: int  # the event's user id, 0 for none
    asset_key: str = Field(max_length=128)  # '' for none
    fired_at: float  # epoch seconds


class WebhookDelivery(SQLModel, table=True):
    """A webhook call waiting for (or past) delivery: written with its alert, sent by auth_api.alerts.sender."""

    __tablename__ = "alert_webhooks"
    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(index=True)
    rule_id: int
    url: str = Field(max_length=2000)
    body: str = Field(sa_column=Column(Text, nullable=False))
    signature: str = Field(max_length=80)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_until: datetime | None = None
    sent_at: datetime | None = Field(default=None, index=True)
    failed_at: datetime | None = None  # given up (refused by the SSRF policy, or out of attempts)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
