"""``/api/v1/predict/{name}`` answers with the card of the version Triton serves (or the pinned one), not the newest on
disk: after promoting v1 over a newer v2 without feature names, records and instances still get v1's features and labels."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlstack.repository.card import Dataset, ModelCard
from tests.auth_api.test_serving import iris_card, iris_onnx
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def _upload(c: httpx.Client, name: str, card: ModelCard) -> None:
    files = {"file": ("model.onnx", iris_onnx(), "application/octet-stream")}
    r = c.post(f"/api/v1/models/{name}/versions", files=files, data={"card": card.model_dump_json()})
    assert r.status_code == 201, r.text


def _wait_version(c: httpx.Client, name: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                                 "data": ROW}]})
        if r.status_code == 200 and r.json()["model_version"] == version:
            return
        time.sleep(0.25)
    raise AssertionError(f"{name} never served version {version}")


def test_predict_uses_the_card_of_the_version_that_answers(tgw: RunningGateway) -> None:
    name = f"card-iris-{uuid.uuid4().hex[:6]}"
    eng = tgw.create_user("card_engineer", "engineer")
    records = {"records": [dict(zip(iris_card(name).feature_names, ROW, strict=True))]}
    with tgw.client(eng) as c:
        _upload(c, name, iris_card(name))
        _wait_version(c, name, "1")
        # v2: the same graph with a bare card (no feature names, no labels), newest on disk and live at first
        _upload(c, name, ModelCard(name=name, task="classification", framework="scikit-learn", algorithm="logreg",
                                   dataset=Dataset(name="unknown", source="external")))
        _wait_version(c, name, "2")
        assert c.post(f"/api/v1/predict/{name}", json=records).json()["error"]["code"] == "no_feature_names"
        assert c.post(f"/api/v1/models/{name}/versions/1/promote").status_code == 200
        _wait_version(c, name, "1")
        r = c.post(f"/api/v1/predict/{name}", json=records)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "1" and r.json()["predictions"][0]["label"] == "setosa"
        r = c.post(f"/api/v1/predict/{name}", json={"instances": [ROW]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "setosa"
        assert set(r.json()["predictions"][0]["probabilities"]) == {"setosa", "versicolor", "virginica"}
        # A pinned version answers with its own card: v2 (still on disk, no longer served) is not found
        r = c.post(f"/api/v1/predict/{name}", json={"instances": [ROW], "version": 1})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "setosa"
        tgw.flush_history()
        items = c.get("/api/v1/history", params={"model": name, "status": 200}).json()["items"]
    assert [(i["version"], i["output_label"]) for i in items[:3]] == [("1", "setosa")] * 3
