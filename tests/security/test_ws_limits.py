"""WebSocket limits against a real gateway and Triton: message size (1009), connections per user, idle timeout, the
per-user frame quota shared with REST, an expired token mid-stream (1008), and a client that never reads its answers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from loadtests.ws_frames import digit_pngs
from tests.auth_api.ws_client import close_code, open_ws, recv, send, until, ws_url
from tests.fixtures.db import fresh_database
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow


@pytest.fixture
def limited(tmp_path: Path, triton: TritonFixture, request: pytest.FixtureRequest) -> Iterator[RunningGateway]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    with fresh_database("sqlite", tmp_path) as url, run_gateway(gateway_settings(tmp_path, url, triton=triton, **overrides)) as gw:
        yield gw


@pytest.mark.parametrize("limited", [{"gateway_ws_max_message_bytes": 4096, "gateway_ws_max_connections_per_user": 2,
                                      "gateway_ws_idle_timeout_s": 1.0}], indirect=True)
def test_size_connections_and_idle(limited: RunningGateway) -> None:
    token = limited.create_user("ws_limits")
    with open_ws(limited, token) as ws:
        until(ws, "ready")
        ws.send(b"\0" * 5000)
        code, seen = close_code(ws)
        assert code == 1009 and seen[-1]["error"]["code"] == "message_too_big"
    with open_ws(limited, token) as ws:  # beyond twice the limit the server never buffers it: closed on arrival
        until(ws, "ready")
        ws.send(b"\0" * 50_000)
        code, _ = close_code(ws)
        assert code == 1009
    with open_ws(limited, token) as a, open_ws(limited, token) as b:
        until(a, "ready")
        until(b, "ready")
        with open_ws(limited, token) as c:
            code, seen = close_code(c)
            assert code == 1008 and seen[0]["error"]["code"] == "too_many_connections"
        send(a, command="ping")  # the open ones are unaffected
        assert until(a, "pong")
        start = time.monotonic()
        code, seen = close_code(b)  # b sends nothing: closed after the idle timeout
        assert code == 1001 and 0.5 < time.monotonic() - start < 5 and seen[-1]["error"]["code"] == "idle_timeout"
    metrics = httpx.get(limited.url + "/metrics").text
    assert 'gateway_ws_closed_total{reason="too_big"} 1.0' in metrics and "gateway_ws_connections 0.0" in metrics


@pytest.mark.parametrize("limited", [{"gateway_ws_idle_timeout_s": 1.0}], indirect=True)
def test_pings_keep_an_idle_stream_open(limited: RunningGateway) -> None:
    token = limited.create_user("ws_pinger")
    with open_ws(limited, token) as ws:
        until(ws, "ready")
        start = time.monotonic()
        while time.monotonic() - start < 3.0:  # three idle timeouts long, a ping every 0.4 s: never closed
            send(ws, command="ping")
            assert until(ws, "pong", timeout=2) == {"type": "pong", "request_id": None}
            time.sleep(0.4)
        code, seen = close_code(ws)  # silence: closed after the idle timeout
        assert code == 1001 and seen[-1]["error"]["code"] == "idle_timeout"


@pytest.mark.parametrize("limited", [{"gateway_rate_limit_rps": 0.1, "gateway_rate_limit_burst": 3}], indirect=True)
def test_frames_share_the_rest_quota(limited: RunningGateway) -> None:
    token = limited.create_user("ws_quota")  # its login does not use the inference quota
    with open_ws(limited, token) as ws:
        until(ws, "ready")
        send(ws, command="config", model="digits-cnn")
        until(ws, "config")
        answered = dropped = 0
        for _label, png in digit_pngs()[:8]:
            ws.send(png)
            time.sleep(0.03)
        deadline = time.monotonic() + 5
        while answered + dropped < 8 and time.monotonic() < deadline:
            msg = recv(ws)
            answered += msg["type"] == "prediction"
            dropped += msg.get("count", 0) if msg["type"] == "dropped" else 0
        assert answered == 2 and dropped == 6  # the connection's own auth took one of the 3 tokens
    with limited.client(token) as c:  # the same bucket as REST
        r = c.post("/api/v1/predict/iris-svm", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert r.status_code == 429


@pytest.mark.parametrize("limited", [{"gateway_access_token_ttl_s": 4}], indirect=True)
def test_expired_token_mid_stream(limited: RunningGateway) -> None:
    token = limited.create_user("ws_expiry")
    issued = time.time()
    with open_ws(limited, token) as ws:
        until(ws, "ready")
        time.sleep(max(0.0, issued + 5.0 - time.time()))  # the token is past its expiry (and its second) now
        send(ws, command="ping")
        code, seen = close_code(ws)
        assert code == 1008 and seen[0]["type"] == "error" and "expired" in seen[0]["error"]["code"]


@pytest.mark.parametrize("limited", [{"gateway_ws_send_queue": 8}], indirect=True)
def test_client_that_does_not_read_is_closed(limited: RunningGateway) -> None:
    token = limited.create_user("ws_slow")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel absorbs little of what is not read
    host, port = limited.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    msg = json.dumps({"command": "model_info", "model": "digits-cnn"})
    deadline = time.monotonic() + 60
    closed = False
    with connect(ws_url(limited), sock=sock, additional_headers={"Authorization": f"Bearer {token}"}, max_queue=1) as ws:
        try:
            while time.monotonic() < deadline and not closed:
                for _ in range(200):
                    ws.send(msg)  # never recv(): the answers pile up in the gateway
                metrics = httpx.get(limited.url + "/metrics").text
                closed = 'gateway_ws_closed_total{reason="slow_client"} 1.0' in metrics
        except Exception:  # the gateway closed the socket under our sends
            closed = True
        finally:
            sock.close()
    assert closed
    deadline = time.monotonic() + 10
    while "gateway_ws_connections 0.0" not in httpx.get(limited.url + "/metrics").text:
        assert time.monotonic() < deadline, "the slow client's connection was never released"
        time.sleep(0.1)


WS_REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own for the connection counts


def test_connections_per_user_hold_for_two_gateways_sharing_redis(tmp_path: Path) -> None:
    """Two gateway processes on one database and one Redis, a limit of 2: the user's third WebSocket is refused by
    either gateway, and a close through one frees a place on the other."""
    from tests.fixtures.redis import forget

    forget(WS_REDIS_URL, "mlstack:ws:*")
    common: dict[str, Any] = {"redis_url": WS_REDIS_URL, "jwt_secret": "one signing key for both gateways, 32+ bytes",
                              "gateway_ws_max_connections_per_user": 2}
    with fresh_database("sqlite", tmp_path) as url, \
            run_gateway(gateway_settings(tmp_path / "a", url, **common)) as a, \
            run_gateway(gateway_settings(tmp_path / "b", url, **common)) as b:
        token = a.create_user("ws_shared")

        def refused(gw: RunningGateway) -> bool:
            with open_ws(gw, token) as ws:
                first = recv(ws)
                if first["type"] == "ready":
                    return False
                code, _ = close_code(ws)
                return code == 1008 and first["error"]["code"] == "too_many_connections"

        with open_ws(a, token) as one:
            until(one, "ready")
            with open_ws(b, token) as two:
                until(two, "ready")
                assert refused(a) and refused(b)  # per process this would have been 2 on each
            deadline = time.monotonic() + 5  # two closed (on b): its place is free on a once b has seen the close
            while refused(a):
                assert time.monotonic() < deadline, "a close on one gateway never freed a place on the other"
                time.sleep(0.1)
    forget(WS_REDIS_URL, "mlstack:ws:*")


def test_a_dead_processes_connections_stop_counting_and_redis_down_counts_locally() -> None:
    """The counter itself against the real Redis: a process that vanishes without closing (kill -9) stops counting
    once its liveness expires; with Redis unreachable each process enforces the limit on its own."""
    import asyncio

    from auth_api.ws.open_count import OpenConnections
    from tests.fixtures.redis import forget
    from tests.fixtures.triton import free_ports

    forget(WS_REDIS_URL, "mlstack:ws:*")

    async def run() -> None:
        dead, alive = OpenConnections(WS_REDIS_URL, ttl_s=1.0), OpenConnections(WS_REDIS_URL, ttl_s=1.0)
        assert await dead.acquire("u:1", 2) and await dead.acquire("u:1", 2)
        assert not await alive.acquire("u:1", 2)
        assert dead._heartbeat is not None
        dead._heartbeat.cancel()  # killed: no heartbeat, no release, no goodbye
        deadline = asyncio.get_running_loop().time() + 10
        while not await alive.acquire("u:1", 2):
            assert asyncio.get_running_loop().time() < deadline, "a dead process's connections kept counting"
            await asyncio.sleep(0.2)
        await alive.release("u:1")
        await alive.close()
        await dead.client.aclose()
        (port,) = free_ports(1)
        down = OpenConnections(f"redis://127.0.0.1:{port}/0")
        assert [await down.acquire("u:1", 2) for _ in range(3)] == [True, True, False]
        await down.release("u:1")
        assert await down.acquire("u:1", 2)
        await down.close()

    asyncio.run(run())
    forget(WS_REDIS_URL, "mlstack:ws:*")
