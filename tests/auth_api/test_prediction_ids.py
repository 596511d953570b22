"""Prediction ids: every prediction path returns a time-ordered id, and history finds it (and takes feedback on it) at
once, for its owner only. A real gateway in front of a real Triton, on SQLite and PostgreSQL."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import uuid_utils
from tritonclient.grpc import service_pb2

from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
ROW = [5.1, 3.5, 1.4, 0.2]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def _v7(pid: str) -> uuid_utils.UUID:
    u = uuid_utils.UUID(pid)
    assert u.version == 7 and str(u) == pid, pid
    assert abs(u.timestamp / 1000 - time.time()) < 60, "minted now"
    return u


def _v2_body(row: list[float], rid: str | None = None) -> dict:
    body: dict = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    if rid is not None:
        body["id"] = rid
    return body


def test_v2_http_ids_and_read_your_writes(tgw: RunningGateway) -> None:
    """50 predictions, each looked up right after its response: 200 every time, the row keyed by the returned id."""
    token = tgw.create_user("alice")
    rng = np.random.default_rng(0)
    seen = []
    with tgw.client(token) as c:
        for i in range(50):
            r = c.post("/v2/models/iris-logreg/infer", json=_v2_body(rng.uniform(0.5, 7, 4).round(2).tolist(), f"req-{i}"))
            assert r.status_code == 200, r.text
            assert r.json()["id"] == f"req-{i}", "the v2 request id is still echoed"
            pid = r.headers["X-Prediction-Id"]
            _v7(pid)
            h = c.get(f"/api/v1/history/{pid}")
            assert h.status_code == 200, (i, h.text)
            row = h.json()
            assert row["prediction_id"] == pid and row["model"] == "iris-logreg" and row["status"] == 200
            assert row["output_label"] and row["input_shape"] == "[1, 4]"
            seen.append(pid)
        assert seen == sorted(seen) and len(set(seen)) == 50, "time-ordered and unique"
        fb = c.post(f"/api/v1/history/{seen[-1]}/feedback", json={"correct": False, "true_label": "setosa"})
        assert fb.status_code == 200, fb.text
        # the integer form still works
        by_int = c.get(f"/api/v1/history/{row['id']}")
        assert by_int.status_code == 200 and by_int.json()["prediction_id"] == seen[-1]
        # and the id without dashes / in upper case names the same prediction
        assert c.get(f"/api/v1/history/{seen[0].replace('-', '').upper()}").json()["prediction_id"] == seen[0]


def test_failures_carry_an_id_too_and_other_users_get_404(tgw: RunningGateway) -> None:
    alice, mallory = tgw.create_user("alice"), tgw.create_user("mallory")
    with tgw.client(alice) as c:
        bad = c.post("/v2/models/iris-logreg/infer",
                     json={"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
        assert bad.status_code == 400
        pid = bad.headers["X-Prediction-Id"]
        row = c.get(f"/api/v1/history/{pid}")
        assert row.status_code == 200 and row.json()["status"] == 400 and row.json()["error_code"], row.text
        ok = c.post("/v2/models/iris-logreg/infer", json=_v2_body(ROW)).headers["X-Prediction-Id"]
        assert c.get(f"/api/v1/history/{ok}").status_code == 200
    with httpx.Client(base_url=tgw.url) as anon:  # no prediction of anyone's: no id
        r = anon.post("/v2/models/iris-logreg/infer", json=_v2_body(ROW))
        assert r.status_code == 401 and "x-prediction-id" not in r.headers
    with tgw.client(mallory) as m:
        for target in (ok, pid):
            r = m.get(f"/api/v1/history/{target}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "prediction_not_found"
            assert m.post(f"/api/v1/history/{target}/feedback", json={"correct": True}).status_code == 404
        # an id nobody was given: the same answer (no leak of which ids exist)
        assert m.get(f"/api/v1/history/{uuid_utils.uuid7()}").status_code == 404
        assert m.get("/api/v1/history/not-an-id").status_code == 422
        assert m.get("/api/v1/history/00000000-0000-4000-8000-000000000000").status_code == 404
    with tgw.client(tgw.admin_token()) as a:
        assert a.get(f"/api/v1/history/{ok}").status_code == 200, "admins see every prediction"


def test_rest_predict_returns_the_id_in_body_and_header(tgw: RunningGateway) -> None:
    token = tgw.create_user("bob")
    with tgw.client(token) as c:
        r = c.post("/api/v1/predict/iris-logreg", json={"instances": [ROW]})
        assert r.status_code == 200, r.text
        pid = r.json()["prediction_id"]
        assert r.headers["X-Prediction-Id"] == pid
        _v7(pid)
        h = c.get(f"/api/v1/history/{pid}").json()
        assert h["protocol"] == "rest" and h["output_label"] == r.json()["predictions"][0]["label"]
        missing = c.post("/api/v1/predict/no-such-model", json={"instances": [ROW]})
        assert missing.status_code == 404 and "Traceback" not in missing.text
        fail = c.get(f"/api/v1/history/{missing.headers['X-Prediction-Id']}").json()
        assert fail["status"] == 404 and fail["error_code"] == "model_not_found"


def test_history_list_right_after_predictions_includes_them(tgw: RunningGateway) -> None:
    token = tgw.create_user("lisa")
    with tgw.client(token) as c:
        ids = []
        for i in range(20):
            r = c.post("/v2/models/iris-logreg/infer", json=_v2_body([5.0 + i / 10, 3.0, 1.4, 0.2]))
            assert r.status_code == 200, r.text
            ids.append(r.headers["X-Prediction-Id"])
        page = c.get("/api/v1/history", params={"limit": 100}).json()  # no flush, no sleep: what a client would do
    assert page["total"] == 20 and {row["prediction_id"] for row in page["items"]} == set(ids)


def _infer_request(model: str) -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model, id="grpc-req")
    t = req.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    t.contents.fp32_contents.extend(ROW)
    return req.SerializeToString()


def test_grpc_unary_trailing_metadata_and_stream_parameters(tgw: RunningGateway) -> None:
    token = tgw.create_user("carol")
    md = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(tgw.grpc_url) as ch:
        call = ch.unary_unary(MODEL_INFER)
        resp, info = call.with_call(_infer_request("iris-logreg"), metadata=md)
        assert service_pb2.ModelInferResponse.FromString(resp).id == "grpc-req"
        pid = dict(info.trailing_metadata())["x-prediction-id"]
        _v7(pid)
        with pytest.raises(grpc.RpcError) as err:
            call.with_call(_infer_request("no-such-model"), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        failed = dict(err.value.trailing_metadata())["x-prediction-id"]
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url=tgw.grpc_url)
    client.start_stream(callback=lambda result, error: results.put((result, error)), headers=dict(md))
    try:
        for _ in range(3):
            inp = grpcclient.InferInput("input", [1, 4], "FP32")
            inp.set_data_from_numpy(np.array([ROW], dtype=np.float32))
            client.async_stream_infer("iris-logreg", [inp])
        answers = [results.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
        client.close()
    streamed = []
    for result, error in answers:
        assert error is None, error
        streamed.append(result.get_response().parameters["prediction_id"].string_param)
        _v7(streamed[-1])
    assert len(set(streamed)) == 3, "one id per streamed answer"
    with tgw.client(token) as c:
        for p in [pid, *streamed]:
            h = c.get(f"/api/v1/history/{p}")
            assert h.status_code == 200 and h.json()["protocol"] == "grpc" and h.json()["status"] == 200, h.text
        f = c.get(f"/api/v1/history/{failed}").json()
        assert f["status"] == 404 and f["error_code"] == "model_not_found"


def test_task_calls_return_their_id(tmp_path: Path, db_url: str, bento: BentoFixture) -> None:
    settings = gateway_settings(tmp_path, db_url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                bento_port=bento.settings.bento_port)
    with run_gateway(settings) as gw, gw.client(gw.create_user("dora")) as c:
        r = c.post("/api/v1/tasks/predict_records", json={"model": "iris-rf", "records": [
            {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}]})
        assert r.status_code == 200, r.text
        body = r.json()
        pid = body["prediction_id"]
        assert r.headers["X-Prediction-Id"] == pid and body["results"], body
        h = c.get(f"/api/v1/history/{pid}").json()
        assert h["protocol"] == "task:predict_records" and h["input_dtype"] == "records"
        bad = c.post("/api/v1/tasks/predict_records", json={"model": "iris-rf", "records": [{"nope": 1.0}]})
        assert bad.status_code >= 400 and c.get(f"/api/v1/history/{bad.headers['X-Prediction-Id']}").json()["status"] == bad.status_code
