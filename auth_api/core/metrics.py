"""Prometheus collectors on a per-app registry, and the ASGI middleware that counts every request.

Label values stay bounded whatever clients send: a ``model`` label is a model present in the repository (else
``other``), a ``version`` one of its versions (else ``other``), and callers are numeric user ids, never names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlstack.repository.layout import model_names

PRINCIPAL_LIMIT = 100  # distinct user ids labelled individually in gateway_principal_requests_total
CHILD_CACHE_LIMIT = 10_000  # cached label children per collector; cleared (not grown) beyond this
MODELS_TTL_S = 2.0  # how stale the set of labelled model names may be (a new model is labelled within this)
OTHER = "other"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Client-facing inference routes → the protocol label of gateway_inference_duration_seconds (gRPC is counted apart).
INFERENCE_ROUTES = {"/v2/models/{name}/infer": "http", "/v2/models/{name}/versions/{version}/infer": "http",
                    "/api/v1/predict/{name}": "rest", "/api/v1/tasks/{task}": "task"}


class ModelIndex(Protocol):
    """What the metrics need from the gateway's catalog (auth_api.catalog.Catalog)."""

    repo: Path

    def versions(self, name: str) -> list[int]: ...


class GatewayMetrics:
    """Every collector the gateway exports, registered on its own registry (tests build many apps)."""

    def __init__(self, models: ModelIndex | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Requests by route, model, version and status.",
                                ["route", "model", "version", "status"], registry=r)
        self.latency = Histogram("gateway_request_duration_seconds", "Total request latency in the gateway.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_latency = Histogram(
            "gateway_inference_duration_seconds",
            "Client-facing latency of inference calls by protocol (http = v2, rest = /api/v1/predict, task, grpc) and model.",
            ["protocol", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self._upstream = Histogram("gateway_upstream_duration_seconds", "Latency of the upstream (Triton or BentoML) call.",
                                   ["protocol", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_latency = _BoundedModel(self._upstream, self)
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
        self.grpc_requests = Counter("gateway_grpc_requests_total",
                                     "gRPC calls by method, status code and model (inference calls; '' for the others).",
                                     ["method", "code", "model"], registry=r)
        self.principal_requests = Counter(
            "gateway_principal_requests_total",
            f"Inference requests by numeric user id and credential kind (user or api_key); beyond {PRINCIPAL_LIMIT} ids: 'other'.",
            ["kind", "user_id"], registry=r)
        self.ws = WsMetrics(r)
        self._models = models
        self._model_names: frozenset[str] = frozenset()
        self._model_names_at = float("-inf")
        self._user_ids: set[str] = set()
        # labels() takes a lock and builds a key on every call; the hot path looks its children up here instead.
        # Only label sets naming a known model are cached, so a name published later is not stuck as 'other'.
        self._request_children: dict[tuple[str, str, str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._inference_children: dict[tuple[str, str], Any] = {}
        self._upstream_children: dict[tuple[str, str], Any] = {}
        self._principal_children: dict[tuple[str, int | None], Any] = {}

    def bind_models(self, models: ModelIndex) -> None:
        """Label models by what ``models`` (the gateway's catalog) holds; until bound, every model is 'other'."""
        self._models = models
        self._model_names_at = float("-inf")

    def model_label(self, name: str) -> str:
        """``name`` when the repository holds that model, '' for none, else 'other' (label values stay bounded)."""
        if not name:
            return ""
        if self._models is None:
            return OTHER
        now = time.monotonic()
        if now - self._model_names_at > MODELS_TTL_S:
            self._model_names = frozenset(model_names(self._models.repo))
            self._model_names_at = now
        return name if name in self._model_names else OTHER

    def version_label(self, model: str, version: str) -> str:
        """``version`` when ``model`` (a label value) has it on disk, '' for none, else 'other'."""
        if not version:
            return ""
        if model in ("", OTHER) or self._models is None or not version.isdigit():
            return OTHER
        return version if int(version) in self._models.versions(model) else OTHER

    def count_request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        """One finished request: gateway_requests_total, gateway_request_duration_seconds and, for inference routes
        that named a model, gateway_inference_duration_seconds."""
        key = (route, model, version, status)
        child = self._request_children.get(key)
        if child is None:
            m = self.model_label(model)
            v = self.version_label(m, version)
            child = self.requests.labels(route, m, v, str(status))
            if OTHER not in (m, v):
                if len(self._request_children) >= CHILD_CACHE_LIMIT:
                    self._request_children.clear()
                self._request_children[key] = child
        child.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            if len(self._latency_children) >= CHILD_CACHE_LIMIT:
                self._latency_children.clear()
            hist = self._latency_children[route] = self.latency.labels(route)
        hist.observe(seconds)
        protocol = INFERENCE_ROUTES.get(route)
        if protocol is not None and model:
            self._observe(self.inference_latency, self._inference_children, protocol, model, seconds)

    def observe_upstream(self, protocol: str, model: str, seconds: float) -> None:
        """Time spent waiting for the upstream (Triton, or BentoML for tasks)."""
        self._observe(self._upstream, self._upstream_children, protocol, model, seconds)

    def observe_grpc_infer(self, model: str, total_s: float, upstream_s: float) -> None:
        """One gRPC inference call: its client-facing and its upstream latency (``model`` as the request named it)."""
        self._observe(self.inference_latency, self._inference_children, "grpc", model, total_s)
        self._observe(self._upstream, self._upstream_children, "grpc", model, upstream_s)

    def _observe(self, hist: Histogram, cache: dict[tuple[str, str], Any], protocol: str, model: str, seconds: float) -> None:
        child = cache.get((protocol, model))
        if child is None:
            label = self.model_label(model)
            child = hist.labels(protocol, label)
            if label != OTHER:
                if len(cache) >= CHILD_CACHE_LIMIT:
                    cache.clear()
                cache[(protocol, model)] = child
        child.observe(seconds)

    def count_principal(self, kind: str, user_id: int | None) -> None:
        """Count one inference request for a caller by numeric user id (kind: 'user' or 'api_key', the credential used).

        Names never become label values: /metrics may be readable by more people than the user list. The first
        PRINCIPAL_LIMIT ids get their own series, later ones count as 'other' (per-user totals live in the history).
        """
        child = self._principal_children.get((kind, user_id))
        if child is not None:
            child.inc()
            return
        uid = str(user_id) if user_id is not None else OTHER
        if uid not in self._user_ids:
            if len(self._user_ids) >= PRINCIPAL_LIMIT:
                uid = OTHER
            else:
                self._user_ids.add(uid)
        child = self.principal_requests.labels(kind, uid)
        if uid != OTHER and len(self._principal_children) < CHILD_CACHE_LIMIT:
            self._principal_children[(kind, user_id)] = child
        child.inc()


class WsMetrics:
    """The WebSocket path (/api/v1/ws): open connections, frames by fate, frame latency (receive -> answer sent)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.connections = Gauge("gateway_ws_connections", "Open (authenticated) WebSocket connections.", registry=r)
        self.received = Counter("gateway_ws_frames_received_total", "Predict frames received over WebSockets.", registry=r)
        self.answered = Counter("gateway_ws_frames_answered_total", "Predict frames answered with a prediction.", registry=r)
        self.failed = Counter("gateway_ws_frames_failed_total", "Predict frames answered with an error.", registry=r)
        self.dropped = Counter("gateway_ws_frames_dropped_total",
                               "Frames dropped unanswered: backpressure (a newer frame replaced them) or rate_limited.",
                               ["reason"], registry=r)
        self.latency = Histogram("gateway_ws_frame_duration_seconds", "Frame latency from its receipt to its answer.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.closed = Counter("gateway_ws_closed_total", "WebSocket connections closed by the gateway, by reason.", ["reason"],
                              registry=r)
        # Every reason is exported from the start (at 0), so rates and alerts see a series before the first event.
        for reason in ("backpressure", "rate_limited"):
            self.dropped.labels(reason)
        for reason in ("auth", "idle", "too_big", "slow_client", "too_many_connections"):
            self.closed.labels(reason)


class _BoundedModel:
    """``.labels(protocol, model)`` of a histogram, with the model bounded like every other model label.

    Routes call ``metrics.upstream_latency.labels(protocol, name).observe(s)`` with the name the client sent.
    """

    def __init__(self, hist: Histogram, metrics: GatewayMetrics) -> None:
        self._hist = hist
        self._metrics = metrics

    def labels(self, protocol: str, model: str) -> Any:
        return self._hist.labels(protocol, self._metrics.model_label(model))


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
