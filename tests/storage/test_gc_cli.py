"""``mlstack storage gc`` as an operator runs it: objects no row needs go, a kept input's object stays."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from auth_api.core import db
from auth_api.models import Prediction
from auth_api.storage_models import PredictionInput, StoredObject
from mlstack.settings import Settings
from mlstack.storage import ObjectRef, open_storage

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(100))


def _stored(settings: Settings, data: bytes, owner: int, age: timedelta) -> ObjectRef:
    ref = open_storage(settings).put(data, "image/png", owner)
    then = datetime.now(UTC) - age
    engine = db.make_engine(db.database_url(settings))
    with Session(engine) as s:
        s.add(StoredObject(key=ref.key, owner_id=owner, sha256=ref.sha256, content_type=ref.content_type, size=ref.size,
                           created_at=then, touched_at=then))
        s.commit()
    engine.dispose()
    return ref


def _gc(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "MLSTACK_VAR_DIR": str(tmp_path / "var"), "MLSTACK_DATABASE_URL": f"sqlite:///{tmp_path / 'gc.db'}"}
    out = subprocess.run([str(Path(sys.executable).with_name("mlstack")), "storage", "gc", *args], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_gc_deletes_unneeded_objects_and_spares_needed_and_fresh_ones(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'gc.db'}")
    db.upgrade(engine := db.make_engine(db.database_url(settings)))
    orphan = _stored(settings, PNG, 1, timedelta(days=2))
    needed = _stored(settings, PNG + b"kept", 1, timedelta(days=2))
    fresh = _stored(settings, PNG + b"fresh", 1, timedelta(seconds=5))  # a store in flight: its row not written yet
    with Session(engine) as s:
        s.add(Prediction(prediction_id="0190a0a0-0000-7000-8000-000000000001", user_id=None, model="digits-cnn",
                         protocol="task:classify_image", status=200, gateway_ms=1.0, upstream_ms=1.0))
        s.add(PredictionInput(prediction_id="0190a0a0-0000-7000-8000-000000000001", user_id=1, object_key=needed.key, kept=True,
                              created_at=datetime.now(UTC) - timedelta(days=1)))
        s.commit()
    engine.dispose()
    assert "would delete 1 objects" in _gc(tmp_path, "--older-than", "30d", "--dry-run")
    out = _gc(tmp_path, "--older-than", "30d")
    assert "deleted 1 objects" in out, out
    store = open_storage(settings)
    assert not store.exists(orphan.key) and store.exists(needed.key) and store.exists(fresh.key)
    out = _gc(tmp_path, "--older-than", "12h", "--grace", "0")  # the kept input is past retention now
    assert "1 inputs past retention" in out and "deleted 2 objects" in out, out
    assert list(store.keys(1)) == []
