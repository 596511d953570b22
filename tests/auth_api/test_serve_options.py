"""How ``python -m auth_api`` wraps the app for uvicorn: start-up hooks run before the port serves, requests reach the
app unwrapped, and X-Forwarded-For is believed only from the proxies the settings name (uvicorn's default believed any
local client, which could then pick the address that per-IP login throttles see)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
import uvloop

from auth_api.http_protocol import CoalescingHttpToolsProtocol
from auth_api.serve import AfterStartup, uvicorn_options
from mlstack.settings import Settings

events: list[str] = []


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            events.append("app started")
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    events.append("request")
    body = (scope["client"][0] if scope.get("client") else "-").encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _hook() -> None:
    events.append("hook")


@contextmanager
def _serve(settings: Settings) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(AfterStartup(app, [_hook]), http=CoalescingHttpToolsProtocol, **uvicorn_options(settings))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: uvloop.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


def test_hooks_run_before_serving_and_forwarded_headers_are_ignored_by_default(tmp_path: Path) -> None:
    events.clear()
    with _serve(Settings(var_dir=tmp_path)) as url:
        r = httpx.get(url + "/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 200
    assert r.text == "127.0.0.1", "a client on loopback chose its own address"
    assert events == ["app started", "hook", "request"]


def test_forwarded_headers_from_a_configured_proxy_are_believed(tmp_path: Path) -> None:
    with _serve(Settings(var_dir=tmp_path, gateway_forwarded_allow_ips=["127.0.0.1"])) as url:
        r = httpx.get(url + "/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.text == "203.0.113.9"
