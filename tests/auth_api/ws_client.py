"""Helpers of the WebSocket tests: a sync client on a gateway, and collecting messages until a type arrives."""

from __future__ import annotations

import json
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.gateway import RunningGateway


def ws_url(gw: RunningGateway) -> str:
    return gw.url.replace("http://", "ws://") + "/api/v1/ws"


def open_ws(gw: RunningGateway, token: str | None = None, **kw: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(ws_url(gw), additional_headers=headers, open_timeout=10, **kw)


def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return doc


def until(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of type ``kind`` (others are skipped)."""
    while True:
        msg = recv(ws, timeout)
        if msg["type"] == kind:
            return msg


def close_code(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; (its close code, the messages seen before)."""
    seen = []
    try:
        while True:
            seen.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), seen


def send(ws: ClientConnection, **msg: Any) -> None:
    ws.send(json.dumps(msg))
