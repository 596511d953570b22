"""Mirror the repository's model cards into ``model_versions`` rows (state live / available / deleted)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from auth_api.models import ModelVersion, utcnow
from mlstack.errors import ModelNotFound
from mlstack.repository.layout import model_names, read_card, versions
from mlstack.repository.serving import live_versions

logger = logging.getLogger(__name__)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def sync(engine: Engine, repo: Path, name: str | None = None, *, published_by: dict[int, str] | None = None) -> int:
    """Upsert one row per version on disk (of ``name`` or every model); returns rows touched."""
    repo = Path(repo)
    names = [name] if name else model_names(repo)
    touched = 0
    with Session(engine) as db:
        for n in names:
            on_disk = versions(repo, n)
            try:
                live = set(live_versions(repo, n)) if on_disk else set()
            except ModelNotFound:
                live = set()
            rows = {r.version: r for r in db.exec(select(ModelVersion).where(ModelVersion.name == n))}
            for v in on_disk:
                row = rows.get(v) or ModelVersion(name=n, version=v)
                try:
                    card = read_card(repo, n, v)
                    row.task = card.task
                    row.metrics = dict(card.metrics)
                    row.published_at = row.published_at or _parse_time(card.created_at)
                    row.published_by = row.published_by or card.created_by
                except (ModelNotFound, ValueError):
                    pass
                if published_by and v in published_by:
                    row.published_by = published_by[v]
                row.state = "live" if v in live else "available"
                row.updated_at = utcnow()
                db.add(row)
                touched += 1
            for v, row in rows.items():
                if v not in on_disk and row.state != "deleted":
                    row.state = "deleted"
                    row.updated_at = utcnow()
                    db.add(row)
                    touched += 1
        db.commit()
    return touched
