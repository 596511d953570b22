"""Job lifecycle on real Ray: per-user quota, a killed worker fails its job with the reason, cancel stops a running
job and publishes nothing, and a gateway restart mid-job keeps the record honest (alive job re-attached, orphans failed)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from auth_api.core.db import make_engine
from auth_api.jobs.tables import TrainingJob
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.jobs.conftest import repo_of, wait_job

pytestmark = pytest.mark.slow
SLOW = {"dataset_id": "sample-digits", "algorithm": "cnn", "params": {"epochs": 5000}, "name": "slow"}


def _worker_pid(c: httpx.Client, job_id: str) -> int:
    job = wait_job(c, job_id, states=("running",))
    deadline = time.monotonic() + 30
    while True:
        for line in c.get(f"/api/v1/jobs/{job_id}?log_lines=50").json()["log_tail"]:
            if m := re.match(r"worker pid (\d+)", line):
                return int(m.group(1))
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _progressed(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """Wait until the job is training (an epoch logged), so a cancel hits a busy worker."""
    deadline = time.monotonic() + 60
    while True:
        job = c.get(f"/api/v1/jobs/{job_id}").json()
        if any("epoch" in ln for ln in job["log_tail"]) or job["state"] not in ("queued", "running"):
            return dict(job)
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_quota_killed_worker_and_cancel(jgw: RunningGateway) -> None:
    dave = jgw.create_user("job_dave")
    with jgw.client(dave) as c:
        first = c.post("/api/v1/jobs", json={**SLOW, "name": "slow-a"}).json()
        second = c.post("/api/v1/jobs", json={**SLOW, "name": "slow-b"}).json()
        r = c.post("/api/v1/jobs", json={**SLOW, "name": "slow-c"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "job_quota"

        os.kill(_worker_pid(c, first["id"]), signal.SIGKILL)
        job = wait_job(c, first["id"])
        assert job["state"] == "failed" and job["error_code"] == "worker_lost" and "died" in job["error"], job

        _progressed(c, second["id"])
        r = c.post(f"/api/v1/jobs/{second['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert c.post(f"/api/v1/jobs/{second['id']}/cancel").status_code == 409
        time.sleep(0.5)
        assert wait_job(c, second["id"])["state"] == "cancelled"
        for j in (first, second):
            assert not (repo_of(jgw) / j["model"]).exists()


def test_gateway_restart_mid_job(ray_local: None, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    settings = gateway_settings(tmp_path, db_url)
    with run_gateway(settings) as a:
        erin = a.create_user("job_erin")
        with a.client(erin) as c:
            job = c.post("/api/v1/jobs", json=SLOW).json()
            _progressed(c, job["id"])
    engine = make_engine(db_url)
    with Session(engine) as db:  # a job of a gateway process that is gone (and its local Ray with it)
        db.add(TrainingJob(id="orphan-1", owner_id=2, state="running", spec={}, dataset_id="sample-iris", model="u2-x",
                           runner="local:999999999"))
        db.commit()
    with run_gateway(settings) as b:
        with b.client(b.login("job_erin", "correct horse battery")["access_token"]) as c:
            alive = c.get(f"/api/v1/jobs/{job['id']}").json()
            assert alive["state"] == "running", (alive["error"], alive["log_tail"])  # its worker still runs and still reports: re-attached
            time.sleep(2.5)
            later = c.get(f"/api/v1/jobs/{job['id']}?log_lines=200").json()
            assert len(later["log_tail"]) > len(alive["log_tail"]) or later["progress"] > alive["progress"]
            assert c.post(f"/api/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        with Session(engine) as db:
            orphan = db.get(TrainingJob, "orphan-1")
            assert orphan is not None and orphan.state == "failed" and orphan.error_code == "worker_lost"
            assert "restarted" in (orphan.error or "")
    engine.dispose()
