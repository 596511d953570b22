"""One authenticated WebSocket: a reader, K frame workers and a sender, with bounded memory whatever the client does.

Frames beyond the K in flight wait in ONE slot: a newer frame replaces the waiting one (the latest frame wins) and the
client hears how many were dropped at most once a second. Answers go through a bounded queue; a client that lets it
fill (it does not read) is closed, so the gateway never buffers for it without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections import deque
from typing import Any

from starlette.websockets import WebSocket

from auth_api.authn import Principal
from auth_api.core.errors import InvalidInput, RateLimited, Unauthorized
from auth_api.jobs.ownership import ensure_visible
from auth_api.journal import new_prediction_id
from auth_api.proxy.authorize import take
from auth_api.proxy.records import base_record, failure_record, journal
from auth_api.proxy.summaries import summarize_outputs
from auth_api.state import Gateway
from auth_api.stored_inputs import capture, keep_mode
from auth_api.ws import commands, frames
from mlstack.errors import MlstackError

logger = logging.getLogger(__name__)
NOTICE_EVERY_S = 1.0
CLOSE_GRACE_S = 2.0  # longest wait for the last messages and the close frame to leave
_CLOSE = object()  # sender sentinel: everything queued before it is sent, then the socket closes


class Connection:
    def __init__(self, ws: WebSocket, gw: Gateway, principal: Principal, authorization: str | None, api_key: str | None,
                 client_ip: str | None):
        s = gw.settings
        self.ws, self.gw, self.principal, self.client_ip = ws, gw, principal, client_ip
        self.authorization, self.api_key = authorization, api_key
        self.metrics = gw.metrics.ws
        self.k = s.gateway_ws_max_in_flight
        self.max_bytes = s.gateway_ws_max_message_bytes
        self.waiting: deque[frames.Frame] = deque()
        self.wake = asyncio.Event()
        self.outbox: asyncio.Queue[Any] = asyncio.Queue(s.gateway_ws_send_queue)
        self.model: str | None = None
        self.top_k = 3
        self.unreported = 0
        self.last_notice = -math.inf
        self._notice: asyncio.TimerHandle | None = None
        self.closing: tuple[int, str] | None = None
        self.done = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------------------------
    async def serve(self) -> None:
        tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._reader()),
                 *(asyncio.create_task(self._worker()) for _ in range(self.k))]
        try:
            await self.done.wait()
        finally:
            if self._notice is not None:
                self._notice.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.closing is not None:
                # A client that stopped reading blocks the close frame too: bounded, then the handler returns anyway.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(*self.closing), CLOSE_GRACE_S)

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close after what is queued has been sent (``flush``) or at once (the queue is what overflowed)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        self.metrics.closed.labels(reason.split(":")[0]).inc()
        if flush:
            try:
                self.outbox.put_nowait(_CLOSE)
                return
            except asyncio.QueueFull:
                pass
        self.done.set()

    def emit(self, msg: dict[str, Any]) -> None:
        if self.closing is not None:
            return
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            logger.info("closing a WebSocket whose client does not read its answers (%s)", self.principal.username)
            self.close(1008, "slow_client: answers are not being read", flush=False)

    def error(self, exc: MlstackError, request_id: Any = None, **extra: Any) -> None:
        self.emit({"type": "error", "request_id": request_id, **extra, "error": {"code": exc.code, "message": exc.message}})

    async def _sender(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is _CLOSE:
                self.done.set()
                return
            try:
                await self.ws.send_text(json.dumps(msg, separators=(",", ":")))
            except Exception:  # the client went away: the reader sees the disconnect too
                self.done.set()
                return

    # --- reading -----------------------------------------------------------------------------------------------------
    async def _reader(self) -> None:
        idle = self.gw.settings.gateway_ws_idle_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), idle)
            except TimeoutError:
                self.emit({"type": "error", "request_id": None, "error": {"code": "idle_timeout",
                                                                         "message": f"no message for {idle:g} s"}})
                self.close(1001, "idle: no message within the idle timeout")
                return
            except Exception:
                self.done.set()
                return
            if msg["type"] == "websocket.disconnect":
                self.done.set()
                return
            data = msg.get("bytes") if msg.get("bytes") is not None else msg.get("text")
            if data is None:
                continue
            if len(data) > self.max_bytes:
                self.emit({"type": "error", "request_id": None, "error": {
                    "code": "message_too_big", "message": f"messages are limited to {self.max_bytes} bytes"}})
                self.close(1009, "too_big: message larger than the limit")
                return
            if not await self._still_authorized():
                return
            request_id = None
            try:
                if isinstance(data, bytes):
                    self._binary(data)
                else:
                    doc = _parse(data)
                    request_id = doc.get("request_id")
                    await self._command(doc, len(data))
            except MlstackError as exc:
                self.error(exc, request_id)

    async def _still_authorized(self) -> bool:
        """The live account and credentials, re-read for every message: an expired or revoked one ends the stream."""
        if self.principal.kind == "anonymous":
            return True
        try:
            p = await self.gw.auth.resolve(self.authorization, self.api_key)
        except Unauthorized as exc:
            self.error(exc)
            self.close(1008, "auth: credentials expired or revoked")
            return False
        if p is not None:
            self.principal = p
        return True

    def _binary(self, data: bytes) -> None:
        if self.model is None:
            raise InvalidInput("binary frames need a model: send {\"command\": \"config\", \"model\": ...} first",
                               code="no_model")
        self.admit(frames.Frame(model=self.model, received=time.perf_counter(), image=data, top_k=self.top_k, size=len(data)))

    async def _command(self, doc: dict[str, Any], size: int) -> None:
        cmd, rid = doc.get("command"), doc.get("request_id")
        if cmd == "predict":
            self.admit(commands.predict_frame(doc, self.model, self.top_k, size))
            return
        if cmd == "ping":
            out: dict[str, Any] = {"type": "pong"}
        elif cmd in ("labels", "emotions"):
            out = commands.labels(self.gw, doc, self.model)
        elif cmd == "model_info":
            out = await commands.model_info(self.gw, doc, self.model)
        elif cmd == "health":
            out = await commands.health(self.gw)
        elif cmd == "config":
            out = self._config(doc)
        elif cmd == "auth":
            out = await self._reauth(doc)
        else:
            raise InvalidInput(f"unknown command {str(cmd)[:32]!r}; commands: predict, config, labels, emotions, model_info, "
                               "health, ping, auth", code="unknown_command")
        out["request_id"] = rid
        self.emit(out)

    def _config(self, doc: dict[str, Any]) -> dict[str, Any]:
        model = commands.model_name(doc["model"]) if doc.get("model") is not None else self.model
        if model is not None:
            self.gw.catalog.card(model)  # ModelNotFound now, not at the first frame
        self.model, self.top_k = model, commands.top_k(doc.get("top_k"), self.top_k)
        return {"type": "config", "model": self.model, "top_k": self.top_k, "max_in_flight": self.k,
                "max_message_bytes": self.max_bytes}

    async def _reauth(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A fresh token mid-stream (before the old one expires) keeps the connection going."""
        token = doc.get("token")
        if not isinstance(token, str) or not token:
            raise InvalidInput("'auth' needs a 'token'", code="invalid_payload")
        p = await self.gw.auth.resolve(f"Bearer {token}", None)
        if p is None or p.user_id != self.principal.user_id:
            raise Unauthorized("a connection stays with the account it was opened by", code="account_mismatch")
        self.principal, self.authorization, self.api_key = p, f"Bearer {token}", None
        return {"type": "authenticated", "user": p.username}

    # --- frames ------------------------------------------------------------------------------------------------------
    def admit(self, frame: frames.Frame) -> None:
        self.metrics.received.inc()
        if len(self.waiting) >= 1:
            self.waiting.popleft()
            self.drop("backpressure")
        self.waiting.append(frame)
        self.wake.set()

    def drop(self, reason: str) -> None:
        self.metrics.dropped.labels(reason).inc()
        self.unreported += 1
        if self._notice is None:
            delay = max(0.0, self.last_notice + NOTICE_EVERY_S - time.monotonic())
            self._notice = asyncio.get_running_loop().call_later(delay, self._send_notice)

    def _send_notice(self) -> None:
        self._notice = None
        if self.unreported:
            self.emit({"type": "dropped", "count": self.unreported})
            self.unreported = 0
            self.last_notice = time.monotonic()

    async def _worker(self) -> None:
        while True:
            while not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            frame = self.waiting.popleft()
            try:
                await self._answer(frame)
            except Exception:  # one frame's bug never ends the stream
                logger.exception("WebSocket frame failed")
                self.emit({"type": "error", "request_id": frame.request_id,
                           "error": {"code": "internal_error", "message": "internal error"}})

    async def _answer(self, frame: frames.Frame) -> None:
        gw, p = self.gw, self.principal
        try:
            await take(gw, p.bucket if p.kind != "anonymous" else f"ip:{self.client_ip or 'unknown'}")
        except RateLimited:
            self.drop("rate_limited")
            return
        gw.metrics.count_principal(p.kind, p.user_id)
        pid = new_prediction_id()
        try:
            ensure_visible(gw.extras, p, frame.model)  # another user's model answers as a missing one
            ans = await frames.run(gw, frame)
        except MlstackError as exc:
            total = time.perf_counter() - frame.received
            with contextlib.suppress(MlstackError):
                journal(gw.journal, pid, failure_record(p, model=frame.model, version=str(frame.version) if frame.version else None,
                                                        protocol="ws", status=int(exc.status), code=str(exc.code),
                                                        total_s=total, upstream_s=0.0, client_ip=self.client_ip))
            self.metrics.failed.inc()
            self.error(exc, frame.request_id, prediction_id=pid, model=frame.model)
            return
        total = time.perf_counter() - frame.received
        keep = keep_mode(gw.settings, "ws", frame.model)
        rec = base_record(p, model=frame.model, version=ans.version, protocol="ws", status=200, total_s=total,
                          upstream_s=ans.upstream_s, client_ip=self.client_ip)
        if keep != "none":
            rec.update(input_shape=json.dumps(list(ans.tensor.shape)), input_dtype=ans.dtype,
                       input_sha256=hashlib.sha256(ans.tensor.tobytes()).hexdigest(),
                       **summarize_outputs(ans.outputs, ans.card.labels))
        try:
            journal(gw.journal, pid, rec)
        except MlstackError as exc:  # not recorded -> not acknowledged
            self.metrics.failed.inc()
            self.error(exc, frame.request_id, model=frame.model)
            return
        if keep == "input" and ans.raw_image is not None:
            capture(gw, pid, p.user_id, ans.raw_image, _content_type(ans.raw_image))
        self.metrics.answered.inc()
        self.metrics.latency.observe(total)
        self.emit({"type": "prediction", "request_id": frame.request_id, "prediction_id": pid, "model": frame.model,
                   "version": ans.version, **ans.body, "latency_ms": round(total * 1000.0, 2)})


def _parse(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("messages are JSON objects with a 'command' (or binary image frames)", code="invalid_json") from exc
    if not isinstance(doc, dict):
        raise InvalidInput("messages are JSON objects with a 'command'", code="invalid_json")
    return doc


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/octet-stream"
