"""Crashes of real processes: ``python -m auth_api`` with the external ``python -m auth_api.ingester``.

``kill -9`` of the gateway under 32 concurrent clients loses no acknowledged prediction and duplicates none; ``kill -9``
of the ingester in the middle of a backlog, then a restart, neither; and with the external ingester, history answers
``GET /api/v1/history/{id}`` right after every prediction.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.gateway import ADMIN_PASSWORD
from tests.fixtures.triton import TritonFixture, free_ports

pytestmark = pytest.mark.slow
INFER = "/v2/models/iris-logreg/infer"
errors: list[str] = []  # why clients stopped (the last run), for failure messages


class Stack:
    def __init__(self, tmp: Path, db_url: str, triton: TritonFixture):
        self.tmp, self.db_url = tmp, db_url
        self.http_port, grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.env = {**os.environ, "MLSTACK_VAR_DIR": str(tmp / "var"), "MLSTACK_REPOSITORY": str(triton.repository),
                    "MLSTACK_DATABASE_URL": db_url, "MLSTACK_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "MLSTACK_GATEWAY_HTTP_PORT": str(self.http_port), "MLSTACK_GATEWAY_GRPC_PORT": str(grpc_port),
                    "MLSTACK_TRITON_HTTP_PORT": str(triton.settings.triton_http_port),
                    "MLSTACK_TRITON_GRPC_PORT": str(triton.settings.triton_grpc_port),
                    "MLSTACK_GATEWAY_INGESTER": "external", "MLSTACK_GATEWAY_HISTORY_FLUSH_INTERVAL_S": "0.02",
                    "MLSTACK_GATEWAY_HISTORY_BATCH_SIZE": "25", "MLSTACK_INGESTER_METRICS_PORT": "0",
                    # one process, one journal writer (N workers: tests/auth_api/test_workers.py)
                    "MLSTACK_GATEWAY_WORKERS": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.gateway: subprocess.Popen[bytes] | None = None
        self.ingester: subprocess.Popen[bytes] | None = None

    def _spawn(self, module: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module], env=self.env, cwd=self.tmp, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_gateway(self) -> None:
        self.gateway = self._spawn("auth_api", "gateway.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.gateway.poll() is None and time.monotonic() < deadline, (self.tmp / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)

    def start_ingester(self) -> None:
        self.ingester = self._spawn("auth_api.ingester", "ingester.log")

    def token(self) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def rows(self) -> list[str]:
        eng = create_engine(self.db_url)
        try:
            with eng.connect() as conn:
                return [r[0] for r in conn.execute(text("SELECT prediction_id FROM predictions WHERE status = 200"))]
        finally:
            eng.dispose()

    def wait_rows(self, n: int, timeout_s: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.rows()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # anything beyond n would show up now
        return self.rows()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def stack(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[Stack]:
    s = Stack(tmp_path, db_url, triton)
    try:
        yield s
    finally:
        s.stop()


async def _load(url: str, token: str, clients: int, stop_after_s: float, until: int | None = None,
                acked: list[str] | None = None) -> tuple[list[str], int, int]:
    """``clients`` concurrent callers until the gateway stops answering, ``until`` successes or ``stop_after_s``:
    (ids of acknowledged successes — appended to ``acked`` as they come —, other answers, requests with no answer).
    Counting successes rather than seconds keeps the tests meaningful on a loaded box."""
    acked = [] if acked is None else acked
    errors.clear()
    other = broken = 0
    deadline = time.monotonic() + stop_after_s
    rng = np.random.default_rng(1)
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        nonlocal other, broken
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as c:
            while time.monotonic() < deadline and (until is None or len(acked) < until):
                body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                    "data": rng.uniform(0.5, 7, 4).round(3).tolist()}]}
                try:
                    r = await c.post(INFER, json=body)
                except httpx.HTTPError as exc:
                    broken += 1
                    errors.append(repr(exc))
                    return  # the gateway is gone
                if r.status_code == 200:
                    acked.append(r.headers["x-prediction-id"])
                else:
                    other += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return acked, other, broken


def test_kill_9_of_the_gateway_under_load_loses_no_acknowledged_prediction(stack: Stack) -> None:
    stack.start_ingester()
    stack.start_gateway()
    token = stack.token()
    gw = stack.gateway
    assert gw is not None

    async def run() -> tuple[list[str], int, int]:
        acked: list[str] = []
        load = asyncio.create_task(_load(stack.url, token, 32, 60, acked=acked))
        deadline = time.monotonic() + 45
        while len(acked) < 300 and time.monotonic() < deadline and not load.done():
            await asyncio.sleep(0.01)
        gw.send_signal(signal.SIGKILL)  # mid-load: requests in flight, records just written, none flushed by anyone
        return await load

    acked, other, broken = asyncio.run(run())
    assert gw.wait(timeout=10) == -signal.SIGKILL
    assert len(acked) > 200 and other == 0, (len(acked), other, errors[:3])
    rows = stack.wait_rows(len(acked))
    assert len(rows) == len(set(rows)), "no duplicates"
    assert set(acked) <= set(rows), f"{len(set(acked) - set(rows))} acknowledged predictions lost"
    # A record written just before the kill whose answer never left the process has a row the client never saw.
    assert len(rows) - len(acked) <= broken, (len(rows), len(acked), broken)
    # A restarted gateway journals into a segment of its own; the dead one's segment is ingested and deleted.
    stack.start_gateway()
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post(INFER, json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5, 3, 1, 0.2]}]})
        assert r.status_code == 200
        assert c.get(f"/api/v1/history/{r.headers['x-prediction-id']}").status_code == 200
    assert len(list((stack.tmp / "var" / "journal").glob("*.jnl"))) == 1


def test_kill_9_of_the_ingester_mid_backlog_then_restart(stack: Stack) -> None:
    stack.start_gateway()  # no ingester yet: a backlog builds up in the journal
    token = stack.token()
    acked, other, broken = asyncio.run(_load(stack.url, token, 16, 60, until=600))
    assert len(acked) >= 600 and other == 0 and broken == 0
    stack.start_ingester()
    ing = stack.ingester
    assert ing is not None
    deadline = time.monotonic() + 60
    while not 0 < len(stack.rows()) < len(acked):  # kill it with part of the backlog done
        assert time.monotonic() < deadline and ing.poll() is None
        time.sleep(0.01)
    ing.send_signal(signal.SIGKILL)
    ing.wait(timeout=10)
    partial = len(stack.rows())
    assert 0 < partial < len(acked), partial
    stack.start_ingester()
    rows = stack.wait_rows(len(acked))
    assert len(rows) == len(acked) == len(set(rows)) and set(rows) == set(acked)


def test_read_your_writes_with_the_external_ingester(stack: Stack) -> None:
    stack.start_ingester()
    stack.start_gateway()
    token = stack.token()
    rng = np.random.default_rng(2)
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        for i in range(50):
            r = c.post(INFER, json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                "data": rng.uniform(0.5, 7, 4).round(3).tolist()}]})
            assert r.status_code == 200
            h = c.get(f"/api/v1/history/{r.headers['x-prediction-id']}")
            assert h.status_code == 200, (i, h.text)
            assert h.json()["output_label"], "summarised by the ingester"
    gw = stack.gateway
    assert gw is not None
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(timeout=30) in (0, -signal.SIGTERM)
