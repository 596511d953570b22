"""Datasets: parse + profile an upload, keep its bytes as an owned object, resolve ids for a caller (owner/admin/sample).

Nothing is half-written: the upload is parsed before anything is stored; the object is written before the row is
committed, and an object this upload created is removed again when the row cannot be written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, NotFound
from auth_api.datasets.models import Dataset
from auth_api.datasets.profile import profile_of
from auth_api.datasets.samples import SAMPLES, is_sample, sample_frame, sample_sha256
from auth_api.journal import new_prediction_id
from auth_api.storage_models import PredictionInput, StoredObject
from mlstack.errors import MlstackError
from mlstack.settings import Settings
from mlstack.storage import ObjectMissing, ObjectRef, Storage
from mlstack.tables import ImageSet, TableLimits, read_dataset, sniff_format

logger = logging.getLogger(__name__)


class QuotaExceeded(MlstackError):
    code = "quota_exceeded"
    status = 413


@dataclass(frozen=True)
class DatasetRef:
    """A dataset a caller may use: a sample (``sample``, no object) or an upload (its object in storage)."""

    id: str
    name: str
    kind: str  # table | images
    format: str  # csv | txt | xlsx | zip | sample
    sha256: str | None
    sheet: str | None = None
    object_key: str | None = None
    owner_id: int | None = None
    sample: bool = False
    path: str | None = None  # the object's file with the default file storage, else None


@dataclass
class Parsed:
    format: str
    kind: str
    rows: int
    sheet: str | None
    profile: dict[str, Any]


def table_limits(settings: Settings) -> TableLimits:
    return TableLimits(max_bytes=settings.dataset_max_bytes, max_rows=settings.dataset_max_rows,
                       max_columns=settings.dataset_max_columns,
                       max_decompressed_bytes=settings.dataset_max_decompressed_bytes, max_images=settings.dataset_max_images)


def not_found(dataset_id: str) -> NotFound:
    return NotFound(f"dataset '{dataset_id}' not found", code="dataset_not_found", details={"dataset_id": dataset_id})


def refuse_tester(p: Principal) -> None:
    if p.role == "tester":
        raise Forbidden("the tester role uses the sample datasets only", code="sample_data_only")


def visible(db: Session, p: Principal, dataset_id: str) -> Dataset | None:
    """The upload when ``p`` owns it or is an admin; None otherwise (others get 404, never 403)."""
    row = db.get(Dataset, dataset_id)
    if row is None or (row.owner_id != p.user_id and p.role != "admin"):
        return None
    return row


def lookup(db: Session, p: Principal, dataset_id: str, storage: Storage | None = None) -> DatasetRef | None:
    """``dataset_id`` as ``p`` may use it; None when unknown or not theirs; 403 sample_data_only for a tester's upload."""
    if is_sample(dataset_id):
        s = SAMPLES.get(dataset_id)
        return None if s is None else DatasetRef(s.id, s.name, s.kind, "sample", sample_sha256(s.id), sample=True)
    refuse_tester(p)
    row = visible(db, p, dataset_id)
    if row is None:
        return None
    root = getattr(storage, "root", None) if storage is not None and storage.backend == "file" else None
    return DatasetRef(row.id, row.name, row.kind, row.format, row.sha256, row.sheet, row.object_key, row.owner_id,
                      path=str(root / row.object_key) if root is not None else None)


def load_dataset_frame(db: Session, storage: Storage, p: Principal, dataset_id: str,
                       limits: TableLimits | None = None) -> pd.DataFrame | ImageSet:
    """The dataset's data for ``p`` (a DataFrame, or an ImageSet for image ZIPs and digits); 404 dataset_not_found."""
    ref = lookup(db, p, dataset_id)
    if ref is None:
        raise not_found(dataset_id)
    if ref.sample:
        return sample_frame(ref.id)
    assert ref.object_key is not None
    return read_dataset(storage.get(ref.object_key), ref.format, sheet=ref.sheet, limits=limits or TableLimits())


def parse(data: bytes, filename: str, sheet: str | None, limits: TableLimits) -> Parsed:
    """Read and profile an upload (TableTooLarge 413 / TableUnreadable 422); runs on a worker thread."""
    fmt = sniff_format(data, filename)
    got = read_dataset(data, fmt, filename=filename, sheet=sheet, limits=limits)
    kind = "images" if isinstance(got, ImageSet) else "table"
    return Parsed(fmt, kind, len(got), got.attrs.get("sheet") if isinstance(got, pd.DataFrame) else None, profile_of(got))


def used_bytes(db: Session, owner: int) -> dict[str, int]:
    """Bytes of each distinct object the owner's datasets use (the same file uploaded twice is stored once)."""
    return {k: int(s) for k, s in db.exec(select(Dataset.object_key, Dataset.size).where(Dataset.owner_id == owner)).all()}


def save(engine: Engine, storage: Storage, owner: int, data: bytes, parsed: Parsed, *, name: str, filename: str,
         quota: int) -> Dataset:
    """Store the bytes and write the row (or nothing: QuotaExceeded 413, or the store's error after undoing)."""
    ref = ObjectRef.of(data, "application/octet-stream", owner)
    with Session(engine) as db:
        used = used_bytes(db, owner)
        if ref.key not in used and sum(used.values()) + ref.size > quota:
            raise QuotaExceeded(f"this upload ({ref.size} bytes) would take your datasets past the {quota}-byte quota "
                                f"({sum(used.values())} bytes used); delete some first",
                                details={"quota": quota, "used": sum(used.values()), "size": ref.size})
        created = _touch(db, ref)
    try:
        storage.write(ref, data)
        row = Dataset(id=new_prediction_id(), owner_id=owner, name=name, filename=filename, format=parsed.format,
                      kind=parsed.kind, sheet=parsed.sheet, object_key=ref.key, sha256=ref.sha256, size=ref.size,
                      rows=parsed.rows, profile=parsed.profile)
        with Session(engine) as db:
            db.add(row)
            db.commit()
            db.refresh(row)
        return row
    except BaseException:
        if created:
            release(engine, storage, ref.key)
        raise


def _touch(db: Session, ref: ObjectRef) -> bool:
    """Record the object before writing it (gc spares fresh ones); True when this call created the record."""
    now = datetime.now(UTC)
    if db.connection().execute(update(StoredObject).where(col(StoredObject.key) == ref.key).values(touched_at=now)).rowcount:
        db.commit()
        return False
    db.add(StoredObject(key=ref.key, owner_id=ref.owner, sha256=ref.sha256, content_type=ref.content_type, size=ref.size,
                        created_at=now, touched_at=now))
    try:
        db.commit()
    except IntegrityError:  # the same bytes stored concurrently
        db.rollback()
        return False
    return True


def release(engine: Engine, storage: Storage, key: str) -> None:
    """Delete the object unless a dataset or a kept prediction input still refers to it."""
    with Session(engine) as db:
        if db.exec(select(func.count()).select_from(Dataset).where(Dataset.object_key == key)).one():
            return
        if db.exec(select(func.count()).select_from(PredictionInput).where(PredictionInput.object_key == key,
                                                                             col(PredictionInput.kept))).one():
            return
        try:
            storage.delete(key)
        except ObjectMissing:
            pass
        except Exception:  # the record stays: `mlstack storage gc` retries
            logger.exception("could not delete dataset object %s", key)
            return
        obj = db.get(StoredObject, key)
        if obj is not None:
            db.delete(obj)
            db.commit()


def remove(engine: Engine, storage: Storage, p: Principal, dataset_id: str) -> None:
    """Delete an upload (owner or admin; 404 otherwise; samples 403) and its object when nothing else uses it."""
    if is_sample(dataset_id):
        if dataset_id in SAMPLES:
            raise Forbidden("sample datasets cannot be deleted", code="sample_read_only")
        raise not_found(dataset_id)
    with Session(engine) as db:
        row = visible(db, p, dataset_id)
        if row is None:
            raise not_found(dataset_id)
        key = row.object_key
        db.delete(row)
        db.commit()
    release(engine, storage, key)
