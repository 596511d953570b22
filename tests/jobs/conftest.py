"""One local Ray instance (2 CPUs) for every jobs test, and a gateway over the session's Triton that runs jobs on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auth_api.jobs.ownership import owner_of
from mlstack.repository import serving
from mlstack.repository.layout import model_names
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """``ray.init`` once (~6 s); the gateway's job runner finds it initialised and uses it."""
    try:
        import ray
    except ImportError:
        pytest.fail("ray is not installed: .venv/bin/pip install -c constraints.txt 'ray==2.60.0'")
    from auth_api.jobs.runner import init_ray

    # The gateway's own way (a thread that outlives every job is the parent of Ray's processes): the jobs below run
    # from threads that end, which would take a Ray started from them down with them.
    starter = threading.Thread(target=init_ray, args=(None, 2), daemon=True)
    starter.start()
    starter.join(120)  # the starting thread is gone from here on, as a job's thread would be
    assert ray.is_initialized(), "Ray did not start within 120 s"
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def jobs_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('jobsdb') / 'gateway.db'}"


@pytest.fixture(scope="module")
def jgw(ray_local: None, triton: TritonFixture, jobs_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway whose jobs publish into the repository the session's Triton polls."""
    tmp = tmp_path_factory.mktemp("jobsgw")
    try:
        with run_gateway(gateway_settings(tmp, jobs_db, triton=triton)) as gw:
            yield gw
    finally:  # the session's Triton serves other tests after these: leave no user model behind
        for name in model_names(triton.repository):
            if owner_of(name) is not None:
                serving.delete_model(triton.repository, name)


def wait_job(c: httpx.Client, job_id: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
             timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s: {job['log_tail']}")
        time.sleep(0.1)


def repo_of(gw: RunningGateway) -> Path:
    return Path(gw.settings.repository)
