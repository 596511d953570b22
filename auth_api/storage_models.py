"""Tables of stored inputs (migration 0007): the owned blobs in object storage and what each prediction kept."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel

from auth_api.models import PredictionPublic, utcnow


class StoredObject(SQLModel, table=True):
    __tablename__ = "stored_objects"
    key: str = Field(primary_key=True, max_length=200)  # u<owner>/<sha256>.<ext>, the object's name in the store
    owner_id: int = Field(index=True)
    sha256: str = Field(max_length=64)
    content_type: str = Field(max_length=64)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    touched_at: datetime = Field(default_factory=utcnow)  # before each write of the blob: gc spares it for a while


class PredictionInput(SQLModel, table=True):
    """Written only once the object is stored (``kept``) or its store failed (not kept, with ``reason``)."""

    __tablename__ = "prediction_inputs"
    prediction_id: str = Field(primary_key=True, max_length=36)
    user_id: int | None = Field(default=None, index=True)
    object_key: str | None = Field(default=None, max_length=200, index=True)
    kept: bool
    reason: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)


class PredictionDetail(PredictionPublic):
    """One prediction with what became of its input: ``input`` is ``kept``, ``not_kept`` or null (not asked to keep it)."""

    input: str | None = None
    input_reason: str | None = None
    input_content_type: str | None = None
    input_size: int | None = None
    input_url: str | None = None  # signed and expiring; ``input_url_expires_in_s`` seconds from the answer
    input_url_expires_in_s: int | None = None
