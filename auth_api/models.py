"""SQLModel tables and API schemas: users, API keys, refresh tokens, predictions (history), feedback, model versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, field_validator, model_validator
from sqlalchemy import JSON, Column, Text, UniqueConstraint, true
from sqlmodel import Field, SQLModel

from auth_api import identities, passwords

Role = Literal["admin", "engineer", "user", "tester"]
ROLES: tuple[str, ...] = ("tester", "user", "engineer", "admin")
# ASCII only (after NFKC): an internationalised address would need SMTPUTF8 end to end; CR/LF can never pass.
EMAIL_RE = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,63}$"
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
    # A leading '~' marks an anonymised (deleted) account: identities.ANONYMISED_PREFIX.
    username: str = Field(index=True, unique=True, min_length=3, max_length=64, schema_extra={"pattern": r"^~?[A-Za-z0-9_.-]+$"})
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


class _PasswordPolicy(RequestBody):
    """New passwords follow passwords.py (length, not common, not the username or email): a 422 that says which."""

    @field_validator("password", "new_password", mode="after", check_fields=False)
    @classmethod
    def _policy(cls, v: str | None) -> str | None:
        why = passwords.problem(v) if v is not None else None
        if why is not None:
            raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _not_identity(self) -> Any:
        # ``new_password`` too: a reset request names the account by its email, and refusing that email as the password
        # here (for every account, known or not) keeps the route's answer from depending on whether the account exists.
        pw = getattr(self, "password", None) or getattr(self, "new_password", None)
        name, email = getattr(self, "username", None), getattr(self, "email", None)
        if pw is not None and (name or email):
            why = passwords.problem(pw, name, email)
            if why is not None:
                raise ValueError(why)
        return self


class UserCreate(_NormalisedIdentity, _PasswordPolicy, UserBase):
    username: str = Field(min_length=3, max_length=32, schema_extra={"pattern": NEW_USERNAME})
    password: str = Field(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH)
    role: Role = "user"


class UserRegister(_NormalisedIdentity, _PasswordPolicy):
    username: str = Field(min_length=3, max_length=32, schema_extra={"pattern": NEW_USERNAME, "examples": ["alice"]})
    password: str = Field(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH,
                          schema_extra={"examples": ["correct horse battery"]})
    email: str | None = Field(default=None, max_length=254, description="Required while email verification is on: the code "
                              "is mailed here.", schema_extra={"pattern": EMAIL_RE, "examples": ["alice@example.com"]})


class UserUpdate(_NormalisedIdentity, _PasswordPolicy):
    email: str | None = Field(default=None, max_length=254, schema_extra={"pattern": EMAIL_RE})
    password: str | None = Field(default=None, min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH)
    role: Role | None = None
    is_active: bool | None = None


class PasswordChange(_PasswordPolicy):
    old_password: str = Field(max_length=256)
    new_password: str = Field(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH)


class _AccountRef(_NormalisedIdentity):
    """Names the account by its email or its username (exactly one)."""

    email: str | None = Field(default=None, max_length=254, schema_extra={"pattern": EMAIL_RE, "examples": ["alice@example.com"]})
    username: str | None = Field(default=None, max_length=64)

    @field_validator("username", mode="before")
    @classmethod
    def _username(cls, v: object) -> object:  # a lookup, not a new name: any stored name may be given
        return identities.normalize(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one(self) -> Any:
        if (self.email is None) == (self.username is None):
            raise ValueError("give either 'email' or 'username'")
        return self

    @property
    def login(self) -> str:
        return self.email or self.username or ""


class VerifyEmail(_AccountRef):
    code: str = Field(min_length=1, max_length=16, schema_extra={"examples": ["042917"]})


class ResendCode(_AccountRef):
    pass


class PasswordForgot(_NormalisedIdentity):
    email: str = Field(max_length=254, schema_extra={"pattern": EMAIL_RE, "examples": ["alice@example.com"]})


class PasswordReset(_PasswordPolicy, _NormalisedIdentity):
    email: str = Field(max_length=254, schema_extra={"pattern": EMAIL_RE, "examples": ["alice@example.com"]})
    code: str = Field(min_length=1, max_length=16, schema_extra={"examples": ["042917"]})
    new_password: str = Field(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH)


class Accepted(SQLModel):
    message: str


class TokenInfo(SQLModel):
    """What GET /auth/verify says about a valid credential."""

    sub: str
    username: str
    role: str
    kind: str
    expires_at: datetime | None


class RolePublic(SQLModel):
    name: str
    rank: int
    description: str
    permissions: list[str]


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
    # Migration 0006: accounts from before it count as verified; self-registered ones start unverified.
    email_verified: bool = Field(default=False, sa_column_kwargs={"server_default": true()})
    deleted_at: datetime | None = None  # set when the account was deleted (anonymised)


class UserPublic(UserBase):
    id: int
    role: str
    is_active: bool
    email_verified: bool = False
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


# --- one-time codes and the mail outbox (migration 0006) ---------------------------------------------------------------
class AccountCode(SQLModel, table=True):
    """A mailed one-time code: only a keyed hash is stored; dead after ``expires_at``, use, or too many wrong tries."""

    __tablename__ = "account_codes"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    purpose: str = Field(max_length=16)  # "verify" | "reset"
    code_hash: str = Field(max_length=64)
    email_key: str | None = Field(default=None, max_length=254)  # the address it was sent to
    attempts: int = 0
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class OutboxMessage(SQLModel, table=True):
    """A message waiting for (or past) delivery; written in the transaction of the change that needs it."""

    __tablename__ = "mail_outbox"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int | None = Field(default=None, index=True)  # no FK: purging a user deletes its unsent rows explicitly
    recipient: str = Field(max_length=254)
    subject: str = Field(max_length=200)
    body_text: str = Field(sa_column=Column(Text, nullable=False))
    body_html: str = Field(sa_column=Column(Text, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_until: datetime | None = None  # a sender holds the row until then (several gateway processes)
    sent_at: datetime | None = Field(default=None, index=True)
    last_error: str | None = Field(default=None, max_length=300)
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
