"""`python -m auth_api` as its own process (how `mlstack up` and the benchmark run it): settings from the environment,
HTTP + gRPC ports, OpenAPI docs, and SIGTERM drains the history queue before exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.gateway import ADMIN_PASSWORD
from tests.fixtures.triton import TritonFixture, free_ports

pytestmark = pytest.mark.slow


def test_module_entry_point_serves_and_drains_on_sigterm(tmp_path: Path, triton: TritonFixture) -> None:
    http_port, grpc_port = free_ports(2)
    db = tmp_path / "gw.db"
    env = {**os.environ, "MLSTACK_VAR_DIR": str(tmp_path / "var"), "MLSTACK_REPOSITORY": str(triton.repository),
           "MLSTACK_DATABASE_URL": f"sqlite:///{db}", "MLSTACK_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLSTACK_GATEWAY_HTTP_PORT": str(http_port), "MLSTACK_GATEWAY_GRPC_PORT": str(grpc_port),
           "MLSTACK_TRITON_HTTP_PORT": str(triton.settings.triton_http_port),
           "MLSTACK_TRITON_GRPC_PORT": str(triton.settings.triton_grpc_port),
           # rows wait in the queue long enough that only the shutdown drain can write them
           "MLSTACK_GATEWAY_HISTORY_FLUSH_INTERVAL_S": "30", "MLSTACK_GATEWAY_HISTORY_BATCH_SIZE": "10000"}
    log = open(tmp_path / "gateway.log", "w")  # noqa: SIM115 - closed below, after the process ends
    proc = subprocess.Popen([sys.executable, "-m", "auth_api"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        assert httpx.get(f"{url}/docs").status_code == 200 and httpx.get(f"{url}/redoc").status_code == 200
        spec = httpx.get(f"{url}/openapi.json").json()
        assert spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
        token = httpx.post(f"{url}/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}).json()["access_token"]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            n = 25
            for _ in range(n):
                assert c.post("/api/v1/predict/iris-knn", json={"instances": [[5.0, 3.4, 1.5, 0.2]]}).status_code == 200
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        assert client.is_server_ready()
        client.close()
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is a clean exit here
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - t_stop < 10  # the drain does not wait for the flush interval
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "history writer drained and stopped" in (tmp_path / "gateway.log").read_text()
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM predictions WHERE model = 'iris-knn'")).scalar() == n
    engine.dispose()
