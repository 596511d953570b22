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
    env["MLSTACK_GATEWAY_INGESTER"] = "external"  # history rows come from the ingester process started beside it
    proc = GatewayWithIngester(
        ManagedProcess("gateway", [sys.executable, "-m", "auth_api"], ready_url=f"{base}/health/live",
                       log_path=settings.var_dir / "logs" / "gateway.log", url=base, env=env),
        _ingester(settings, env))

    def show_admin_password(report: Callable[[str], None]) -> None:
        report("gateway: mail " + ("via MLSTACK_SMTP_URL" if settings.smtp_url else f"to {settings.var_dir.resolve() / 'outbox'}/*.eml"))
        if generated is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{base}/api/v1/auth/login", json={"username": settings.admin_username, "password": generated},
                           timeout=10)
            if r.status_code == 200:
                report(f"gateway: created admin user '{settings.admin_username}' with password {generated} "
                       "(shown once; set MLSTACK_ADMIN_PASSWORD to choose it)")

    return Running("gateway", base, proc, show_admin_password)


def _ingester(settings: Settings, env: dict[str, str]) -> ManagedProcess:
    metrics = f"http://{settings.gateway_host}:{settings.ingester_metrics_port}/metrics"
    # Without a metrics port there is nothing of its own to probe: started is as ready as it gets.
    ready = metrics if settings.ingester_metrics_port else f"http://{settings.gateway_host}:{settings.gateway_http_port}/health/live"
    return ManagedProcess("ingester", [sys.executable, "-m", "auth_api.ingester"], ready_url=ready,
                          log_path=settings.var_dir / "logs" / "ingester.log", url=metrics, env=env)


class GatewayWithIngester:
    """The gateway and its history ingester: started after it (the gateway migrates the schema), stopped after it
    (so it ingests what the gateway journaled last)."""

    def __init__(self, gateway: ManagedProcess, ingester: ManagedProcess) -> None:
        self.gateway, self.ingester = gateway, ingester

    def start(self, timeout: float | None = None) -> None:
        self.gateway.start(timeout)
        try:
            self.ingester.start(timeout)
        except Exception:
            self.gateway.stop()
            raise

    def stop(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.ingester.stop()


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
            dead = [r for r in stack.running if hasattr(r.component, "is_running") and not r.component.is_running()]
            if dead:
                logs = ", ".join(str(getattr(r.component, "log_path", settings.var_dir / "logs")) for r in dead)
                report(f"error: {', '.join(r.name for r in dead)} exited unexpectedly; stopping the stack (see {logs})")
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


# Each tier answers its health URL in milliseconds; one that accepts the connection but stays silent this long is frozen.
STATUS_TIMEOUT = httpx.Timeout(1.5, connect=0.5)


@dataclass
class Probe:
    state: str  # "ready" | "not ready" | "not responding" | "down"
    detail: str
    response: httpx.Response | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "ready"


def _probe(url: str, method: str = "GET", **kw: Any) -> Probe:
    try:
        r = httpx.request(method, url, timeout=STATUS_TIMEOUT, **kw)
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            return Probe("down", "connect timed out")
        return Probe("not responding", f"accepts connections but sent no answer within {STATUS_TIMEOUT.read:g} s")
    except httpx.HTTPError as exc:
        return Probe("down", f"unreachable ({type(exc).__name__})")
    return Probe("ready" if r.status_code == 200 else "not ready", f"HTTP {r.status_code}", r)


def _triton_row(settings: Settings) -> dict[str, Any]:
    t = settings.triton_http_url
    pr = _probe(f"{t}/v2/health/ready")
    models: list[str] = []
    if pr.healthy:
        idx = _probe(f"{t}/v2/repository/index", "POST", json={"ready": True})
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if idx.response is not None and idx.healthy:
                models = sorted(f"{m['name']}:{m.get('version', '?')}" for m in idx.response.json())
    return {"component": "triton", "url": t, "healthy": pr.healthy, "state": pr.state, "detail": pr.detail, "models": models,
            "grpc": settings.triton_grpc_url, "metrics": settings.triton_metrics_url}


def _gateway_row(settings: Settings) -> dict[str, Any]:
    """The gateway's own state, apart from its dependencies': "up, not ready: triton" when it answers but Triton doesn't."""
    gw = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
    pr = _probe(f"{gw}/health/ready")
    state, detail = pr.state, pr.detail
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError, AttributeError):
        body = pr.response.json() if pr.response is not None else {}
    if pr.state == "not ready":
        failing = (body.get("error", {}).get("details", {}) or {}).get("failing") or []
        state = detail = f"up, not ready: {', '.join(failing) or 'unknown'}"
    elif pr.healthy and body.get("degraded"):
        detail = f"ready; optional dependencies down: {', '.join(body['degraded'])}"
    return {"component": "gateway", "url": gw, "healthy": pr.healthy, "state": state, "detail": detail,
            "grpc": f"{settings.gateway_host}:{settings.gateway_grpc_port}"}


def _simple_row(name: str, url: str, path: str) -> dict[str, Any]:
    pr = _probe(f"{url}{path}")
    return {"component": name, "url": url, "healthy": pr.healthy, "state": pr.state, "detail": pr.detail}


def status(settings: Settings) -> list[dict[str, Any]]:
    """Each component's own state at its configured URL (whoever started it), probed in parallel: a frozen tier costs
    ``STATUS_TIMEOUT`` once and does not make the others look down."""
    from concurrent.futures import ThreadPoolExecutor

    bento = f"http://{settings.bento_host}:{settings.bento_port}"
    prom = f"http://127.0.0.1:{settings.prometheus_port}"
    calls: list[Callable[[], dict[str, Any]]] = [
        lambda: _triton_row(settings), lambda: _simple_row("bento", bento, "/readyz"),
        lambda: _gateway_row(settings), lambda: _simple_row("prometheus", prom, "/-/ready"),
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))
