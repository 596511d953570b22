"""``python -m auth_api`` with ``MLSTACK_GATEWAY_WORKERS=2``: two processes on one port that behave as one gateway.

Both serve; one scrape of /metrics counts what each served; a rate limit holds for the workers together (Redis) or
as each worker's share (no Redis); a revocation through one worker reaches the other at once (Redis); ``kill -9`` of
one worker under load loses no acknowledged prediction, the other keeps serving and the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.gateway import ADMIN_PASSWORD, PASSWORD
from tests.fixtures.redis import forget
from tests.fixtures.triton import TritonFixture, free_ports

pytestmark = pytest.mark.slow
INFER = "/v2/models/iris-logreg/infer"
REDIS_URL = "redis://127.0.0.1:6379/7"


def body(rng: np.random.Generator | None = None) -> dict[str, Any]:
    data = (rng or np.random.default_rng()).uniform(0.5, 7, 4).round(3).tolist()
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": data}]}


class Workers:
    """The supervisor process and helpers to reach a given worker."""

    def __init__(self, tmp: Path, db_url: str, triton: TritonFixture, **env: str):
        self.tmp, self.db_url = tmp, db_url
        http_port, grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{http_port}"
        self.env = {**os.environ, "MLSTACK_VAR_DIR": str(tmp / "var"), "MLSTACK_REPOSITORY": str(triton.repository),
                    "MLSTACK_DATABASE_URL": db_url, "MLSTACK_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "MLSTACK_GATEWAY_HTTP_PORT": str(http_port), "MLSTACK_GATEWAY_GRPC_PORT": str(grpc_port),
                    "MLSTACK_TRITON_HTTP_PORT": str(triton.settings.triton_http_port),
                    "MLSTACK_TRITON_GRPC_PORT": str(triton.settings.triton_grpc_port),
                    "MLSTACK_GATEWAY_WORKERS": "2", "MLSTACK_GATEWAY_HISTORY_FLUSH_INTERVAL_S": "0.05", **env}
        if "MLSTACK_REDIS_URL" not in env:
            self.env.pop("MLSTACK_REDIS_URL", None)
        with open(tmp / "gateway.log", "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "auth_api"], env=self.env, cwd=tmp, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while len(self.pids()) < 2:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def log(self) -> str:
        return (self.tmp / "gateway.log").read_text()[-4000:]

    def pids(self, tries: int = 20) -> dict[str, str]:
        """worker index -> pid, from /health/live over fresh connections (the kernel spreads them)."""
        seen: dict[str, str] = {}
        for _ in range(tries):
            try:
                live = httpx.get(f"{self.url}/health/live", timeout=2).json()
            except httpx.HTTPError:
                continue
            seen[live["worker"]] = live["pid"]
        return seen

    def pinned(self, worker: str, **kw: Any) -> httpx.Client:
        """A keep-alive client whose one connection is served by ``worker``."""
        for _ in range(200):
            c = httpx.Client(base_url=self.url, limits=httpx.Limits(max_connections=1), timeout=10, **kw)
            if c.get("/health/live").json()["worker"] == worker:
                return c
            c.close()
        raise AssertionError(f"no connection landed on worker {worker}")

    def token(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def user_token(self, username: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/users", headers={"Authorization": f"Bearer {self.token()}"},
                       json={"username": username, "password": PASSWORD, "role": "user"})
        assert r.status_code == 201, r.text
        return self.token(username, PASSWORD)

    def scrape(self) -> str:
        r = httpx.get(f"{self.url}/metrics")
        assert r.status_code == 200
        return r.text

    def rows(self) -> list[str]:
        eng = create_engine(self.db_url)
        try:
            with eng.connect() as conn:
                return [r[0] for r in conn.execute(text("SELECT prediction_id FROM predictions WHERE status = 200"))]
        finally:
            eng.dispose()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[Any]:
    running: list[Workers] = []

    def make(**env: str) -> Workers:
        w = Workers(tmp_path, db_url, triton, **env)
        running.append(w)
        return w

    yield make
    for w in running:
        w.stop()


@pytest.fixture
def redis_db() -> str:
    forget(REDIS_URL, "mlstack:rl:*")
    return REDIS_URL


def infer_counts(scrape: str, status: str = "200") -> dict[str, float]:
    """worker -> requests counted on the v2 infer route with ``status``."""
    out: dict[str, float] = {}
    for m in re.finditer(r'^gateway_requests_total\{(.*)\} (\S+)$', scrape, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if "infer" in labels["route"] and labels["status"] == status:
            out[labels["worker"]] = out.get(labels["worker"], 0) + float(m.group(2))
    return out


def test_two_workers_serve_one_port_and_one_scrape_sees_both(start: Any) -> None:
    w = start()
    pids = w.pids()
    assert set(pids) == {"0", "1"} and len(set(pids.values())) == 2, pids
    token = w.token()
    n = 60
    for _ in range(n):  # a new connection each: both workers get some
        r = httpx.post(f"{w.url}{INFER}", json=body(), headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    scrape = w.scrape()
    counts = infer_counts(scrape)
    assert set(counts) == {"0", "1"} and sum(counts.values()) == n, counts
    scraped_pids = dict(re.findall(r'^gateway_worker_pid\{worker="(\d+)"\} (\d+)', scrape, re.M))
    assert scraped_pids == {k: v for k, v in pids.items()}, (scraped_pids, pids)
    # gRPC on the one port too, served by every worker (SO_REUSEPORT)
    import tritonclient.grpc as grpcclient

    grpc_port = w.env["MLSTACK_GATEWAY_GRPC_PORT"]
    for _ in range(6):
        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        client.close()


def _burst(url: str, token: str, n: int) -> list[int]:
    return [httpx.post(f"{url}{INFER}", json=body(), headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(n)]


def test_rate_limit_holds_across_workers_through_redis(start: Any, redis_db: str) -> None:
    burst = 10
    w = start(MLSTACK_REDIS_URL=redis_db, MLSTACK_GATEWAY_RATE_LIMIT_RPS="0.001",
              MLSTACK_GATEWAY_RATE_LIMIT_BURST=str(burst))
    token = w.user_token("limited")
    codes = _burst(w.url, token, 40)
    assert codes.count(200) == burst and codes.count(429) == 40 - burst, codes
    assert set(infer_counts(w.scrape(), "429")) == {"0", "1"}  # both workers refused: the bucket is one


def test_rate_limit_without_redis_is_each_workers_share(start: Any) -> None:
    burst = 10
    w = start(MLSTACK_GATEWAY_RATE_LIMIT_RPS="0.001", MLSTACK_GATEWAY_RATE_LIMIT_BURST=str(burst))
    token = w.user_token("limited")
    codes = _burst(w.url, token, 40)
    assert codes.count(200) == burst, codes
    assert infer_counts(w.scrape()) == {"0": burst / 2, "1": burst / 2}


def test_redis_down_falls_back_to_each_workers_share_and_readiness_says_so(start: Any) -> None:
    burst = 10
    (dead,) = free_ports(1)
    w = start(MLSTACK_REDIS_URL=f"redis://127.0.0.1:{dead}/0", MLSTACK_GATEWAY_RATE_LIMIT_RPS="0.001",
              MLSTACK_GATEWAY_RATE_LIMIT_BURST=str(burst))
    token = w.user_token("limited")
    codes = _burst(w.url, token, 30)
    assert set(codes) <= {200, 429} and codes.count(200) == burst, codes  # never a failed request: the local shares
    ready = httpx.get(f"{w.url}/health/ready").json()
    assert ready["status"] == "ready" and "redis" in ready["degraded"]
    assert "rate limits" in ready["dependencies"]["redis"]["impact"]


def test_key_revoked_through_one_worker_is_refused_by_the_other_within_100_ms(start: Any, redis_db: str) -> None:
    w = start(MLSTACK_REDIS_URL=redis_db)
    admin = {"Authorization": f"Bearer {w.token()}"}
    c0, c1 = w.pinned("0", headers=admin), w.pinned("1")
    with contextlib.closing(c0), contextlib.closing(c1):
        created = c0.post("/api/v1/api-keys", json={"name": "k", "scopes": ["predict"]})
        assert created.status_code == 201, created.text
        key = {"X-API-Key": created.json()["key"]}
        assert c1.post(INFER, json=body(), headers=key).status_code == 200  # worker 1 has the key cached now
        assert c0.delete(f"/api/v1/api-keys/{created.json()['id']}").status_code == 200
        t0 = time.monotonic()
        while (code := c1.post(INFER, json=body(), headers=key).status_code) == 200:
            assert time.monotonic() - t0 < 2.0, "worker 1 still accepts the revoked key"
        assert code == 401
        assert time.monotonic() - t0 < 0.1


async def _load(url: str, token: str, clients: int, duration_s: float) -> tuple[list[tuple[float, str]], int, int]:
    """(time and id of every acknowledged prediction, other answers, requests that got no answer)."""
    acked: list[tuple[float, str]] = []
    other = broken = 0
    deadline = time.monotonic() + duration_s
    rng = np.random.default_rng(2)

    async def client() -> None:
        nonlocal other, broken
        while time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
                while time.monotonic() < deadline:
                    try:
                        r = await c.post(INFER, json=body(rng))
                    except httpx.HTTPError:
                        broken += 1
                        break  # its worker died: reconnect (the kernel picks a live listener)
                    if r.status_code == 200:
                        acked.append((time.monotonic(), r.headers["x-prediction-id"]))
                    else:
                        other += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return acked, other, broken


def test_kill_9_of_one_worker_under_load(start: Any) -> None:
    w = start()
    token = w.token()
    victim_index, victim = "1", int(w.pids()["1"])

    async def run() -> tuple[list[tuple[float, str]], int, int, float]:
        load = asyncio.create_task(_load(w.url, token, 32, 6.0))
        await asyncio.sleep(2.0)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        acked, other, broken = await load
        return acked, other, broken, killed

    acked, other, broken, killed = asyncio.run(run())
    ids = [i for _, i in acked]
    assert other == 0 and len(ids) > 100, (len(ids), other)
    assert sum(1 for t, _ in acked if t > killed + 0.5) > 50, "the other worker kept serving"
    deadline = time.monotonic() + 60
    while len(rows := w.rows()) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    rows = w.rows()
    assert len(rows) == len(set(rows)), "no duplicates"
    assert set(ids) <= set(rows), f"{len(set(ids) - set(rows))} acknowledged predictions lost"
    # A record journaled just before the kill whose answer never left the process has a row the client never saw.
    assert len(rows) - len(ids) <= broken, (len(rows), len(ids), broken)
    deadline = time.monotonic() + 60
    while w.pids().get(victim_index) in (None, str(victim)):
        assert time.monotonic() < deadline, "the supervisor did not restart the killed worker\n" + w.log()
        time.sleep(0.2)
    assert w.proc.poll() is None


def test_a_deep_var_dir_still_gets_unix_socket_paths_that_fit(tmp_path: Path) -> None:
    from auth_api import workers

    short = workers.socket_directory(tmp_path / "var", 4242)
    assert short == (tmp_path / "var").absolute() / "gateway-workers" / "4242"
    deep = workers.socket_directory(tmp_path / ("nested-" * 20) / "var", 4242)  # a bench report folder, say
    assert len(os.fsencode(deep / "metrics-99.sock")) <= 107 and str(deep).startswith(tempfile.gettempdir())


def cache_hits(scrape: str, model: str) -> dict[str, float]:
    """worker -> prediction-cache hits of ``model``."""
    out: dict[str, float] = {}
    for m in re.finditer(r'^gateway_prediction_cache_hits_total\{(.*)\} (\S+)$', scrape, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("model") == model:
            out[labels["worker"]] = float(m.group(2))
    return out


def test_a_cache_clear_and_a_promote_flush_every_worker(start: Any, triton: TritonFixture) -> None:
    """In-process caches (no Redis): each worker holds its own copy of an answer; a clear through one worker and a
    promote through the other leave no worker answering from its cache."""
    from tests.fixtures.clones import clone_model, wait_ready

    name = f"wk-cache-{secrets.token_hex(3)}"
    clone_model(triton.repository, "iris-logreg", name, cache=True)
    wait_ready(triton.server.http_url, name)
    try:
        w = start()
        admin = {"Authorization": f"Bearer {w.token()}"}
        path, row = f"/v2/models/{name}/infer", body(np.random.default_rng(7))  # the same request every time

        def fill(before: dict[str, float]) -> dict[str, float]:
            """Requests until each worker has answered from its cache (again)."""
            for _ in range(100):  # a new connection each: the kernel spreads them over the workers
                assert httpx.post(f"{w.url}{path}", json=row, headers=admin).status_code == 200
                hits = cache_hits(w.scrape(), name)
                if all(hits.get(i, 0) > before.get(i, 0) for i in ("0", "1")):
                    return hits
            raise AssertionError(f"both workers never answered from their caches: {cache_hits(w.scrape(), name)}")

        hits = fill({})
        c0, c1 = w.pinned("0", headers=admin), w.pinned("1", headers=admin)
        with contextlib.closing(c0), contextlib.closing(c1):
            policy = c1.get(f"/api/v1/models/{name}/cache").json()
            assert policy["enabled"] is True and policy["hits"] == sum(hits.values()), (policy, hits)
            assert policy["workers"] == policy["workers_counted"] == 2
            cleared = c0.post(f"/api/v1/models/{name}/cache/clear")
            assert cleared.status_code == 200, cleared.text
            assert cleared.json() == {"name": name, "cleared": 2, "workers": 2, "workers_cleared": 2, "backend": "memory"}
            for c in (c0, c1):
                assert c.post(path, json=row).status_code == 200
            assert cache_hits(w.scrape(), name) == hits, "a worker answered from a cache the clear should have emptied"
            hits = fill(hits)
            promoted = c1.post(f"/api/v1/models/{name}/versions/1/promote")  # a serving change through the other worker
            assert promoted.status_code == 200, promoted.text
            for c in (c0, c1):
                assert c.post(path, json=row).status_code == 200
            assert cache_hits(w.scrape(), name) == hits, "a worker answered from its cache after the promote"
    finally:
        shutil.rmtree(triton.repository / name, ignore_errors=True)
