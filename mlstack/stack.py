"""The embedded stack behind ``mlstack up``: Triton, BentoML, the gateway and its ingester (and optionally Prometheus).

This is where tiers are composed (with ``mlstack/cli``, the only core code that imports them): each tier is built as a
``ManagedProcess``-based replica and handed to one ``Supervisor``, which starts them in dependency order, restarts one
that dies and stops them all on a signal or when one keeps failing, so no child outlives ``mlstack up``.
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

import httpx
from pydantic import SecretStr

from mlstack import replicas
from mlstack.private import private_dir
from mlstack.process import ManagedProcess, pid_alive
from mlstack.replicas import Plan
from mlstack.settings import Settings
from mlstack.supervisor import Report, RestartPolicy, Supervised, Supervisor, SupervisorMetrics

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """One replica of a tier as the supervisor runs it."""

    name: str
    url: str
    component: Supervised
    on_ready: Callable[[Report], None] | None = None


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


def _gateway(plan: Plan) -> list[Running]:
    """The gateways and their history ingester: the ingester (one, reading every gateway's journal in the shared
    var_dir) is started after the gateways (the first one migrates the schema) and stopped after them (so it ingests
    what they journaled last)."""
    first = plan.gateways[0]
    generated = None
    if first.admin_password is None:
        # The gateway prints a generated admin password on its stderr, which is a log file here; instead hand it one
        # and show it on this console, once, if it was used (i.e. the admin did not exist yet).
        generated = secrets.token_urlsafe(18)
    out: list[Running] = []
    for i, settings in enumerate(plan.gateways):
        base = f"http://{settings.gateway_host}:{settings.gateway_http_port}"
        env = _child_env(settings)
        if generated is not None:
            env["MLSTACK_ADMIN_PASSWORD"] = generated
        env["MLSTACK_GATEWAY_INGESTER"] = "external"  # history rows come from the ingester process started beside it
        log = settings.var_dir / "logs" / ("gateway.log" if i == 0 else f"gateway-{i + 1}.log")
        gateway = ManagedProcess("gateway" if i == 0 else f"gateway-{i + 1}", [sys.executable, "-m", "auth_api"],
                                 ready_url=f"{base}/health/live", log_path=log, url=base, env=env)
        url = base if len(plan.gateways) == 1 else f"{base} (gRPC {settings.gateway_host}:{settings.gateway_grpc_port})"
        out.append(Running("gateway", url, gateway, _show_admin_password(first, base, generated) if i == 0 else None))
    settings = plan.shared
    metrics = f"http://{settings.gateway_host}:{settings.ingester_metrics_port}/metrics"
    # Without a metrics port there is nothing of its own to probe: started is as ready as it gets.
    ready = metrics if settings.ingester_metrics_port else f"http://{first.gateway_host}:{first.gateway_http_port}/health/live"
    ingester = ManagedProcess("ingester", [sys.executable, "-m", "auth_api.ingester"], ready_url=ready,
                              log_path=settings.var_dir / "logs" / "ingester.log", url=metrics,
                              env=_child_env(settings) | {"MLSTACK_GATEWAY_INGESTER": "external"})
    return [*out, Running("ingester", metrics, ingester)]


def _show_admin_password(settings: Settings, base: str, generated: str | None) -> Callable[[Report], None]:
    def show(report: Report) -> None:
        nonlocal generated
        report("gateway: mail " + ("via MLSTACK_SMTP_URL" if settings.smtp_url else f"to {settings.var_dir.resolve() / 'outbox'}/*.eml"))
        password, generated = generated, None  # a restarted gateway finds the admin: nothing to show again
        if password is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(f"{base}/api/v1/auth/login", json={"username": settings.admin_username, "password": password},
                           timeout=10)
            if r.status_code == 200:
                report(f"gateway: created admin user '{settings.admin_username}' with password {password} "
                       "(shown once; set MLSTACK_ADMIN_PASSWORD to choose it)")
    return show


def _triton(plan: Plan) -> list[Running]:
    from services.triton.launcher import TritonServer

    out = []
    for i, settings in enumerate(plan.tritons):
        server = TritonServer(settings, name="triton" if i == 0 else f"triton-{i + 1}")

        def report_failed(report: Report, server: TritonServer = server) -> None:
            # Triton starts and serves the other models; say which ones it could not load instead of refusing to start.
            for m in server.failed_models():
                report(f"triton: model {m['name']} version {m['version']} failed to load and is not served: {m['reason'][:300]}")

        out.append(Running("triton", server.http_url, server, report_failed))
    return out


def _bento(plan: Plan) -> list[Running]:
    from services.bento.launcher import BentoServer

    server = BentoServer(plan.shared, plan.shared.repository)
    return [Running("bento", server.url, server)]


def _prometheus(plan: Plan) -> list[Running]:
    from monitoring.launcher import PrometheusServer

    server = PrometheusServer(plan.shared)
    return [Running("prometheus", server.url, server)]


BUILDERS: dict[str, Callable[[Plan], list[Running]]] = {
    "triton": _triton, "bento": _bento, "gateway": _gateway, "prometheus": _prometheus,
}
# Stopped first to last: Prometheus sees the others go; the ingester outlives the gateways to ingest their last records.
STOP_ORDER = ["prometheus", "gateway", "ingester", "bento", "triton"]


def build(plan: Plan, names: list[str]) -> Supervisor:
    """A supervisor holding every replica of ``names``, in start order, with the settings' restart policy."""
    s = plan.shared
    policy = RestartPolicy(backoff_s=s.supervisor_backoff_s, backoff_max_s=s.supervisor_backoff_max_s,
                           budget=s.supervisor_restart_budget, window_s=s.supervisor_restart_window_s)
    sup = Supervisor(policy, SupervisorMetrics())
    sup.stop_order = STOP_ORDER
    for name in names:
        for item in BUILDERS[name](plan):
            sup.add(item.name, item.component, item.url, item.on_ready)
    return sup


def up(settings: Settings, names: list[str], report: Report, tritons: int = 1, gateways: int = 1) -> int:
    """Start ``names`` (``tritons`` and ``gateways`` replicas of those tiers), print their URLs, supervise them until
    SIGINT/SIGTERM (0) or until a tier keeps failing (1), then stop everything. 2: the counts cannot run as set."""
    try:
        plan = replicas.plan(settings, tritons if "triton" in names else 1, gateways if "gateway" in names else 1)
    except replicas.ReplicaError as exc:
        report(f"error: {exc.message}")
        return 2
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
    sup = build(plan, names)
    stop_event = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop_event.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sup.start(report)
        except Exception as exc:
            report(f"error: {getattr(exc, 'message', exc)}")
            return 1
        if settings.supervisor_metrics_port and sup.metrics.serve("127.0.0.1", settings.supervisor_metrics_port):
            report(f"supervisor metrics at http://127.0.0.1:{settings.supervisor_metrics_port}/metrics")
        report("stack is up; Ctrl+C or `mlstack down` stops it")
        return sup.run(stop_event, report)
    finally:
        sup.stop(report)
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
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True
