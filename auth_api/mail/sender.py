"""The background sender: delivers outbox rows over SMTP (aiosmtplib) or into ``.eml`` files, retrying with backoff.

An SMTP outage only delays mail: a failed row is retried after ``mail_retry_base_s`` doubling up to ``mail_retry_max_s``,
forever, and is marked sent (and stripped of its code, outbox.mark_sent) only after the server accepted it or the
``.eml`` file was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth_api.mail import outbox
from auth_api.mail.templates import redact_subject
from auth_api.models import OutboxMessage, utcnow
from mlstack.settings import Settings

logger = logging.getLogger(__name__)

LEASE_S = 120.0


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool | None  # None: when the server offers it
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        u = urlsplit(url)
        if u.scheme not in ("smtp", "smtps") or not u.hostname:
            raise ValueError("MLSTACK_SMTP_URL must look like smtp://[user:password@]host[:port] or smtps://...")
        mode = parse_qs(u.query).get("starttls", [""])[0].lower()
        starttls = {"required": True, "true": True, "off": False, "false": False}.get(mode)
        return cls(host=u.hostname, port=u.port or (465 if u.scheme == "smtps" else 587 if starttls else 25),
                   implicit_tls=u.scheme == "smtps", starttls=False if u.scheme == "smtps" else starttls,
                   username=unquote(u.username) if u.username else None, password=unquote(u.password) if u.password else None)

    def __str__(self) -> str:  # for logs: never the password
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


def build_message(row: OutboxMessage, sender: str) -> EmailMessage:
    """Headers are set through EmailMessage, which refuses CR/LF in a value: nothing can inject a header."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row.recipient
    msg["Subject"] = row.subject
    msg["Message-ID"] = make_msgid(idstring=f"outbox-{row.id}", domain="mlstack.local")
    msg.set_content(row.body_text)
    msg.add_alternative(row.body_html, subtype="html")
    return msg


class OutboxSender:
    """``start()`` in the gateway's lifespan, ``await stop()`` on shutdown; ``wake()`` after committing a message."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.smtp = SmtpTarget.parse(settings.smtp_url.get_secret_value()) if settings.smtp_url else None
        self.outbox_dir = settings.var_dir / "outbox"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        if self.smtp is not None:
            self._tls = ssl.create_default_context()  # the system's CAs...
            if settings.smtp_ca_file:  # ...and this bundle (create_default_context(cafile=...) would trust it alone)
                self._tls.load_verify_locations(cafile=str(settings.smtp_ca_file))

    def describe(self) -> str:
        return f"SMTP {self.smtp}" if self.smtp else f"files in {self.outbox_dir}"

    def start(self) -> None:
        logger.info("outbox sender delivering to %s", self.describe())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-sender")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            if n := await run_in_threadpool(self._redact_delivered):
                logger.info("removed codes from %d delivered outbox messages", n)
        except Exception:  # the database may be briefly away: the next start tries again
            logger.exception("could not redact delivered outbox messages")
        while True:
            self._wake.clear()  # before claiming: a wake() during this pass triggers the next one
            try:
                rows = await run_in_threadpool(self._claim)
                for row in rows:
                    await self._deliver(row)
                if rows:
                    continue  # there may be more due
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away: keep the loop alive
                logger.exception("outbox sender pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.mail_poll_interval_s)

    def _claim(self) -> list[OutboxMessage]:
        with Session(self.engine) as db:
            rows = outbox.claim_due(db, utcnow(), LEASE_S)
            for r in rows:
                db.expunge(r)
            return rows

    async def _deliver(self, row: OutboxMessage) -> None:
        assert row.id is not None
        try:
            msg = build_message(row, self.settings.mail_from)
            if self.smtp is None:
                path = await run_in_threadpool(self._write_eml, row, msg)
                logger.info("mail to %s, subject %r, written to %s", row.recipient, row.subject, path)
            else:
                await aiosmtplib.send(msg, hostname=self.smtp.host, port=self.smtp.port, username=self.smtp.username,
                                      password=self.smtp.password, use_tls=self.smtp.implicit_tls, start_tls=self.smtp.starttls,
                                      tls_context=self._tls, timeout=self.settings.smtp_timeout_s)
                # Not the subject itself: it carries the code, which then lives only in the recipient's mailbox.
                logger.info("mail to %s, subject %r, sent via %s", row.recipient, redact_subject(row.subject), self.smtp)
        except Exception as exc:
            attempts = row.attempts + 1
            delay = min(self.settings.mail_retry_max_s, self.settings.mail_retry_base_s * 2.0 ** min(attempts - 1, 30))
            logger.warning("mail %s to %s not delivered (attempt %d: %s); retrying in %.0f s", row.id, row.recipient, attempts,
                           type(exc).__name__, delay)
            await run_in_threadpool(self._mark_failed, row.id, attempts, delay, f"{type(exc).__name__}: {exc}")
            return
        await run_in_threadpool(self._mark_sent, row.id)

    def _write_eml(self, row: OutboxMessage, msg: EmailMessage) -> Path:
        self.outbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # messages carry codes: owner-only
        path = self.outbox_dir / f"{row.created_at:%Y%m%dT%H%M%S}-{row.id:06d}.eml"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msg.as_bytes())
        os.replace(tmp, path)  # readers never see half a message
        return path

    def _redact_delivered(self) -> int:
        with Session(self.engine) as db:
            return outbox.redact_delivered(db)

    def _mark_sent(self, msg_id: int) -> None:
        with Session(self.engine) as db:
            outbox.mark_sent(db, msg_id)

    def _mark_failed(self, msg_id: int, attempts: int, delay_s: float, error: str) -> None:
        with Session(self.engine) as db:
            outbox.mark_failed(db, msg_id, attempts, utcnow() + timedelta(seconds=delay_s), error)
