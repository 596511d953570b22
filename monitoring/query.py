"""A small client for Prometheus' HTTP API (instant queries, targets), used by tests and `mlstack bench`."""

from __future__ import annotations

import httpx

from mlstack.errors import MlstackError


class QueryError(MlstackError):
    """Prometheus refused or failed a query (the message carries Prometheus' own error)."""

    code = "prometheus_query_failed"
    status = 502


def instant(url: str, promql: str, timeout: float = 10.0) -> list[dict]:
    """The result vector of an instant query: ``[{"metric": {...}, "value": [ts, "v"]}, ...]``."""
    resp = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=timeout)
    body = resp.json()
    if resp.status_code != 200 or body.get("status") != "success":
        raise QueryError(f"query failed: {body.get('error', resp.text)}", details={"query": promql})
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def active_targets(url: str, timeout: float = 10.0) -> list[dict]:
    """Prometheus' active scrape targets with ``labels.job``, ``health`` and ``lastError``."""
    resp = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=timeout)
    resp.raise_for_status()
    return list(resp.json()["data"]["activeTargets"])
