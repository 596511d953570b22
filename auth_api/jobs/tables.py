"""SQLModel tables of training jobs and model shares (migration 0009), and the public job schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text
from sqlmodel import Field, SQLModel

from auth_api.models import utcnow

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")


class TrainingJob(SQLModel, table=True):
    __tablename__ = "training_jobs"
    id: str = Field(primary_key=True, max_length=36)
    owner_id: int = Field(index=True)
    state: str = Field(default="queued", max_length=16, index=True)
    stage: str = Field(default="queued", max_length=32)
    progress: float = 0.0
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    dataset_id: str = Field(max_length=64)
    dataset_sha256: str | None = Field(default=None, max_length=64)
    model: str = Field(max_length=64, description="The served name: u<owner id>-<name>.")
    version: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error_code: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    log: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    runner: str | None = Field(default=None, max_length=200, description="Where it runs: the Ray address / gateway pid.")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class ModelShare(SQLModel, table=True):
    """A user model its owner (engineer/admin) shared with everyone; user models without a row are private."""

    __tablename__ = "model_shares"
    name: str = Field(primary_key=True, max_length=64)
    shared_by: int
    created_at: datetime = Field(default_factory=utcnow)


class JobPublic(SQLModel):
    id: str
    owner_id: int
    state: str
    stage: str
    progress: float
    dataset_id: str
    dataset_sha256: str | None
    spec: dict[str, Any]
    model: str
    version: int | None
    metrics: dict[str, Any]
    error_code: str | None
    error: str | None
    log_tail: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: TrainingJob, lines: int = 20) -> JobPublic:
        data = job.model_dump()
        data["log_tail"] = job.log.splitlines()[-lines:]
        return cls.model_validate(data)
