"""The webhook sender: delivers ``alert_webhooks`` rows (signed JSON POSTs), retrying with backoff, in the gateway.

A 2xx answer marks a delivery sent; anything else (an error status, a timeout, a refused connection) is retried after
``alert_webhook_retry_base_s`` doubling up to ``alert_webhook_retry_max_s``, at most ``alert_webhook_max_attempts``
times. A URL the SSRF policy refuses is given up at once. Redirects are never followed (httpcore follows none).
Several gateway processes may run a sender each: a row is claimed with a conditional UPDATE, as in the mail outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import datetime, timedelta
from typing import Any

import httpcore
from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from auth_api.alerts.models import WebhookDelivery
from auth_api.alerts.webhooks import SIGNATURE_HEADER, GuardedBackend, WebhookRefused
from auth_api.models import utcnow
from mlstack.settings import Settings

logger = logging.getLogger(__name__)
LEASE_S = 120.0
W = WebhookDelivery


def claim_due(db: Session, now: datetime, lease_s: float, limit: int = 20) -> list[WebhookDelivery]:
    free = or_(col(W.claimed_until).is_(None), col(W.claimed_until) < now)
    pending = (col(W.sent_at).is_(None), col(W.failed_at).is_(None))
    ids = db.exec(select(W.id).where(*pending, col(W.next_attempt_at) <= now, free).order_by(col(W.id)).limit(limit)).all()
    claimed = []
    for row_id in ids:
        res = db.execute(update(W).where(col(W.id) == row_id, *pending, free).values(claimed_until=now + timedelta(seconds=lease_s)))
        if getattr(res, "rowcount", 0) == 1:
            claimed.append(row_id)
    db.commit()
    rows = list(db.exec(select(W).where(col(W.id).in_(claimed)).order_by(col(W.id)))) if claimed else []
    for r in rows:
        db.expunge(r)
    return rows


class WebhookSender:
    """``start()`` in the gateway's lifespan, ``await stop()`` on shutdown."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._pool: httpcore.AsyncConnectionPool | None = None

    def start(self) -> None:
        self._pool = httpcore.AsyncConnectionPool(ssl_context=ssl.create_default_context(), max_connections=20,
                                                  keepalive_expiry=30.0,
                                                  network_backend=GuardedBackend(self.settings.alert_webhook_allow_private))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-webhook-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            await self._pool.aclose()

    async def _run(self) -> None:
        while True:
            try:
                rows = await run_in_threadpool(self._claim)
                if rows:
                    await asyncio.gather(*(self._deliver(r) for r in rows))
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away: keep the loop alive
                logger.exception("webhook sender pass failed")
            await asyncio.sleep(self.settings.alert_poll_interval_s)

    def _claim(self) -> list[WebhookDelivery]:
        with Session(self.engine) as db:
            return claim_due(db, utcnow(), LEASE_S)

    async def post(self, url: str, body: bytes, signature: str, delivery_id: int) -> int:
        """One POST; the status code (WebhookRefused, httpcore errors and timeouts propagate)."""
        assert self._pool is not None
        t = self.settings.alert_webhook_timeout_s
        headers = [("Content-Type", "application/json"), ("User-Agent", "mlstack-alerts/1"), (SIGNATURE_HEADER, signature),
                   ("X-Mlstack-Event", "alert"), ("X-Mlstack-Delivery", str(delivery_id))]
        async with asyncio.timeout(t):
            # Streamed and never read: a receiver's answer body, however big, is not our business.
            async with self._pool.stream("POST", url, headers=headers, content=body,
                                         extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}}) as resp:
                return int(resp.status)

    async def _deliver(self, row: WebhookDelivery) -> None:
        assert row.id is not None
        attempts = row.attempts + 1
        status: int | None = None
        try:
            status = await self.post(row.url, row.body.encode(), row.signature, row.id)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except WebhookRefused as exc:
            logger.warning("webhook %s for alert %s refused by the SSRF policy: %s", row.id, row.alert_id, exc)
            await run_in_threadpool(self._finish, row.id, {"attempts": attempts, "failed_at": utcnow(), "last_error": str(exc)[:300]})
            return
        except Exception as exc:  # timeouts, refused connections, TLS errors: retried
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await run_in_threadpool(self._finish, row.id, {"attempts": attempts, "sent_at": utcnow(), "last_status": status})
            return
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error[:300]}
        if attempts >= self.settings.alert_webhook_max_attempts:
            values["failed_at"] = utcnow()
            logger.warning("webhook %s for alert %s given up after %d attempts (%s)", row.id, row.alert_id, attempts, error)
        else:
            s = self.settings
            delay = min(s.alert_webhook_retry_max_s, s.alert_webhook_retry_base_s * 2.0 ** min(attempts - 1, 30))
            values["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
            logger.info("webhook %s for alert %s failed (attempt %d: %s); retrying in %.1f s", row.id, row.alert_id, attempts,
                        error, delay)
        await run_in_threadpool(self._finish, row.id, values)

    def _finish(self, row_id: int, values: dict[str, Any]) -> None:
        with Session(self.engine) as db:
            db.execute(update(W).where(col(W.id) == row_id).values(claimed_until=None, **values))
            db.commit()
