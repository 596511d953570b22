"""The Grafana dashboards as code: ``python -m monitoring.dashboards`` writes ``grafana/dashboards/*.json``.

Every panel's PromQL uses only metrics the stack exports (Triton ``nv_*``, gateway ``gateway_*`` and ``alerts_total``,
BentoML ``bentoml_service_*``); tests/monitoring runs each query against a live Prometheus to keep it that way.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "[$__rate_interval]"
INFER_ROUTES = 'route=~"/v2/.*infer|/api/v1/predict.*"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel] = field(default_factory=list)
    model_variable: bool = True


def _q(expr: str, legend: str) -> Query:
    return Query(" ".join(expr.split()), legend)


def _ratio(num: str, den: str) -> str:
    return f"({num}) / ({den})"


M = '{model=~"$model"}'
# BentoML's task service (its internal tensor service is `mlstack-tensors`); probes are no one's traffic.
BENTO_TASKS = 'service_name="mlstack-tasks", endpoint!~"/readyz|/livez|/healthz|/health|/metrics"'


def serving_overview() -> Dashboard:
    def per_model(metric: str) -> str:
        return f"sum by (model) (rate({metric}{M}{RATE}))"

    e2e = f"sum by (le) (rate(gateway_inference_duration_seconds_bucket{M}{RATE}))"
    quantiles = [_q(f"histogram_quantile({q}, {e2e})", f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)]
    bento_latency = f"sum by (le, endpoint) (rate(bentoml_service_request_duration_seconds_bucket{{{BENTO_TASKS}}}{RATE}))"
    return Dashboard("mlstack-serving", "Serving overview", "Throughput, latency, errors, batching and cache of the serving tier.", [
        Panel("Client requests/s by model (gateway)", (
            _q(f"sum by (model, protocol) (rate(gateway_inference_duration_seconds_count{M}{RATE}))", "{{model}} {{protocol}}"),),
              unit="reqps", description="Inference calls clients made through the gateway: http = KServe v2, rest = /api/v1/predict, "
                                        "task = BentoML tasks, grpc. One explain call is one request here."),
        Panel("Triton inference requests/s by model and version (all callers)", (
            _q(f"sum by (model, version) (rate(nv_inference_request_success{M}{RATE}))", "{{model}} v{{version}}"),),
              unit="reqps", description="Successful requests Triton executed, whoever sent them: the gateway, BentoML tasks, and the "
                                        "hundreds of inferences Kernel SHAP runs per explained record. Compare with client requests."),
        Panel("End-to-end latency p50 / p95 / p99", tuple(quantiles), unit="s",
              description="Inference calls through the gateway (v2 HTTP, REST predict, tasks, gRPC) for the selected models, "
                          "from request to response."),
        Panel("End-to-end latency p99 by protocol", (
            _q(f"histogram_quantile(0.99, sum by (le, protocol) (rate(gateway_inference_duration_seconds_bucket{M}{RATE})))",
               "{{protocol}}"),), unit="s", description="Tasks include BentoML's own work (an explanation takes seconds)."),
        Panel("Client errors/s by model and status", (
            _q(f'sum by (model, status) (rate(gateway_requests_total{{model=~"$model", status=~"4..|5.."}}{RATE}))',
               "{{model}} {{status}}"),
            _q(f'sum by (model, code) (rate(gateway_grpc_requests_total{{model=~"$model", code!="OK"}}{RATE}))',
               "{{model}} grpc {{code}}"),),
              unit="reqps", description="4xx (the client's request: bad input, unknown version) and 5xx (ours) answered for a model "
                                        "over v2 HTTP, REST predict and tasks (failed tasks too), and gRPC calls and streamed "
                                        "answers that were not OK, by status code. Requests naming a model the repository does "
                                        "not hold count as 'other'."),
        Panel("Upstream latency p99 by model", (
            _q(f'histogram_quantile(0.99, sum by (le, model, protocol) (rate(gateway_upstream_duration_seconds_bucket{M}{RATE})))',
               "{{model}} {{protocol}}"),),
              unit="s", description="Time the gateway waited for Triton (http, rest, grpc) or the BentoML service (task)."),
        Panel("Triton queue vs compute time per inference", (
            _q(_ratio(per_model("nv_inference_queue_duration_us"), per_model("nv_inference_count")) + " / 1000", "queue {{model}}"),
            _q(_ratio(per_model("nv_inference_compute_infer_duration_us"), per_model("nv_inference_count")) + " / 1000",
               "compute {{model}}"),
        ), unit="ms", description="Mean time an executed inference waited in the dynamic batcher vs ran in the model."),
        Panel("Error ratio", (
            _q(_ratio(per_model("nv_inference_request_failure"),
                      f'{per_model("nv_inference_request_success")} + {per_model("nv_inference_request_failure")}'), "triton {{model}}"),
            # `or vector(0)`: no 5xx series at all means a ratio of 0, not "no data".
            _q(_ratio(f'sum(rate(gateway_requests_total{{status=~"5.."}}{RATE})) or vector(0)', f"sum(rate(gateway_requests_total{RATE}))"),
               "gateway 5xx"),
        ), unit="percentunit", description="Failed / all requests. Alert above 1% for 5 minutes."),
        Panel("Mean batch size", (_q(_ratio(per_model("nv_inference_count"), per_model("nv_inference_exec_count")), "{{model}}"),),
              description="Δnv_inference_count / Δnv_inference_exec_count: rows per model execution (dynamic batching)."),
        Panel("Prediction cache hit ratio", (
            _q(_ratio(per_model("gateway_prediction_cache_hits_total"),
                      f'{per_model("gateway_prediction_cache_hits_total")} + {per_model("gateway_prediction_cache_misses_total")}'),
               "gateway {{model}}"),
            _q(_ratio(per_model("nv_cache_num_hits_per_model"),
                      f'{per_model("nv_cache_num_hits_per_model")} + {per_model("nv_cache_num_misses_per_model")}'), "triton {{model}}"),),
              unit="percentunit", description="v2 requests answered from the gateway's prediction cache (models with the cache on), "
                                              "and from Triton's response cache (off by default: it stores errors as empty successes)."),
        Panel("In flight", (
            _q(f"sum by (model) (nv_inference_pending_request_count{M})", "triton pending {{model}}"),
            _q("sum(gateway_requests_in_flight)", "gateway in flight"),
        ), description="Requests queued or executing in Triton, and requests open in the gateway."),
        Panel("BentoML task requests/s by endpoint and status", (
            _q(f"sum by (endpoint, http_response_code) (rate(bentoml_service_request_total{{{BENTO_TASKS}}}{RATE}))",
               "{{endpoint}} {{http_response_code}}"),),
              unit="reqps", description="Calls the BentoML task service answered (from the gateway or directly), from its own /metrics."),
        Panel("BentoML task latency p50 / p99 by endpoint", (
            _q(f"histogram_quantile(0.5, {bento_latency})", "p50 {{endpoint}}"),
            _q(f"histogram_quantile(0.99, {bento_latency})", "p99 {{endpoint}}"),
        ), unit="s", description="Per-endpoint SLOs (alert BentoLatencyP99AboveSLO): classify_image and predict_records 250 ms, "
                                 "simulate_battery 2.5 s, explain 30 s (Kernel SHAP takes seconds by design)."),
    ])


def gateway() -> Dashboard:
    return Dashboard("mlstack-gateway", "Gateway", "Auth, rate limiting, history journal/ingester and gRPC of the auth/history API.", [
        Panel("Requests/s by route and status",
              (_q(f"sum by (route, status) (rate(gateway_requests_total{RATE}))", "{{route}} {{status}}"),), unit="reqps"),
        Panel("Latency p99 by route", (
            _q(f"histogram_quantile(0.99, sum by (le, route) (rate(gateway_request_duration_seconds_bucket{RATE})))", "{{route}}"),),
              unit="s"),
        Panel("Auth failures/s by reason", (_q(f"sum by (reason) (rate(gateway_auth_failures_total{RATE}))", "{{reason}}"),),
              unit="reqps", description="Refused credentials: bad password, expired or tampered token, revoked key, ..."),
        Panel("Rate-limited requests/s", (_q(f"sum(rate(gateway_rate_limited_total{RATE}))", "429"),), unit="reqps"),
        Panel("History ingest lag and backlog", (
            _q("max by (instance) (history_ingest_lag_seconds)", "lag {{instance}}"),
        ), unit="s", description="Age of the newest journal record when its batch committed to the history table."),
        Panel("History journal backlog", (_q("sum by (instance) (history_ingest_backlog_records)", "{{instance}}"),),
              description="Journal records waiting for the ingester at the start of its last pass."),
        Panel("History rows ingested/s, torn segments", (
            _q(f"sum(rate(history_ingested_rows_total{RATE}))", "rows/s"),
            _q(f"sum(rate(history_journal_torn_total{RATE}))", "torn segments/s"),
        ), unit="ops"),
        Panel("gRPC calls/s by method and code",
              (_q(f"sum by (method, code) (rate(gateway_grpc_requests_total{RATE}))", "{{method}} {{code}}"),), unit="reqps",
              description="Per model (inference calls): the serving dashboard's error panel."),
        Panel("Upstream latency p99 by protocol", (
            _q(f"histogram_quantile(0.99, sum by (le, protocol) (rate(gateway_upstream_duration_seconds_bucket{RATE})))", "{{protocol}}"),),
              unit="s"),
        Panel("WebSocket connections", (_q("sum(gateway_ws_connections)", "open"),),
              description="Open, authenticated /api/v1/ws connections."),
        Panel("WebSocket frames/s: received, answered, failed, dropped", (
            _q(f"sum(rate(gateway_ws_frames_received_total{RATE}))", "received"),
            _q(f"sum(rate(gateway_ws_frames_answered_total{RATE}))", "answered"),
            _q(f"sum(rate(gateway_ws_frames_failed_total{RATE}))", "failed"),
            _q(f"sum by (reason) (rate(gateway_ws_frames_dropped_total{RATE}))", "dropped ({{reason}})"),
        ), unit="ops", description="Dropped: a newer frame replaced a waiting one (backpressure) or over the user's quota."),
        Panel("WebSocket frame latency", (
            _q(f"histogram_quantile(0.5, sum by (le) (rate(gateway_ws_frame_duration_seconds_bucket{RATE})))", "p50"),
            _q(f"histogram_quantile(0.99, sum by (le) (rate(gateway_ws_frame_duration_seconds_bucket{RATE})))", "p99"),
        ), unit="s", description="From a frame's receipt to its answer being queued for the client."),
        Panel("WebSocket closes/s by reason", (_q(f"sum by (reason) (rate(gateway_ws_closed_total{RATE}))", "{{reason}}"),),
              unit="ops", description="Closed by the gateway: auth, idle, too_big, slow_client, too_many_connections."),
        Panel("Alerts raised by severity (dashboard range)", (
            _q("sum by (severity) (increase(alerts_total[$__range]))", "{{severity}}"),), kind="bargauge",
              description="Alerts from alert rules (and manual ones), counted from the alerts table at scrape time "
                          "wherever the rules ran (embedded or external ingester, apps). docs/alerts.md."),
    ], model_variable=False)


def usage() -> Dashboard:
    about = ("Who uses which model. Callers are numeric user ids (names stay out of /metrics: GET /api/v1/users/{id} "
             "resolves one); the first 100 ids get their own series, later ones count as 'other'. Per-user totals over any "
             "period are in the history (/api/v1/dashboard).")
    return Dashboard("mlstack-usage", "Usage", about, [
        Panel("Requests/s per user (top 10)", (
            _q(f"topk(10, sum by (user_id) (rate(gateway_principal_requests_total{RATE})))", "user {{user_id}}"),),
              unit="reqps", description="Inference requests by the account that made them, whatever the credential."),
        Panel("Requests/s by user and credential (top 10)", (
            _q(f"topk(10, sum by (user_id, kind) (rate(gateway_principal_requests_total{RATE})))", "user {{user_id}} {{kind}}"),),
              unit="reqps", description="kind: user = a login token, api_key = one of the user's API keys."),
        Panel("Requests by model and version (dashboard range)", (
            _q('sum by (model, version) (increase(gateway_requests_total{model!="", model=~"$model"}[$__range]))',
               "{{model}} v{{version}}"),), kind="bargauge"),
        Panel("Requests/s by protocol", (
            _q(f"sum by (protocol) (rate(gateway_inference_duration_seconds_count{M}{RATE}))", "{{protocol}}"),),
              unit="reqps", description="http = KServe v2, rest = /api/v1/predict, task = BentoML tasks, grpc."),
    ])


DASHBOARDS = {"serving-overview": serving_overview, "gateway": gateway, "usage": usage}


def to_grafana(d: Dashboard) -> dict:
    """The Grafana JSON model (schema 39) of ``d``: two panels per row, one Prometheus datasource."""
    panels = []
    for i, p in enumerate(d.panels):
        panel: dict = {
            "id": i + 1, "type": p.kind, "title": p.title, "description": p.description, "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if p.kind == "timeseries" else {},
            "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
                        for j, q in enumerate(p.queries)],
        }
        panels.append(panel)
    templating: list[dict] = []
    if d.model_variable:
        templating.append({"name": "model", "label": "model", "type": "query", "datasource": DATASOURCE,
                           "query": {"query": "label_values(nv_inference_count, model)", "refId": "model"},
                           "definition": "label_values(nv_inference_count, model)", "refresh": 2,
                           "includeAll": True, "multi": True, "allValue": ".+",
                           "current": {"selected": True, "text": ["All"], "value": ["$__all"]}})
    return {"uid": d.uid, "title": d.title, "description": d.description, "tags": ["mlstack"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": templating}, "annotations": {"list": []}, "panels": panels}


def render_all() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(to_grafana(build()), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def panel_queries(dashboard_json: dict) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every target of a Grafana dashboard JSON model."""
    return [(p["title"], t["expr"]) for p in dashboard_json.get("panels", []) for t in p.get("targets", [])]


def substitute(expr: str, rate_interval: str = "30s", range_: str = "1h") -> str:
    """Replace Grafana's variables so Prometheus can run the query (``$model`` = all models)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    return re.sub(r"\$model\b", ".+", expr)


def main() -> None:
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (DASHBOARD_DIR / name).write_text(text)
        sys.stdout.write(f"wrote {DASHBOARD_DIR / name}\n")


if __name__ == "__main__":
    main()
