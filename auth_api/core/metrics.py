"""Prometheus collectors on a per-app registry, and the ASGI middleware that counts every request."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PRINCIPAL_LIMIT = 100  # distinct users (and API keys) labelled individually in gateway_principal_requests_total
CHILD_CACHE_LIMIT = 10_000  # cached label children per collector; cleared (not grown) beyond this
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Every collector the gateway exports, registered on its own registry (tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Requests by route, model, version and status.",
                                ["route", "model", "version", "status"], registry=r)
        self.latency = Histogram("gateway_request_duration_seconds", "Total request latency in the gateway.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram("gateway_upstream_duration_seconds", "Latency of the upstream (Triton) call.",
                                          ["protocol", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being served.", registry=r)
        self.auth_failures = Counter("gateway_auth_failures_total", "Refused credentials by reason.", ["reason"], registry=r)
        self.rate_limited = Counter("gateway_rate_limited_total", "Requests refused by the rate limiter.", registry=r)
        self.history_queue_depth = Gauge("gateway_history_queue_depth", "History records waiting to be written.", registry=r)
        self.history_flush = Histogram("gateway_history_flush_duration_seconds", "Time to insert one history batch.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.history_written = Counter("gateway_history_written_total", "History rows written.", registry=r)
        self.history_backpressure = Counter("gateway_history_backpressure_total",
                                            "Records that waited for room in a full history queue.", registry=r)
        self.history_failures = Counter("gateway_history_write_failures_total", "Failed history batch inserts (retried).",
                                        registry=r)
        self.history_lost = Counter("gateway_history_lost_total",
                                    "History rows given up at shutdown because the database stayed unavailable.", registry=r)
        self.grpc_requests = Counter("gateway_grpc_requests_total", "gRPC calls by method and status code.",
                                     ["method", "code"], registry=r)
        self.principal_requests = Counter("gateway_principal_requests_total",
                                          "Inference requests by caller (users and API keys; beyond PRINCIPAL_LIMIT per kind: 'other').",
                                          ["kind", "principal"], registry=r)
        self._principals: dict[str, set[str]] = {}
        # labels() takes a lock and builds a key on every call; the hot path looks its children up here instead.
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._upstream_children: dict[tuple[str, str], Any] = {}
        self._principal_children: dict[tuple[str, str], Any] = {}

    def count_request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        """One finished request: gateway_requests_total and gateway_request_duration_seconds."""
        key = (route, model, version, status)
        child = self._request_children.get(key)
        if child is None:
            if len(self._request_children) >= CHILD_CACHE_LIMIT:
                self._request_children.clear()
            child = self._request_children[key] = self.requests.labels(route, model, version, str(status))
        child.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            if len(self._latency_children) >= CHILD_CACHE_LIMIT:
                self._latency_children.clear()
            hist = self._latency_children[route] = self.latency.labels(route)
        hist.observe(seconds)

    def observe_upstream(self, protocol: str, model: str, seconds: float) -> None:
        key = (protocol, model)
        child = self._upstream_children.get(key)
        if child is None:
            if len(self._upstream_children) >= CHILD_CACHE_LIMIT:
                self._upstream_children.clear()
            child = self._upstream_children[key] = self.upstream_latency.labels(protocol, model)
        child.observe(seconds)

    def count_principal(self, kind: str, principal: str) -> None:
        """Count one inference request for a caller; label cardinality stays bounded (Usage dashboard)."""
        child = self._principal_children.get((kind, principal))
        if child is not None:
            child.inc()
            return
        seen = self._principals.setdefault(kind, set())
        if principal not in seen:
            if len(seen) >= PRINCIPAL_LIMIT:
                principal = "other"
            else:
                seen.add(principal)
        child = self.principal_requests.labels(kind, principal)
        if principal != "other" and len(self._principal_children) < CHILD_CACHE_LIMIT:
            self._principal_children[(kind, principal)] = child
        child.inc()


class MetricsMiddleware:
    """Counts requests by route template (not raw path, so label cardinality stays bounded)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics):
        self.app = app
        self.m = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        self.m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.m.in_flight.dec()
            state = scope.get("state") or {}
            self.m.count_request(_template(scope), state.get("model", ""), state.get("version", ""), status,
                                 time.perf_counter() - start)


def _template(scope: Scope) -> str:
    """The matched route as a template ("/api/v1/history/{prediction_id}"), "unmatched" for 404s."""
    if scope.get("route") is None:
        return "unmatched"
    params = scope.get("path_params") or {}
    if not params:
        return str(scope.get("path", ""))
    by_value = {str(v): k for k, v in params.items()}
    return "/".join("{" + by_value[seg] + "}" if seg in by_value else seg for seg in str(scope.get("path", "")).split("/"))
