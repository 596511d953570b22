"""Every Grafana panel's PromQL returns data from a real Prometheus scraping the real stack under traffic."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from monitoring.config import Target
from tests.fixtures.bento import BentoFixture
from tests.fixtures.clones import clone_model, wait_ready
from tests.fixtures.triton import TritonFixture, free_ports
from tests.monitoring.live import (
    IRIS_ROW,
    all_panel_queries,
    gateway_process,
    metric_families,
    missing_data,
    prometheus,
    triton_traffic,
    v2_body,
    wait_targets_up,
)

ADMIN_PASSWORD = "monitoring-test-admin-pw"
METRICS_TOKEN = "monitoring-test-metrics-token"


def _triton_target(triton: TritonFixture) -> Target:
    return Target("triton", f"{triton.settings.triton_host}:{triton.settings.triton_metrics_port}")


def test_triton_panels_return_data(triton: TritonFixture, tmp_path: Path) -> None:
    queries = [q for q in all_panel_queries() if metric_families(q[2]) == {"nv"}]
    assert len(queries) >= 6, "the Serving overview lost its Triton panels"
    # Triton's response cache is off for the shipped models; a clone with it on gives the cache panel its series
    # (whatever other tests did to the session's Triton before).
    cached = "mon-tcache-on"
    if not (triton.repository / cached).exists():
        clone_model(triton.repository, "iris-logreg", cached, response_cache=True)
    wait_ready(triton.server.http_url, cached)
    with prometheus(tmp_path, [_triton_target(triton)]) as prom:
        wait_targets_up(prom, {"triton", "prometheus"})
        triton_traffic(triton.server.http_url)
        triton_traffic(triton.server.http_url, model=cached, requests=100)
        assert missing_data(prom, queries) == []


def test_gateway_panels_return_data(triton: TritonFixture, tmp_path: Path) -> None:
    """The gateway as `mlstack up` runs it, /metrics behind a token that Prometheus sends: HTTP + gRPC traffic, a refused
    token, an unknown model, then every remaining panel."""
    http_port, grpc_port = free_ports(2)
    settings = triton.settings.model_copy(update={
        "var_dir": tmp_path / "gw_var", "gateway_http_port": http_port, "gateway_grpc_port": grpc_port,
        "admin_password": SecretStr(ADMIN_PASSWORD), "gateway_metrics_token": SecretStr(METRICS_TOKEN),
        "gateway_prediction_cache": True})  # half of triton_traffic's rows repeat: the hit-ratio panel gets data
    queries = [q for q in all_panel_queries() if metric_families(q[2]) & {"gateway", "alerts"}]
    token_file = tmp_path / "gateway_metrics_token"
    token_file.write_text(METRICS_TOKEN)
    with gateway_process(settings, tmp_path / "gateway.log") as url:
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
        targets = [_triton_target(triton), Target("gateway", f"127.0.0.1:{http_port}", credentials_file=token_file)]
        with prometheus(tmp_path, targets) as prom:
            wait_targets_up(prom, {"triton", "gateway"})
            token = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                               timeout=30).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            triton_traffic(url, requests=200, headers=auth)
            r = httpx.post(f"{url}/api/v1/predict/iris-logreg", json={"instances": [IRIS_ROW]}, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            key = httpx.post(f"{url}/api/v1/api-keys", json={"name": "bench"}, headers=auth, timeout=30)
            assert key.status_code == 201, key.text
            r = httpx.post(f"{url}/v2/models/iris-logreg/infer", json=v2_body(IRIS_ROW), headers={"X-API-Key": key.json()["key"]},
                           timeout=30)
            assert r.status_code == 200, r.text
            refused = httpx.post(f"{url}/v2/models/iris-logreg/infer", json=v2_body(IRIS_ROW),
                                 headers={"Authorization": "Bearer not-a-token"}, timeout=30)
            assert refused.status_code == 401, refused.text
            unknown = httpx.post(f"{url}/api/v1/predict/nope", json={"instances": [IRIS_ROW]}, headers=auth, timeout=30)
            assert unknown.status_code == 404, unknown.text
            with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
                inp = grpcclient.InferInput("input", [1, 4], "FP32")
                inp.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
                result = client.infer("iris-logreg", [inp], headers={"authorization": f"Bearer {token}"})
                assert result.as_numpy("label") is not None
                bad = grpcclient.InferInput("input", [1, 3], "FP32")  # a refused call: the gRPC errors series
                bad.set_data_from_numpy(np.array([IRIS_ROW[:3]], dtype=np.float32))
                with pytest.raises(InferenceServerException):
                    client.infer("iris-logreg", [bad], headers={"authorization": f"Bearer {token}"})
            ws_traffic(url, token)
            assert missing_data(prom, queries) == []


def test_bento_panels_return_data(bento: BentoFixture, tmp_path: Path) -> None:
    """The BentoML panels read the task service's own /metrics: records, an explanation, a refused request."""
    queries = [q for q in all_panel_queries() if metric_families(q[2]) == {"bentoml"}]
    assert len(queries) >= 3, "the Serving overview lost its BentoML panels"
    with prometheus(tmp_path, [Target("bento", f"127.0.0.1:{bento.settings.bento_port}")]) as prom:
        wait_targets_up(prom, {"bento"})
        record = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
        for _ in range(5):
            r = bento.post("predict_records", {"model": "iris-rf", "records": [record]})
            assert r.status_code == 200, r.text
        r = bento.post("explain", {"model": "iris-svm", "records": [record]})
        assert r.status_code == 200, r.text
        assert bento.post("predict_records", {"model": "nope", "records": [record]}).status_code == 404
        assert missing_data(prom, queries) == []


def ws_traffic(url: str, token: str) -> None:
    """A WebSocket stream: answered frames (frame latency) for the Gateway dashboard's WebSocket panels."""
    from websockets.sync.client import connect

    from loadtests.ws_frames import digit_pngs

    with connect(url.replace("http://", "ws://") + "/api/v1/ws", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.recv(timeout=10)  # ready
        ws.send('{"command": "config", "model": "digits-cnn"}')
        ws.recv(timeout=10)
        for _label, png in digit_pngs()[:5]:
            ws.send(png)
            ws.recv(timeout=10)
