"""Uploaded inputs of task calls kept in object storage (``mlstack.storage``), off the request's critical path.

A call whose keep mode is ``input`` schedules a store after its answer is computed; the prediction's ``prediction_inputs``
row is written only once the object is stored (or says ``not_kept`` when the store failed), so history never points at
a missing object. A history lookup of a prediction whose store is still running waits for it (bounded): in this process
through its future, in a sibling worker by polling for the row. Uploads waiting to be stored are bounded in count and
in bytes (``storage_pending_max_bytes``); beyond either an input is not kept (reason ``backlog``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from auth_api.datasets.models import Dataset
from auth_api.journal import id_age_s
from auth_api.storage_models import PredictionDetail, PredictionInput, StoredObject
from mlstack.settings import Settings
from mlstack.storage import ObjectMissing, ObjectRef, Storage, StorageUnavailable, open_storage
from mlstack.storage.multipart import upload_of

logger = logging.getLogger(__name__)
EXTRAS_KEY = "stored_inputs"
STORE_THREADS = 4
MAX_PENDING = 1000  # stores queued or running; beyond it an input is not kept (reason "backlog")
WAIT_S = 5.0  # longest a history lookup waits for an input still being stored
POLL_S = 0.05
GAUGE_TTL_S = 10.0


class StorageMetrics:
    def __init__(self, registry: Any, engine: Engine):
        self.kept = Counter("gateway_inputs_kept_total", "Prediction inputs stored in object storage.", registry=registry)
        self.not_kept = Counter("gateway_inputs_not_kept_total", "Inputs that were to be kept but could not be, by reason.",
                                ["reason"], registry=registry)
        self._engine = engine
        self._cached: tuple[float, int, int] = (-GAUGE_TTL_S, 0, 0)
        Gauge("storage_bytes", "Bytes of stored objects (all owners).", registry=registry).set_function(lambda: self._totals()[0])
        Gauge("storage_objects", "Stored objects (all owners).", registry=registry).set_function(lambda: self._totals()[1])

    def _totals(self) -> tuple[int, int]:
        at, size, count = self._cached
        if time.monotonic() - at > GAUGE_TTL_S:  # scraped every few seconds: one cheap query per TTL at most
            try:
                with Session(self._engine) as db:
                    size, count = db.exec(select(func.coalesce(func.sum(StoredObject.size), 0), func.count())).one()
            except Exception:
                logger.warning("storage usage unavailable for metrics")
            self._cached = (time.monotonic(), int(size), int(count))
        return self._cached[1], self._cached[2]


@dataclass
class Upload:
    prediction_id: str
    owner: int
    body: bytes
    content_type: str


class InputStore:
    def __init__(self, settings: Settings, engine: Engine, storage: Storage, metrics: StorageMetrics):
        self.settings = settings
        self.engine = engine
        self.storage = storage
        self.metrics = metrics
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.pending_bytes = 0  # bodies held by queued or running stores (the event loop's count)
        # Threads of their own: a slow store must not take the threadpool the database calls run on.
        self.executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="input-store")

    def capture(self, upload: Upload) -> None:
        """Store ``upload`` in the background (call after the answer is computed, before it is sent)."""
        size = len(upload.body)
        # Bounded memory when the store lags: by count, and by bytes (1000 uploads of 16 MiB would be 16 GB).
        fits = len(self.pending) < MAX_PENDING and self.pending_bytes + size <= self.settings.storage_pending_max_bytes
        held = size if fits else 0
        self.pending_bytes += held
        fut = asyncio.get_running_loop().run_in_executor(self.executor, self._store if fits else self._refuse, upload)
        self.pending[upload.prediction_id] = fut

        def done(_f: asyncio.Future[None]) -> None:
            self.pending.pop(upload.prediction_id, None)
            self.pending_bytes -= held

        fut.add_done_callback(done)

    def _refuse(self, up: Upload) -> None:
        self.metrics.not_kept.labels("backlog").inc()
        self._record(PredictionInput(prediction_id=up.prediction_id, user_id=up.owner, kept=False, reason="backlog"))

    def _store(self, up: Upload) -> None:
        now = datetime.now(UTC)
        try:
            data, declared = upload_of(up.body, up.content_type)
            ref = ObjectRef.of(data, declared, up.owner)
            self._touch(ref, now)  # the intent first: gc leaves a freshly touched object alone
            self.storage.write(ref, data)
        except Exception as exc:
            reason = "store_unavailable" if isinstance(exc, StorageUnavailable) else "store_failed"
            if not isinstance(exc, StorageUnavailable):
                logger.exception("storing the input of %s failed", up.prediction_id)
            self.metrics.not_kept.labels(reason).inc()
            self._record(PredictionInput(prediction_id=up.prediction_id, user_id=up.owner, kept=False, reason=reason))
            return
        self._record(PredictionInput(prediction_id=up.prediction_id, user_id=up.owner, object_key=ref.key, kept=True))
        self.metrics.kept.inc()

    def _touch(self, ref: ObjectRef, now: datetime) -> None:
        # One statement (core, not an ORM session: a third of the store's CPU went to session bookkeeping): the object's
        # row, or a fresher touched_at when the same bytes are stored already (or concurrently, by another call).
        ins = _dialect_insert(self.engine)(StoredObject.__table__).values(  # type: ignore[attr-defined]
            key=ref.key, owner_id=ref.owner, sha256=ref.sha256, content_type=ref.content_type, size=ref.size,
            created_at=now, touched_at=now)
        with self.engine.begin() as conn:
            conn.execute(ins.on_conflict_do_update(index_elements=["key"], set_={"touched_at": now}))

    def _record(self, row: PredictionInput) -> None:
        values = row.model_dump()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(PredictionInput.__table__).values(**values))  # type: ignore[attr-defined]
        except Exception:  # the database away: the row simply has no input (never a dangling one)
            logger.exception("could not record the input of %s", row.prediction_id)

    async def wait(self, prediction_id: str, timeout_s: float = WAIT_S) -> None:
        task = self.pending.get(prediction_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout_s)

    def url(self, key: str) -> str:
        return self.storage.signed_url(key, self.settings.storage_url_expiry_s)

    async def close(self, timeout_s: float = 30.0) -> None:
        if self.pending:
            await asyncio.wait(set(self.pending.values()), timeout=timeout_s)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.storage.close()


def open_store(gw: Any) -> InputStore:
    """The gateway's InputStore (built at startup; the store itself is contacted only when used)."""
    store = gw.extras.get(EXTRAS_KEY)
    if not isinstance(store, InputStore):
        store = gw.extras[EXTRAS_KEY] = InputStore(gw.settings, gw.engine, open_storage(gw.settings),
                                                   StorageMetrics(gw.metrics.registry, gw.engine))
    return store


async def close_store(gw: Any) -> None:
    store = store_of(gw)
    if store is not None:
        await store.close()


def keep_mode(settings: Settings, route: str, model: str | None) -> str:
    """``none`` | ``summary`` | ``input`` for a call of ``route`` answered by ``model`` (a model's setting wins)."""
    by = settings.storage_keep_by
    return by.get(model or "") or by.get(route) or settings.storage_keep


def _dialect_insert(engine: Engine) -> Any:
    """The INSERT construct with ON CONFLICT of the engine's database (SQLite and PostgreSQL)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def capture(gw: Any, prediction_id: str, owner: int | None, body: bytes, content_type: str) -> None:
    """Keep a successful call's upload (no owner, no upload: an anonymous call's input is never kept)."""
    store = store_of(gw)
    if store is None or owner is None:
        return
    store.capture(Upload(prediction_id, owner, body, content_type))


async def detail(gw: Any, row: Any, base_url: str) -> PredictionDetail:
    """A history row with its input's state and, for a kept one, a fresh signed URL (absolute)."""
    store = store_of(gw)
    if store is not None and row.prediction_id:
        await store.wait(row.prediction_id)
    out = PredictionDetail.model_validate(row, from_attributes=True)
    found = await gw.run_db(input_of, row.prediction_id)
    if found is None and _may_still_store(gw.settings, row):  # stored by another worker of this gateway: wait for it
        deadline = time.monotonic() + WAIT_S
        while found is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            found = await gw.run_db(input_of, row.prediction_id)
    fields = describe(store, found)
    if fields.get("input_url", "").startswith("/"):
        fields["input_url"] = base_url.rstrip("/") + fields["input_url"]
    return out.model_copy(update=fields)


def _keep_route(protocol: str) -> str | None:
    """The route name ``keep_mode`` knows a history row's protocol by, None for protocols that never keep an upload."""
    if protocol.startswith("task:"):
        return protocol[5:]
    return "ws" if protocol == "ws" else None


def _may_still_store(settings: Settings, row: Any) -> bool:
    """Whether a recent successful task call or WebSocket frame is one whose input this gateway was asked to keep (an
    anonymous call's never is: ``capture`` keeps nothing without an owner); its store may run in a sibling worker."""
    route = _keep_route(str(row.protocol or ""))
    if row.status != 200 or row.user_id is None or route is None or not row.prediction_id:
        return False
    age = id_age_s(row.prediction_id, time.time() * 1000.0)
    return age is not None and age < WAIT_S and keep_mode(settings, route, row.model) == "input"


def store_of(gw: Any) -> InputStore | None:
    store = gw.extras.get(EXTRAS_KEY)
    return store if isinstance(store, InputStore) else None


def input_of(db: Session, prediction_id: str | None) -> tuple[PredictionInput, StoredObject | None] | None:
    if not prediction_id:
        return None
    row = db.get(PredictionInput, prediction_id)
    if row is None:
        return None
    return row, (db.get(StoredObject, row.object_key) if row.object_key else None)


def describe(store: InputStore | None, found: tuple[PredictionInput, StoredObject | None] | None) -> dict[str, Any]:
    """The ``input*`` fields of a history answer."""
    if found is None:
        return {}
    row, obj = found
    if not row.kept or obj is None:
        return {"input": "not_kept", "input_reason": row.reason or "deleted"}
    out: dict[str, Any] = {"input": "kept", "input_content_type": obj.content_type, "input_size": obj.size}
    if store is not None:
        out["input_url"] = store.url(obj.key)
        out["input_url_expires_in_s"] = store.settings.storage_url_expiry_s
    return out


def delete_owner(engine: Engine, storage: Storage, owner: int) -> int:
    """Remove every object ``owner`` stored (user deletion); their predictions then say the input was not kept."""
    with Session(engine) as db:
        keys = set(db.exec(select(StoredObject.key).where(StoredObject.owner_id == owner)).all())
    try:
        keys.update(storage.keys(owner))
    except StorageUnavailable:
        logger.error("could not list user %s's objects; those the database knows are deleted", owner)
    deleted = 0
    for key in sorted(keys):
        try:
            storage.delete(key)
            deleted += 1
        except (StorageUnavailable, ObjectMissing):
            logger.error("could not delete object %s of user %s", key, owner)
    with Session(engine) as db:
        for row in db.exec(select(PredictionInput).where(PredictionInput.user_id == owner, PredictionInput.kept)).all():
            row.kept, row.object_key, row.reason = False, None, "owner_deleted"
            db.add(row)
        for obj in db.exec(select(StoredObject).where(StoredObject.owner_id == owner)).all():
            db.delete(obj)
        for ds in db.exec(select(Dataset).where(Dataset.owner_id == owner)).all():  # their files went with the objects
            db.delete(ds)
        db.commit()
    return deleted


async def forget_user(gw: Any, user_id: int) -> None:
    """Delete a deleted user's stored objects (the account is gone whatever happens here: failures are logged)."""
    store = store_of(gw)
    if store is None:
        return
    try:
        n = await run_in_threadpool(delete_owner, gw.engine, store.storage, user_id)
        logger.info("deleted %d stored objects of user %s", n, user_id)
    except Exception:
        logger.exception("could not delete the stored objects of user %s; `mlstack storage gc` retries", user_id)


def usage_report(db: Session, owner: int | None) -> dict[str, Any]:
    """``usage`` for one owner, or (None) everyone's with the 50 biggest owners in ``by_user``."""
    out: dict[str, Any] = usage(db, owner)
    if owner is None:
        rows = db.exec(select(StoredObject.owner_id, func.sum(StoredObject.size), func.count()).group_by(col(StoredObject.owner_id))
                       .order_by(func.sum(StoredObject.size).desc()).limit(50)).all()
        out["by_user"] = [{"user_id": u, "bytes": int(s), "objects": int(c)} for u, s, c in rows]
    return out


def usage(db: Session, owner: int | None) -> dict[str, int]:
    """Bytes and objects stored by ``owner`` (None: everyone)."""
    stmt = select(func.coalesce(func.sum(StoredObject.size), 0), func.count())
    if owner is not None:
        stmt = stmt.where(StoredObject.owner_id == owner)
    size, count = db.exec(stmt).one()
    return {"bytes": int(size), "objects": int(count)}
