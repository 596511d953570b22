"""The datasets table (migration 0008) and the API schemas of a dataset."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer
from sqlmodel import Field, SQLModel

from auth_api.models import utcnow


class Dataset(SQLModel, table=True):
    """An uploaded table or image ZIP; its bytes are an owned object in storage (``stored_objects``)."""

    __tablename__ = "datasets"
    id: str = Field(primary_key=True, max_length=36)  # UUIDv7
    owner_id: int = Field(sa_column=Column(Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str = Field(max_length=200)
    filename: str = Field(max_length=255)
    format: str = Field(max_length=8)  # csv | txt | xlsx | zip
    kind: str = Field(max_length=8)  # table | images
    sheet: str | None = Field(default=None, max_length=100)
    object_key: str = Field(max_length=200, index=True)
    sha256: str = Field(max_length=64)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    rows: int
    profile: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class ColumnInfo(SQLModel):
    name: str
    dtype: str  # int | float | categorical | text | datetime | bool
    missing: int
    distinct: int


class TargetCandidate(SQLModel):
    column: str
    task: str  # classification | regression
    why: str


class DatasetSummary(SQLModel):
    """What a listing shows of a dataset."""

    id: str
    name: str
    kind: str
    format: str
    size: int | None
    sha256: str | None
    rows: int | None
    sample: bool = False
    owner_id: int | None = None
    owner: str | None = None
    description: str | None = None
    created_at: datetime | None = None


class DatasetPublic(DatasetSummary):
    """A dataset with its inferred schema, candidate targets, class balance and a 10-row preview."""

    filename: str | None = None
    sheet: str | None = None
    sheets: list[str] | None = None
    separator: str | None = None
    columns: list[ColumnInfo] = Field(default_factory=list)
    targets: list[TargetCandidate] = Field(default_factory=list)
    balance: dict[str, dict[str, int]] = Field(default_factory=dict)  # per candidate classification target
    classes: list[str] | None = None  # image datasets
    preview: list[dict[str, Any]] = Field(default_factory=list)
