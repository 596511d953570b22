"""SQLModel tables and API schemas: users, API keys, refresh tokens, predictions (history), feedback, model versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, field_validator
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from auth_api import identities

Role = Literal["admin", "engineer", "user"]
ROLES: tuple[str, ...] = ("user", "engineer", "admin")
EMAIL_RE = r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s]{1,63}$"
# New usernames (inputs); stored names of older accounts may be up to 64 characters (UserBase).
NEW_USERNAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$"


def utcnow() -> datetime:
    """Aware UTC timestamps (SQLModel's UTCDateTime stores them the same on SQLite and PostgreSQL)."""
    return datetime.now(UTC)


class RequestBody(SQLModel):
    """A body the gateway's own API accepts: an unknown field is a 422 naming it, never silently ignored."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


# --- users ------------------------------------------------------------------------------------
class UserBase(SQLModel):
    username: str = Field(index=True, unique=True, min_length=3, max_length=64, schema_extra={"pattern": r"^[A-Za-z0-9_.-]+$"})
    email: str | None = Field(default=None, max_length=254, schema_extra={"pattern": EMAIL_RE})


class _NormalisedIdentity(RequestBody):
    """Usernames and emails arrive NFKC-normalised (identities.py); constraints then apply to the normalised text."""

    @field_validator("username", mode="before", check_fields=False)
    @classmethod
    def _username(cls, v: object) -> object:
        return identities.clean_username(v) if isinstance(v, str) else v

    @field_validator("email", mode="before", check_fields=False)
    @classmethod
    def _email(cls, v: object) -> object:
        return identities.clean_email(v) if isinstance(v, str) else v


class UserCreate(_NormalisedIdentity, UserBase):
    username: str = Field(min_length=3, max_length=32, schema_extra={"pattern": NEW_USERNAME})
    password: str = Field(min_length=8, max_length=256)
    role: Role = "user"


class UserRegister(_NormalisedIdentity):
    username: str = Field(min_length=3, max_length=32, schema_extra={"pattern": NEW_USERNAME, "examples": ["alice"]})
    password: str = Field(min_length=8, max_length=256, schema_extra={"examples": ["correct horse battery"]})
    email: str | None = Field(default=None, max_length=254, schema_extra={"pattern": EMAIL_RE, "examples": ["alice@example.com"]})


class UserUpdate(_NormalisedIdentity):
    email: str | None = Field(default=None, max_length=254, schema_extra={"pattern": EMAIL_RE})
    password: str | None = Field(default=None, min_length=8, max_length=256)
    role: Role | None = None
    is_active: bool | None = None


class PasswordChange(RequestBody):
    old_password: str = Field(max_length=256)
    new_password: str = Field(min_length=8, max_length=256)


class User(UserBase, table=True):
    __tablename__ = "users"
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    role: str = Field(default="user", max_length=16)
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    # Unique lookup keys (identities.lookup_key), migration 0003.
    username_key: str | None = Field(default=None, max_length=64, unique=True, index=True)
    email_key: str | None = Field(default=None, max_length=254, unique=True, index=True)
    # Bumped by a password change or deactivation: access tokens carry the value they were issued with.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class UserPublic(UserBase):
    id: int
    role: str
    is_active: bool
    created_at: datetime


# --- API keys ---------------------------------------------------------------------------------
class ApiKeyCreate(RequestBody):
    name: str = Field(default="default", min_length=1, max_length=64, schema_extra={"examples": ["batch-scorer"]})
    scopes: list[str] = Field(default_factory=lambda: ["predict"], schema_extra={"examples": [["predict", "history"]]})
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - {"predict", "history", "models"})
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; use predict, history, models")
        return v


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(index=True, unique=True, max_length=32)
    secret_hash: str = Field(max_length=128)
    name: str = Field(max_length=64)
    owner_id: int = Field(foreign_key="users.id", index=True)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ApiKeyPublic(SQLModel):
    id: int
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The full key; shown once, only its hash is stored.")


# --- refresh tokens ---------------------------------------------------------------------------
class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_tokens"
    id: int | None = Field(default=None, primary_key=True)
    jti: str = Field(index=True, unique=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True)
    expires_at: datetime
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class TokenPair(SQLModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class LoginRequest(RequestBody):
    username: str = Field(max_length=254, description="The username or the account's email (either letter case).",
                          schema_extra={"examples": ["alice"]})
    password: str = Field(max_length=256, schema_extra={"examples": ["correct horse battery"]})


class RefreshRequest(RequestBody):
    refresh_token: str = Field(max_length=4096)


# --- predictions (history) --------------------------------------------------------------------
class Prediction(SQLModel, table=True):
    __tablename__ = "predictions"
    id: int | None = Field(default=None, primary_key=True)
    # The UUIDv7 the client got back; the ingester inserts on it idempotently (migration 0005; null on older rows).
    prediction_id: str | None = Field(default=None, max_length=36, unique=True, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    api_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    model: str = Field(index=True, max_length=64)
    version: str | None = Field(default=None, max_length=16)
    protocol: str = Field(max_length=32)  # "rest", "http", "grpc", "task:<name>" (migration 0002)
    status: int = Field(index=True)
    gateway_ms: float
    upstream_ms: float
    input_shape: str | None = Field(default=None, max_length=128)
    input_dtype: str | None = Field(default=None, max_length=16)
    input_sha256: str | None = Field(default=None, max_length=64)
    output_label: str | None = Field(default=None, index=True, max_length=128)
    output_confidence: float | None = None
    output_value: float | None = None
    error_code: str | None = Field(default=None, max_length=64)  # set on failed predictions (migration 0004)
    client_ip: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class PredictionPublic(SQLModel):
    id: int
    prediction_id: str | None = None
    user_id: int | None
    api_key_id: int | None
    model: str
    version: str | None
    protocol: str
    status: int
    gateway_ms: float
    upstream_ms: float
    input_shape: str | None
    input_dtype: str | None
    input_sha256: str | None
    output_label: str | None
    output_confidence: float | None
    output_value: float | None
    error_code: str | None = None
    client_ip: str | None
    created_at: datetime


class HistoryPage(SQLModel):
    items: list[PredictionPublic]
    total: int
    limit: int
    offset: int


# --- feedback ---------------------------------------------------------------------------------
class FeedbackCreate(RequestBody):
    correct: bool = Field(schema_extra={"examples": [False]})
    true_label: str | None = Field(default=None, max_length=128, schema_extra={"examples": ["versicolor"]})
    comment: str | None = Field(default=None, max_length=2000, schema_extra={"examples": ["petals were measured twice"]})


class Feedback(FeedbackCreate, table=True):
    __tablename__ = "feedback"
    id: int | None = Field(default=None, primary_key=True)
    prediction_id: int = Field(foreign_key="predictions.id", index=True, unique=True)
    user_id: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = Field(default_factory=utcnow)


class FeedbackPublic(FeedbackCreate):
    id: int
    prediction_id: int
    created_at: datetime


# --- model registry ---------------------------------------------------------------------------
class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=64)
    version: int
    state: str = Field(default="available", max_length=16, description="live | available | deleted")
    task: str | None = Field(default=None, max_length=32)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    published_by: str | None = Field(default=None, max_length=64)
    published_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel):
    message: str
