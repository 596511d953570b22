"""The gateway's /metrics: protected by a bearer token when one is set, no caller names, bounded model/version labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from mlstack.repository.layout import read_card
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow

TOKEN = "metrics-scrape-token-0123456789"
USERNAME = "adalovelace"
KEY_NAME = "zebra-key"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def _v2(row: list[float]) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


@pytest.fixture(scope="module")
def mgw(triton: TritonFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway in front of the session's Triton with a metrics token (SQLite: the labels do not depend on the DB)."""
    tmp = tmp_path_factory.mktemp("metrics_hygiene")
    settings = gateway_settings(tmp, f"sqlite:///{tmp / 'gw.db'}", triton=triton, gateway_metrics_token=TOKEN)
    with run_gateway(settings) as gw:
        yield gw


def _scrape(gw: RunningGateway) -> str:
    r = httpx.get(f"{gw.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def _label_values(text: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}="([^"]*)"', text))


def test_metrics_need_the_token_when_one_is_set(mgw: RunningGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {mgw.admin_token()}"}):
        r = httpx.get(f"{mgw.url}/metrics", headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "metrics_token_required"
        assert r.headers["www-authenticate"] == "Bearer"
        assert "gateway_requests_total" not in r.text
    assert "gateway_requests_total" in _scrape(mgw)


def test_no_usernames_or_key_names_after_a_user_predicts(mgw: RunningGateway) -> None:
    token = mgw.create_user(USERNAME)
    with mgw.client(token) as c:
        assert c.post("/v2/models/iris-logreg/infer", json=_v2(IRIS_ROW)).status_code == 200
        assert c.post("/api/v1/predict/iris-logreg", json={"instances": [IRIS_ROW]}).status_code == 200
        key = c.post("/api/v1/api-keys", json={"name": KEY_NAME, "scopes": ["predict"]})
        assert key.status_code == 201, key.text
        me = c.get("/api/v1/auth/me")
    assert me.status_code == 200, me.text
    user_id = str(me.json()["id"])
    r = httpx.post(f"{mgw.url}/v2/models/iris-logreg/infer", json=_v2(IRIS_ROW), headers={"X-API-Key": key.json()["key"]},
                   timeout=30)
    assert r.status_code == 200, r.text
    text = _scrape(mgw)
    assert USERNAME not in text and KEY_NAME not in text and "/key-" not in text
    assert f'gateway_principal_requests_total{{kind="user",user_id="{user_id}"}} 2.0' in text
    assert f'gateway_principal_requests_total{{kind="api_key",user_id="{user_id}"}} 1.0' in text


def test_unknown_models_and_versions_are_labelled_other(mgw: RunningGateway) -> None:
    with mgw.client(mgw.admin_token()) as c:
        for name in ("nope", "nope-1", "nope-2"):
            assert c.post(f"/v2/models/{name}/infer", json=_v2(IRIS_ROW)).status_code in (400, 404)
            assert c.post(f"/api/v1/predict/{name}", json={"instances": [IRIS_ROW]}).status_code == 404
        assert c.post("/v2/models/iris-logreg/versions/99/infer", json=_v2(IRIS_ROW)).status_code in (400, 404)
        assert c.post("/v2/models/iris-logreg/infer", json=_v2(IRIS_ROW)).status_code == 200
    text = _scrape(mgw)
    models = _label_values(text, "model")
    assert not {"nope", "nope-1", "nope-2"} & models, sorted(models)
    assert models <= {"", "other", *(p.name for p in mgw.settings.repository.iterdir() if p.is_dir())}, sorted(models)
    assert 'model="other"' in text and "iris-logreg" in models
    assert "99" not in _label_values(text, "version")
    assert re.search(r'gateway_requests_total\{model="iris-logreg",route="/v2/models/\{name\}/versions/\{version\}/infer",'
                     r'status="4\d\d",version="other"\}', text), "a missing version is not labelled 'other'"


def test_grpc_latency_is_labelled_with_the_model(mgw: RunningGateway) -> None:
    with grpcclient.InferenceServerClient(mgw.grpc_url) as client:
        inp = grpcclient.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
        result = client.infer("iris-logreg", [inp], headers={"authorization": f"Bearer {mgw.admin_token()}"})
        assert result.as_numpy("label") is not None
    text = _scrape(mgw)
    assert re.search(r'gateway_upstream_duration_seconds_count\{model="iris-logreg",protocol="grpc"\} [1-9]', text), text
    assert re.search(r'gateway_inference_duration_seconds_count\{model="iris-logreg",protocol="grpc"\} [1-9]', text)
    assert 'protocol="grpc",model=""' not in text and 'model="",protocol="grpc"' not in text


def test_client_latency_covers_every_protocol_by_model(mgw: RunningGateway, triton: TritonFixture, bento: BentoFixture,
                                                      tmp_path: Path) -> None:
    with mgw.client(mgw.admin_token()) as c:
        assert c.post("/v2/models/iris-rf/infer", json=_v2(IRIS_ROW)).status_code == 200
        assert c.post("/api/v1/predict/iris-rf", json={"instances": [IRIS_ROW]}).status_code == 200
    with grpcclient.InferenceServerClient(mgw.grpc_url) as client:
        inp = grpcclient.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(np.array([IRIS_ROW], dtype=np.float32))
        client.infer("iris-rf", [inp], headers={"authorization": f"Bearer {mgw.admin_token()}"})
    text = _scrape(mgw)
    for protocol in ("http", "rest", "grpc"):
        assert re.search(rf'gateway_inference_duration_seconds_count\{{model="iris-rf",protocol="{protocol}"\}} [1-9]', text), protocol
    # Tasks: a gateway with the task service behind it (mgw has none), answered by the model the body names.
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", triton=triton, gateway_metrics_token=TOKEN,
                                bento_host=bento.settings.bento_host, bento_port=bento.settings.bento_port)
    features = read_card(bento.repository, "iris-rf", 1).feature_names
    with run_gateway(settings) as tgw, tgw.client(tgw.admin_token()) as c:
        r = c.post("/api/v1/tasks/predict_records", json={"model": "iris-rf", "records": [dict(zip(features, IRIS_ROW, strict=True))]})
        assert r.status_code == 200, r.text
        text = _scrape(tgw)
    assert re.search(r'gateway_inference_duration_seconds_count\{model="iris-rf",protocol="task"\} [1-9]', text), \
        [ln for ln in text.splitlines() if ln.startswith("gateway_inference_duration_seconds_count")]


def test_failed_task_and_grpc_calls_carry_their_model(mgw: RunningGateway) -> None:
    """The per-model error panel sees failures on every path: a task call whose service is down (this gateway has no
    BentoML behind it) and a gRPC call Triton would refuse are labelled with the model they named."""
    with mgw.client(mgw.admin_token()) as c:
        r = c.post("/api/v1/tasks/predict_records", json={"model": "iris-knn", "records": [{"a": 1.0}]})
        assert r.status_code == 503, r.text
    with grpcclient.InferenceServerClient(mgw.grpc_url) as client:
        inp = grpcclient.InferInput("input", [1, 3], "FP32")  # the model takes 4 features
        inp.set_data_from_numpy(np.array([IRIS_ROW[:3]], dtype=np.float32))
        with pytest.raises(InferenceServerException):
            client.infer("iris-knn", [inp], headers={"authorization": f"Bearer {mgw.admin_token()}"})
    text = _scrape(mgw)
    assert _counted(text, "gateway_requests_total", route="/api/v1/tasks/{task}", model="iris-knn", status="503"), \
        [ln for ln in text.splitlines() if ln.startswith("gateway_requests_total") and "tasks" in ln]
    assert _counted(text, "gateway_grpc_requests_total", method="ModelInfer", code="INVALID_ARGUMENT", model="iris-knn"), \
        [ln for ln in text.splitlines() if ln.startswith("gateway_grpc_requests_total")]


def _counted(text: str, metric: str, **labels: str) -> bool:
    """Whether a sample of ``metric`` with (at least) ``labels``, in any order, is ≥ 1."""
    for m in re.finditer(rf'^{metric}\{{((?:\w+="[^"]*",?)*)\}} ([0-9.e+]+)$', text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()) and float(m.group(2)) >= 1:
            return True
    return False


def test_no_token_means_open_metrics(tmp_path: Path) -> None:
    with run_gateway(gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}")) as gw:
        assert httpx.get(f"{gw.url}/metrics", timeout=30).status_code == 200
