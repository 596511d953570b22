"""The servers a bench starts for itself on free loopback ports: Triton, the baseline, the gateway, BentoML."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from loadtests.locust_run import pin_prefix, pin_process_group, server_cpus
from mlstack.settings import Settings

_METRIC = re.compile(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$')


BENCH_RATE_LIMIT = "1000000"  # requests/s and burst per user


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latest_version_dir(repository: Path, model: str) -> Path:
    """The highest numbered version folder of ``model`` (what Triton's default `latest 1` policy serves)."""
    versions = sorted((int(p.name) for p in (repository / model).iterdir() if p.is_dir() and p.name.isdigit()),
                      reverse=True) if (repository / model).is_dir() else []
    if not versions:
        raise FileNotFoundError(f"model {model!r} has no version in {repository} (train it: `mlstack train {model}`)")
    return repository / model / str(versions[0])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}; log {log}:\n{log.read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout:.0f}s; log {log}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def bench_settings(base: Settings, repository: Path, var_dir: Path) -> Settings:
    """``base`` with free ports for everything the bench starts and a private var_dir."""
    return base.model_copy(update={
        "repository": repository, "var_dir": var_dir, "triton_host": "127.0.0.1", "triton_http_port": free_port(),
        "triton_grpc_port": free_port(), "triton_metrics_port": free_port(), "triton_exit_timeout_s": 2,
        "gateway_host": "127.0.0.1", "gateway_http_port": free_port(), "gateway_grpc_port": free_port(),
        "bento_host": "127.0.0.1", "bento_port": free_port()})


@contextlib.contextmanager
def triton(settings: Settings, pin: bool, pids: list[int] | None = None) -> Iterator[str]:
    """A tritonserver over ``settings.repository``; yields its HTTP URL (its pid is appended to ``pids``)."""
    from services.triton.launcher import TritonServer

    with TritonServer(settings) as server:
        if pin and server.process is not None:
            pin_process_group(server.process.pid, server_cpus())
        if pids is not None and server.process is not None:
            pids.append(server.process.pid)
        yield server.http_url


@contextlib.contextmanager
def baseline(model_dir: Path, log: Path, pin: bool, pids: list[int] | None = None) -> Iterator[str]:
    """``python -m loadtests.baseline`` (one uvicorn process); yields its URL."""
    port = free_port()
    argv = [*(pin_prefix(server_cpus()) if pin else []), sys.executable, "-m", "loadtests.baseline",
            "--model-dir", str(model_dir), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                                    os.environ.get("PYTHONPATH")) if p)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    if pids is not None:
        pids.append(proc.pid)  # taskset execs the server: same pid
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/ready", proc, log)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def gateway(settings: Settings, log: Path, pin: bool, pids: list[int] | None = None,
            extra_env: dict[str, str] | None = None, command: list[str] | None = None) -> Iterator[tuple[str, str, str]]:
    """``python -m auth_api`` (or ``command``) with a fresh SQLite DB and a bench user; yields (url, username, password)."""
    admin_pw, user_pw = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    # The rate limit stays on (its bucket is part of the per-request cost) but far above any load a bench makes: the
    # default (5,000/s per user, split among workers) refused cache hits at ~6,000/s.
    limits = {"MLSTACK_GATEWAY_RATE_LIMIT_RPS": BENCH_RATE_LIMIT, "MLSTACK_GATEWAY_RATE_LIMIT_BURST": BENCH_RATE_LIMIT}
    env = {**os.environ, **_env(settings), **limits, **(extra_env or {}), "MLSTACK_ADMIN_PASSWORD": admin_pw}
    env.pop("MLSTACK_DATABASE_URL", None)
    argv = [*(pin_prefix(server_cpus()) if pin else []), *(command or [sys.executable, "-m", "auth_api"])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    if pids is not None:
        pids.append(proc.pid)
    try:
        url = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
        wait_http(f"{url}/health/ready", proc, log)
        token = httpx.post(f"{url}/api/v1/auth/login", json={"username": settings.admin_username, "password": admin_pw},
                           timeout=30).json()["access_token"]
        r = httpx.post(f"{url}/api/v1/users", json={"username": "bench", "password": user_pw, "role": "user"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if r.status_code != 201:
            raise RuntimeError(f"could not create the bench user: HTTP {r.status_code} {r.text[:300]}")
        yield url, "bench", user_pw
    finally:
        stop(proc)


@contextlib.contextmanager
def ingester(settings: Settings, log: Path, pids: list[int] | None = None) -> Iterator[None]:
    """``python -m auth_api.ingester`` over the journal of a gateway started with ``settings`` and
    ``MLSTACK_GATEWAY_INGESTER=external`` (as ``mlstack up`` runs it), so its CPU is measured apart from the gateway's.
    Enter it before the gateway: it waits for the gateway's schema, and on exit (after the gateway has stopped) it
    ingests whatever the journal still holds before it stops."""
    env = {**os.environ, **_env(settings), "MLSTACK_INGESTER_METRICS_PORT": "0"}
    env.pop("MLSTACK_DATABASE_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "auth_api.ingester"], stdout=out, stderr=subprocess.STDOUT, env=env)
    if pids is not None:
        pids.append(proc.pid)
    try:
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"the history ingester exited with {proc.returncode}; log {log}:\n"
                               f"{log.read_text(errors='replace')[-1500:]}")
        yield
    finally:
        stop(proc)


@contextlib.contextmanager
def bento(settings: Settings, pin: bool) -> Iterator[str]:
    from services.bento.launcher import BentoServer

    with BentoServer(settings) as server:
        if pin and server.process is not None:
            pin_process_group(server.process.pid, server_cpus())
        yield server.url


def login(url: str, username: str, password: str) -> str:
    """An access token for ``username`` on the gateway at ``url``."""
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": username, "password": password}, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"login as {username} failed: HTTP {r.status_code} {r.text[:300]}")
    return str(r.json()["access_token"])


def _env(settings: Settings) -> dict[str, str]:
    keys = ("repository", "var_dir", "triton_host", "triton_http_port", "triton_grpc_port", "triton_metrics_port",
            "gateway_host", "gateway_http_port", "gateway_grpc_port")
    return {f"MLSTACK_{k.upper()}": str(getattr(settings, k)) for k in keys}


def triton_counts(metrics_url: str, model: str) -> tuple[float, float]:
    """(nv_inference_count, nv_inference_exec_count) summed over the versions of ``model``."""
    count = execs = 0.0
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        m = _METRIC.match(line)
        if not m or f'model="{model}"' not in m.group(2):
            continue
        if m.group(1) == "nv_inference_count":
            count += float(m.group(3))
        elif m.group(1) == "nv_inference_exec_count":
            execs += float(m.group(3))
    return count, execs
