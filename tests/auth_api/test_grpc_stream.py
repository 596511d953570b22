"""gRPC streaming (ModelStreamInfer) through the gateway with stock tritonclient: every streamed answer is a prediction
(history row, metrics), and the first stream after Triton starts answers like any later one."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sqlmodel import Session, select

from auth_api.models import Prediction
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.9, 3.0, 1.4, 0.2],
                 [6.3, 3.3, 6.0, 2.5]], dtype=np.float32)


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def _stream(url: str, headers: dict[str, str], model: str, rows: np.ndarray, width: int = 4) -> list[tuple[object, object]]:
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url=url)
    client.start_stream(callback=lambda result, error: results.put((result, error)), headers=headers)
    try:
        for row in rows:
            inp = grpcclient.InferInput("input", [1, width], "FP32")
            inp.set_data_from_numpy(row.reshape(1, width))
            client.async_stream_infer(model, [inp])
        return [results.get(timeout=30) for _ in rows]
    finally:
        client.stop_stream()
        client.close()


def _rows(gw: RunningGateway, user_id: int) -> list[Prediction]:
    gw.flush_history()
    with Session(gw.state.engine) as db:
        return list(db.exec(select(Prediction).where(Prediction.user_id == user_id).order_by(Prediction.id)))  # type: ignore[arg-type]


def test_stream_answers_are_predictions_from_the_first_stream_on(tgw: RunningGateway) -> None:
    token = tgw.create_user("streamer")
    with tgw.client(token) as c:
        uid = c.get("/api/v1/auth/me").json()["id"]
    md = {"authorization": f"Bearer {token}"}
    # The first stream to these models since Triton started (nothing else in this module streams before it).
    for model in ("iris-logreg", "iris-svm"):
        got = _stream(tgw.grpc_url, md, model, ROWS)
        errors = [e.message() for _, e in got if e is not None]  # type: ignore[attr-defined]
        assert not errors, errors
        assert len(got) == len(ROWS)
    rows = _rows(tgw, uid)
    assert len(rows) == 2 * len(ROWS)
    assert {r.protocol for r in rows} == {"grpc"} and {r.status for r in rows} == {200}
    assert sorted(r.model for r in rows) == ["iris-logreg"] * len(ROWS) + ["iris-svm"] * len(ROWS)
    assert all(r.output_label in {"setosa", "versicolor", "virginica"} and r.version for r in rows)
    metrics = httpx.get(f"{tgw.url}/metrics").text
    for model in ("iris-logreg", "iris-svm"):
        assert f'gateway_grpc_requests_total{{code="OK",method="ModelStreamInfer",model="{model}"}} 5.0' in metrics


def test_a_refused_streamed_request_is_a_failed_prediction(tgw: RunningGateway) -> None:
    token = tgw.create_user("streamer2")
    with tgw.client(token) as c:
        uid = c.get("/api/v1/auth/me").json()["id"]
    got = _stream(tgw.grpc_url, {"authorization": f"Bearer {token}"}, "iris-svm", np.ones((1, 5), np.float32), width=5)
    assert got[0][1] is not None
    rows = _rows(tgw, uid)
    assert [(r.status, r.output_label) for r in rows] == [(400, None)] and rows[0].error_code
    metrics = httpx.get(f"{tgw.url}/metrics").text
    assert 'gateway_grpc_requests_total{code="INVALID_ARGUMENT",method="ModelStreamInfer",model="iris-svm"} 1.0' in metrics
