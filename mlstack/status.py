"""``mlstack status``: each tier's own state at its configured URL, whoever started it (probed in parallel, fast even
when one tier is frozen)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mlstack.settings import Settings

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
