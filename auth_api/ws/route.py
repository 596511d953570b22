"""``/api/v1/ws``: authenticate (header, ``Sec-WebSocket-Protocol: bearer, <token>``, or a first ``auth`` message), then
hand the socket to a Connection. Refusals are an error message and close 1008, never an HTTP error a browser hides."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket

from auth_api.authn import Principal
from auth_api.core.errors import Forbidden, RateLimited, Unauthorized
from auth_api.proxy.authorize import authorize
from auth_api.state import Gateway
from auth_api.ws.connection import Connection
from auth_api.ws.open_count import open_connections

logger = logging.getLogger(__name__)
router = APIRouter(tags=["stream"])


@router.websocket("/ws")
async def stream(ws: WebSocket) -> None:
    """Real-time predictions: see the README's "Streaming" section for the messages."""
    gw: Gateway = ws.app.state.gateway
    authorization, api_key = ws.headers.get("authorization"), ws.headers.get("x-api-key")
    offered = [p.strip() for p in ws.scope.get("subprotocols") or []]
    subprotocol = None
    if len(offered) >= 2 and offered[0].lower() == "bearer":
        subprotocol = offered[0]  # echo the scheme, never the token
        authorization = authorization or f"Bearer {offered[1]}"
    await ws.accept(subprotocol=subprotocol)
    client_ip = ws.client.host if ws.client else None
    if not authorization and not api_key and not gw.settings.gateway_allow_anonymous:
        authorization = await _auth_message(ws, gw)
        if authorization is None:
            return
    try:
        principal = await authorize(gw, authorization, api_key, client_ip)
    except (Unauthorized, Forbidden, RateLimited) as exc:
        await _refuse(ws, gw, exc.code, exc.message, "auth")
        return
    key = f"u:{principal.user_id}" if principal.user_id is not None else f"ip:{client_ip}"
    counter = open_connections(gw.extras, gw.settings.redis_url)  # every gateway process together with Redis
    limit = gw.settings.gateway_ws_max_connections_per_user
    if not await counter.acquire(key, limit):
        await _refuse(ws, gw, "too_many_connections", f"at most {limit} open WebSockets per user", "too_many_connections")
        return
    gw.metrics.ws.connections.inc()
    try:
        conn = Connection(ws, gw, principal, authorization, api_key, client_ip)
        conn.emit(_ready(principal, gw))
        await conn.serve()
    finally:
        gw.metrics.ws.connections.dec()
        await counter.release(key)


async def _auth_message(ws: WebSocket, gw: Gateway) -> str | None:
    """The token of a first ``{"command": "auth", "token": ...}`` message, or None after refusing the connection."""
    timeout = gw.settings.gateway_ws_auth_timeout_s
    try:
        msg = await asyncio.wait_for(ws.receive(), timeout)
    except TimeoutError:
        await _refuse(ws, gw, "missing_credentials", f"authenticate within {timeout:g} s (header, subprotocol or an "
                      "'auth' message)", "auth")
        return None
    if msg["type"] == "websocket.disconnect":
        return None
    text = msg.get("text") or ""
    doc: Any = None
    if len(text) <= 16384:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
    token = doc.get("token") if isinstance(doc, dict) and doc.get("command") == "auth" else None
    if not isinstance(token, str) or not token:
        gw.metrics.auth_failures.labels("missing_credentials").inc()
        await _refuse(ws, gw, "missing_credentials", "the first message must be {\"command\": \"auth\", \"token\": ...}", "auth")
        return None
    return f"Bearer {token}"


async def _refuse(ws: WebSocket, gw: Gateway, code: str, message: str, reason: str) -> None:
    gw.metrics.ws.closed.labels(reason).inc()
    try:
        await ws.send_json({"type": "error", "request_id": None, "error": {"code": code, "message": message}})
        await ws.close(1008, reason)
    except Exception:  # the client is gone already
        logger.debug("client left before its refusal was sent")


def _ready(p: Principal, gw: Gateway) -> dict[str, Any]:
    s = gw.settings
    return {"type": "ready", "user": p.username, "max_in_flight": s.gateway_ws_max_in_flight,
            "max_message_bytes": s.gateway_ws_max_message_bytes}
