"""The embedded stack behind ``mlstack up``: Triton, BentoML, the gateway (and optionally Prometheus), in order.

Each component has ``name``, ``url``, ``start()`` and ``stop()``. ``up`` starts them in dependency order, and on a
failure or a signal stops the ones it started in reverse order, so no child outlives it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from mlstack.private import private_dir
from mlstack.process import ManagedProcess
from mlstack.settings import Settings

logger = logging.getLogger(__name__)


class Component(Protocol):
    def start(self, timeout: float | None = None) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Running:
    name: str
    url: str
    component: Component
    on_ready: Callable[[Callable[[str], None]], None] | None = None


def pid_file(settings: Settings) -> Path:
    return settings.var_dir / "run" / "stack.pid"


def _child_env(settings: Settings) -> dict[str, str]:
    """Children read the same settings: every field as MLSTACK_* (paths absolute, lists as JSON, secrets unmasked)."""
    env = dict(os.environ)
    for key in type(settings).model_fields:
        value = getattr(settings, key)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = value.resolve()
        elif isinstance(value, list | dict):
            value = json.dumps(value)
        env[f"MLSTACK_{key.upper()}"] = str(value)
    return env


def _gateway(settings: Settings) -> Running:
    base = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
    env = _child_env(settings)
    generated = None
    if settings.admin_password is None:
        # The gateway prints a generated admin password on its stderr, which is a log file here; instead hand it one
        # and show it on this console, once, if it was used (i.e. the admin did not exist yet).
        generated = secrets.token_urlsafe(18)
        env["MLSTACK_ADMIN_PASSWORD"] = generated
    proc = ManagedProcess("gateway", [sys.executable, "-m", "auth_api"], ready_url=f"{base}/health/live",
                          log_path=settings.var_dir / "logs" / "gateway.log", url=base, env=env)

    def show_admin_password(report: Callable[[str], None]) -> None:
        if generated is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{base}/api/v1/auth/login", json={"username": settings.admin_username, "password": generated},
                           timeout=10)
            if r.status_code == 200:
                report(f"gateway: created admin user '{settings.admin_username}' with password {generated} "
                       "(shown once; set MLSTACK_ADMIN_PASSWORD to choose it)")

    return Running("gateway", base, proc, show_admin_password)


def _triton(settings: Settings) -> Running:
    from services.triton.launcher import TritonServer

    server = TritonServer(settings)

    def report_failed(report: Callable[[str], None]) -> None:
        # Triton starts and serves the other models; say which ones it could not load instead of refusing to start.
        for m in server.failed_models():
            report(f"triton: model {m['name']} version {m['version']} failed to load and is not served: {m['reason'][:300]}")

    return Running("triton", server.http_url, server, report_failed)


def _bento(settings: Settings) -> Running:
    from services.bento.launcher import BentoServer

    server = BentoServer(settings, settings.repository)
    return Running("bento", f"http://{settings.bento_host}:{settings.bento_port}", server)


def _prometheus(settings: Settings) -> Running:
    from monitoring.launcher import PrometheusServer

    server = PrometheusServer(settings)
    return Running("prometheus", server.url, server)


BUILDERS: dict[str, Callable[[Settings], Running]] = {
    "triton": _triton, "bento": _bento, "gateway": _gateway, "prometheus": _prometheus,
}


class Stack:
    """Started components, stopped in reverse order (idempotent)."""

    def __init__(self, settings: Settings, names: list[str]) -> None:
        self.settings, self.names = settings, names
        self.running: list[Running] = []
        self._lock = threading.Lock()

    def start(self, report: Callable[[str], None]) -> None:
        for name in self.names:
            item = BUILDERS[name](self.settings)
            report(f"starting {name} ...")
            item.component.start()
            self.running.append(item)
            report(f"{name} ready at {item.url}")
            if item.on_ready is not None:
                item.on_ready(report)

    def stop(self, report: Callable[[str], None]) -> None:
        with self._lock:
            while self.running:
                item = self.running.pop()
                report(f"stopping {item.name}")
                try:
                    item.component.stop()
                except Exception:  # one failing stop must not leave the others running
                    logger.exception("stopping %s failed", item.name)


def up(settings: Settings, names: list[str], report: Callable[[str], None]) -> int:
    """Start ``names``, print their URLs, block until SIGINT/SIGTERM, then stop everything. Returns an exit code."""
    pf = pid_file(settings)
    if pf.exists():
        with contextlib.suppress(ValueError, OSError):
            other = int(pf.read_text())
            if Path(f"/proc/{other}").exists() and other != os.getpid():
                report(f"mlstack up is already running (pid {other}); stop it with `mlstack down`")
                return 1
    private_dir(settings.var_dir)  # first to create var/: keys, databases and logs live there
    pf.parent.mkdir(parents=True, exist_ok=True)
    pf.write_text(f"{os.getpid()}\n")
    stack = Stack(settings, names)
    stop_event = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_event.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start(report)
        except Exception as exc:
            report(f"error: {getattr(exc, 'message', exc)}")
            return 1
        report("stack is up; Ctrl+C or `mlstack down` stops it")
        while not stop_event.wait(0.5):
            dead = [r.name for r in stack.running if hasattr(r.component, "is_running") and not r.component.is_running()]
            if dead:
                report(f"error: {', '.join(dead)} exited unexpectedly; stopping the stack (see {settings.var_dir / 'logs'})")
                return 1
        return 0
    finally:
        stack.stop(report)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            pf.unlink()


def down(settings: Settings, timeout: float = 60.0) -> bool:
    """Ask a running ``mlstack up`` (from its pid file) to stop, and wait for it. False when none runs."""
    import time

    pf = pid_file(settings)
    try:
        pid = int(pf.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pf.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


def _probe(client: httpx.Client, url: str) -> tuple[bool, str]:
    try:
        r = client.get(url)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return r.status_code == 200, f"HTTP {r.status_code}"


def status(settings: Settings) -> list[dict[str, Any]]:
    """Health of every component at its configured URL (whoever started it)."""
    t = settings.triton_http_url
    rows: list[dict[str, Any]] = []
    with httpx.Client(timeout=2.0) as client:
        ok, detail = _probe(client, f"{t}/v2/health/ready")
        models: list[str] = []
        if ok:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                index = client.post(f"{t}/v2/repository/index", json={"ready": True}).json()
                models = sorted(f"{m['name']}:{m.get('version', '?')}" for m in index)
        rows.append({"component": "triton", "url": t, "healthy": ok, "detail": detail, "models": models,
                     "grpc": settings.triton_grpc_url, "metrics": settings.triton_metrics_url})
        bento = f"http://{settings.bento_host}:{settings.bento_port}"
        ok, detail = _probe(client, f"{bento}/readyz")
        rows.append({"component": "bento", "url": bento, "healthy": ok, "detail": detail})
        gw = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
        ok, detail = _probe(client, f"{gw}/health/ready")
        rows.append({"component": "gateway", "url": gw, "healthy": ok, "detail": detail,
                     "grpc": f"{settings.gateway_host}:{settings.gateway_grpc_port}"})
        prom = f"http://127.0.0.1:{settings.prometheus_port}"
        ok, detail = _probe(client, f"{prom}/-/ready")
        rows.append({"component": "prometheus", "url": prom, "healthy": ok, "detail": detail})
    return rows
