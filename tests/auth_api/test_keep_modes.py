"""``storage_keep_by`` on the tensor paths: a model set to ``none`` leaves a bare history row (model, version, status,
timings; no input hash, no outputs) over v2 HTTP, gRPC (unary and streamed) and ``/api/v1/predict``, as on the task
routes; a model left at the default keeps the summary. ``input`` keeps the summary there (tensors are no uploads)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from auth_api.proxy.keep import RouteKeep, http_version
from mlstack.settings import Settings
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

ROW = [5.1, 3.5, 1.4, 0.2]
PROTOCOLS = ["grpc", "grpc", "http", "rest"]  # unary and streamed gRPC, v2 HTTP, REST predict


@pytest.fixture
def kgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton,
                                      storage_keep_by={"iris-logreg": "none", "iris-svm": "input"})) as gw:
        yield gw


def _predict_everywhere(gw: RunningGateway, token: str, model: str) -> None:
    """One prediction of ``ROW`` by ``model`` over each path."""
    with gw.client(token) as c:
        r = c.post(f"/v2/models/{model}/infer", json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                                  "data": ROW}]})
        assert r.status_code == 200, r.text
        r = c.post(f"/api/v1/predict/{model}", json={"instances": [ROW]})
        assert r.status_code == 200, r.text
    md = {"authorization": f"Bearer {token}"}
    x = np.array([ROW], dtype=np.float32)
    cli = grpcclient.InferenceServerClient(gw.grpc_url)
    try:
        inp = grpcclient.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        assert cli.infer(model, [inp], headers=md).as_numpy("probabilities") is not None
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        cli.start_stream(callback=lambda result, error: answers.put((result, error)), headers=md)
        cli.async_stream_infer(model, [inp])
        _result, error = answers.get(timeout=30)
        assert error is None, error
        cli.stop_stream()
    finally:
        cli.close()


@pytest.mark.slow
def test_a_model_set_to_none_keeps_bare_rows_on_every_tensor_path(kgw: RunningGateway) -> None:
    token = kgw.create_user("keeper")
    for model in ("iris-logreg", "iris-svm"):
        _predict_everywhere(kgw, token, model)
    kgw.flush_history()
    with kgw.client(token) as c:
        rows = c.get("/api/v1/history", params={"limit": 100}).json()["items"]
    bare = [r for r in rows if r["model"] == "iris-logreg"]
    kept = [r for r in rows if r["model"] == "iris-svm"]
    assert sorted(r["protocol"] for r in bare) == sorted(r["protocol"] for r in kept) == PROTOCOLS, rows
    for r in bare:  # none: the row says who asked which model and version, and how it went; nothing of the data
        assert (r["status"], r["version"]) == (200, "1"), r
        assert r["input_sha256"] is None and r["input_shape"] is None and r["input_dtype"] is None, r
        assert r["output_label"] is None and r["output_confidence"] is None, r
    for r in kept:  # input (like summary) on these paths: the summary
        assert r["status"] == 200 and r["output_label"] == "setosa" and r["input_sha256"], r
        assert r["input_shape"] == "[1, 4]", r


def test_a_route_entry_applies_to_its_path_and_a_model_entry_wins(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path, storage_keep_by={"grpc": "none", "iris-svm": "summary", "iris-rf": "none"})
    grpc, http = RouteKeep(s, "grpc"), RouteKeep(s, "http")
    assert grpc.bare("iris-logreg") and not grpc.bare("iris-svm") and grpc.bare("iris-rf")
    assert not http.bare("iris-logreg") and http.bare("iris-rf")
    assert RouteKeep(Settings(var_dir=tmp_path, storage_keep="none"), "rest").bare("any-model")
    assert http_version(b'{"id":"a","model_name":"m","model_version":"12","outputs":[]}') == "12"
    assert http_version(b'{"model_name":"m","outputs":[]}') is None
