"""``mlstack storage gc``: drop kept inputs past their retention and delete objects no history row needs any more.

An object is deleted only when no kept input refers to it and it was not touched within ``grace_s``: a store in flight
touches its object before writing it and records the reference after, so gc never removes what a row is about to need.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, exists, update
from sqlmodel import Session, col, select

from auth_api.datasets.models import Dataset
from auth_api.models import Prediction
from auth_api.storage_models import PredictionInput, StoredObject
from mlstack.storage import ObjectMissing, Storage

logger = logging.getLogger(__name__)
DURATION_RE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>[smhd]?)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``90s`` or plain seconds."""
    m = DURATION_RE.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 12h, 15m, 90s)")
    return float(m["n"]) * UNITS[m["unit"]]


@dataclass
class GcReport:
    expired_inputs: int = 0
    orphaned_inputs: int = 0
    deleted_objects: int = 0
    deleted_bytes: int = 0
    failed: int = 0


def gc(engine: Engine, storage: Storage, *, older_than_s: float, grace_s: float = 3600.0, now: datetime | None = None,
       dry_run: bool = False) -> GcReport:
    now = now or datetime.now(UTC)
    cutoff, settled = now - timedelta(seconds=older_than_s), now - timedelta(seconds=grace_s)
    report = GcReport()
    kept = col(PredictionInput.kept)
    with Session(engine) as db:
        expired = (col(PredictionInput.created_at) < cutoff) & kept
        # A purged user's rows are gone; the ingester may still be writing a fresh one, hence the grace period.
        orphan = kept & (col(PredictionInput.created_at) < settled) & ~exists().where(
            col(Prediction.prediction_id) == col(PredictionInput.prediction_id))
        report.expired_inputs = len(db.exec(select(PredictionInput.prediction_id).where(expired)).all())
        report.orphaned_inputs = len(db.exec(select(PredictionInput.prediction_id).where(orphan & ~expired)).all())
        db.execute(update(PredictionInput).where(expired).values(kept=False, object_key=None, reason="expired"))
        db.execute(update(PredictionInput).where(orphan).values(kept=False, object_key=None, reason="prediction_deleted"))
        needed = exists().where(col(PredictionInput.object_key) == col(StoredObject.key), kept)
        dataset = exists().where(col(Dataset.object_key) == col(StoredObject.key))  # an uploaded dataset's file
        unneeded = db.exec(select(StoredObject).where(col(StoredObject.touched_at) < settled, ~needed, ~dataset)).all()
        if dry_run:  # what the updates above would free, then nothing happened
            report.deleted_objects, report.deleted_bytes = len(unneeded), sum(o.size for o in unneeded)
            db.rollback()
            return report
        db.commit()
        for obj in unneeded:
            try:
                storage.delete(obj.key)
            except ObjectMissing:
                pass
            except Exception as exc:
                logger.error("could not delete object %s: %s", obj.key, exc)
                report.failed += 1
                continue
            db.delete(obj)
            db.commit()
            report.deleted_objects += 1
            report.deleted_bytes += obj.size
    return report
