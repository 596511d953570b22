"""A real gateway (uvicorn on a free port, gRPC on another) over a test database; helpers to log in as each role."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from auth_api.main import create_app
from auth_api.state import Gateway
from mlstack.settings import Settings
from tests.fixtures.triton import TritonFixture, free_ports

ADMIN_PASSWORD = "admin-test-password-1"
PASSWORD = "correct horse battery"


@dataclass
class RunningGateway:
    url: str
    app: FastAPI
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.state.grpc_port}"

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def login(self, username: str, password: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def create_user(self, username: str, role: str = "user", password: str = PASSWORD) -> str:
        """Create a user as admin and return an access token for it."""
        with self.client(self.admin_token()) as c:
            r = c.post("/api/v1/users", json={"username": username, "password": password, "role": role})
        assert r.status_code == 201, r.text
        token = str(self.login(username, password)["access_token"])
        self.tokens[username] = token
        return token

    def admin_token(self) -> str:
        if "admin" not in self.tokens:
            self.tokens["admin"] = str(self.login("admin", ADMIN_PASSWORD)["access_token"])
        return self.tokens["admin"]

    def flush_history(self) -> None:
        """Wait until the history writer has written everything acknowledged so far."""
        import asyncio

        loop = self.app.state.loop
        asyncio.run_coroutine_threadsafe(self.state.writer.flush(), loop).result(timeout=30)


@contextlib.contextmanager
def run_gateway(settings: Settings) -> Iterator[RunningGateway]:
    """Serve ``create_app(settings)`` with uvicorn in a thread on a free port until the block ends."""
    import asyncio

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it; without it uvicorn on a pre-bound socket waits ~40 ms per response (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))

    def run() -> None:
        loop = asyncio.new_event_loop()
        app.state.loop = loop
        loop.run_until_complete(server.serve(sockets=[sock]))
        loop.close()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield RunningGateway(url=f"http://127.0.0.1:{port}", app=app, settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def gateway_settings(tmp_path: Path, db_url: str, *, repository: Path | None = None, triton: TritonFixture | None = None,
                     **overrides: Any) -> Settings:
    """Settings for a test gateway: tmp var_dir, the given DB, free gRPC port; Triton from the fixture or a dead port."""
    if triton is not None:
        tri = {"triton_host": triton.settings.triton_host, "triton_http_port": triton.settings.triton_http_port,
               "triton_grpc_port": triton.settings.triton_grpc_port}
        repository = triton.repository
    else:
        dead_http, dead_grpc = free_ports(2)  # nothing listens there: Triton is "down"
        tri = {"triton_host": "127.0.0.1", "triton_http_port": dead_http, "triton_grpc_port": dead_grpc}
    repo = repository or tmp_path / "empty_repo"
    repo.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"var_dir": tmp_path / "var", "repository": repo, "database_url": db_url,
                              "admin_password": ADMIN_PASSWORD, "gateway_grpc_port": 0, "gateway_host": "127.0.0.1",
                              "gateway_history_flush_interval_s": 0.05, **tri}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def gateway(tmp_path: Path, db_url: str) -> Iterator[RunningGateway]:
    """A gateway with no Triton behind it (API-only tests), on SQLite and on PostgreSQL."""
    with run_gateway(gateway_settings(tmp_path, db_url)) as gw:
        yield gw
