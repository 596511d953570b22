"""Triton's health for `mlstack status`: liveness, readiness and the models it serves, by version."""

from __future__ import annotations

import httpx

from mlstack.settings import Settings


def health(settings: Settings, timeout: float = 2.0) -> dict:
    """``{"url", "live", "ready", "models": [{"name", "version", "state", "reason"}], "error"?}``; never raises."""
    url = settings.triton_http_url
    out: dict = {"url": url, "grpc_url": settings.triton_grpc_url, "metrics_url": settings.triton_metrics_url,
                 "live": False, "ready": False, "models": []}
    try:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            out["live"] = client.get("/v2/health/live").status_code == 200
            out["ready"] = client.get("/v2/health/ready").status_code == 200
            index = client.post("/v2/repository/index", json={})
            if index.status_code == 200:
                out["models"] = sorted(
                    ({"name": m.get("name"), "version": m.get("version"), "state": m.get("state", "UNAVAILABLE"),
                      "reason": m.get("reason", "")} for m in index.json()),
                    key=lambda m: (m["name"], int(m["version"] or 0)),
                )
    except httpx.HTTPError as exc:
        out["error"] = f"Triton not reachable at {url}: {exc.__class__.__name__}"
    return out


def failed_models(h: dict) -> list[dict]:
    """Entries of ``health()["models"]`` that failed to load (UNAVAILABLE with a reason other than having been unloaded)."""
    return [m for m in h.get("models", []) if m["state"] == "UNAVAILABLE" and m.get("reason") not in ("", "unloaded", None)]
