"""``/api/v1/tasks/{task}`` through a real gateway in front of a real ``bentoml serve``: tasks, auth, history, errors."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mlstack.repository.layout import read_card
from tests.fixtures.bento import BentoFixture
from tests.fixtures.db import BACKENDS, fresh_database
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import free_ports
from tests.services.bento.helpers import png, render_digit
from training.digits_common import split

pytestmark = pytest.mark.slow
ROUTE = "/api/v1/tasks"


@pytest.fixture(scope="module", params=BACKENDS)
def tgw(request: pytest.FixtureRequest, bento: BentoFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway per backend (SQLite, PostgreSQL) in front of the session's task service."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")
    tmp = tmp_path_factory.mktemp(f"tasks_{request.param}")
    with fresh_database(request.param, tmp) as url:
        settings = gateway_settings(tmp, url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                    bento_port=bento.settings.bento_port)
        with run_gateway(settings) as gw:
            yield gw


def _user(gw: RunningGateway, name: str) -> str:
    return gw.tokens.get(name) or gw.create_user(name)


def _err(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    assert "Traceback" not in r.text
    return dict(body["error"])


def _history(gw: RunningGateway, token: str, **params: object) -> list[dict]:
    gw.flush_history()
    with gw.client(token) as c:
        r = c.get("/api/v1/history", params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _records(repo: Path, model: str, rows: np.ndarray) -> list[dict[str, float]]:
    names = read_card(repo, model, 1).feature_names
    return [{n: float(v) for n, v in zip(names, row, strict=True)} for row in rows]


def test_classify_image_through_the_gateway_and_its_history(tgw: RunningGateway) -> None:
    _, x_te, _, y_te = split()
    token, other = _user(tgw, "painter"), _user(tgw, "bystander")
    images = [render_digit(x_te[i], scale=8, invert=i % 2 == 1) for i in range(4)]
    with tgw.client(token) as c:
        answers = [c.post(f"{ROUTE}/classify_image", files={"image": ("digit.png", data, "image/png")},
                          data={"top_k": "2"}) for data in images]
    for i, r in enumerate(answers):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "digits-cnn" and body["version"] == 1 and len(body["predictions"]) == 2
        assert body["predictions"][0]["label"] == str(y_te[i])
    rows = _history(tgw, token, model="digits-cnn")
    assert len(rows) == 4
    newest = rows[0]  # newest first: the last upload
    top = answers[-1].json()["predictions"][0]
    assert newest["protocol"] == "task:classify_image" and newest["status"] == 200 and newest["version"] == "1"
    assert newest["input_dtype"] == "image/png" and json.loads(newest["input_shape"]) == [len(images[-1])]
    assert newest["input_sha256"] == hashlib.sha256(images[-1]).hexdigest()
    assert newest["output_label"] == top["label"] and newest["output_confidence"] == pytest.approx(top["probability"])
    assert newest["upstream_ms"] > 0 and newest["gateway_ms"] >= 0
    assert _history(tgw, other, model="digits-cnn") == []  # a user sees only their own calls
    metrics = httpx.get(f"{tgw.url}/metrics").text
    assert 'gateway_requests_total{model="digits-cnn",route="/api/v1/tasks/{task}",status="200",version="1"} 4.0' in metrics


def test_predict_records_and_explain(tgw: RunningGateway, bento: BentoFixture) -> None:
    token = _user(tgw, "analyst")
    bg = np.load(bento.repository / "battery-fault" / "1" / "background.npy")
    recs = _records(bento.repository, "battery-fault", bg[:2] * np.float32(1.03))
    with tgw.client(token) as c:
        pred = c.post(f"{ROUTE}/predict_records", json={"model": "battery-fault", "records": recs})
        expl = c.post(f"{ROUTE}/explain", json={"model": "battery-fault", "records": recs[:1]}, timeout=120)
        value = c.post(f"{ROUTE}/predict_records", json={"model": "diabetes-rf", "records": _records(
            bento.repository, "diabetes-rf", np.load(bento.repository / "diabetes-rf" / "1" / "background.npy")[:1])})
    assert pred.status_code == 200, pred.text
    # the gateway passes the service's answer through unchanged
    through = pred.json()
    assert through.pop("prediction_id") == pred.headers["X-Prediction-Id"]  # the gateway adds the prediction's id
    assert through == bento.post("predict_records", {"model": "battery-fault", "records": recs}).json()
    first = pred.json()["results"][0]
    assert expl.status_code == 200, expl.text
    exp = expl.json()["explanations"][0]
    assert exp["prediction"] == first
    assert abs(exp["base_value"] + sum(exp["contributions"].values()) - first["probabilities"][first["label"]]) <= 1e-3
    assert value.status_code == 200, value.text
    rows = {r["protocol"]: r for r in _history(tgw, token)}
    assert set(rows) == {"task:predict_records", "task:explain"}
    explain_row = rows["task:explain"]
    assert explain_row["model"] == "battery-fault" and explain_row["input_dtype"] == "records"
    assert json.loads(explain_row["input_shape"]) == [1, len(recs[0])]
    assert explain_row["output_label"] == first["label"]
    assert explain_row["output_confidence"] == pytest.approx(first["probabilities"][first["label"]])
    reg = _history(tgw, token, model="diabetes-rf")[0]
    assert reg["output_value"] == pytest.approx(value.json()["results"][0]["value"]) and reg["output_label"] is None


def test_simulate_battery(tgw: RunningGateway) -> None:
    token = _user(tgw, "twin")
    with tgw.client(token) as c:
        r = c.post(f"{ROUTE}/simulate_battery", json={"profile": {"kind": "constant", "current_a": 3.0, "duration_s": 300,
                                                                   "rest_s": 60}, "seed": 2})
        unscored = c.post(f"{ROUTE}/simulate_battery", json={"score": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["telemetry"]["time_s"]) > 100
    fault, anomaly = body["scores"]["battery-fault"], body["scores"]["battery-anomaly"]
    assert unscored.status_code == 200 and unscored.json()["scores"] == {}
    rows = _history(tgw, token)
    assert [row["model"] for row in rows] == ["battery-simulator", "battery-fault"]
    scored = rows[1]
    assert scored["protocol"] == "task:simulate_battery" and scored["output_label"] == fault["label"]
    assert scored["output_value"] == pytest.approx(anomaly["score"])


def test_auth_and_api_key_scopes(tgw: RunningGateway) -> None:
    token = _user(tgw, "keyholder")
    payload = {"model": "iris-rf", "records": [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4,
                                                "petal_width_cm": 0.2}]}
    with tgw.client() as anon:
        r = anon.post(f"{ROUTE}/predict_records", json=payload)
        assert r.status_code == 401 and _err(r)["code"] == "missing_credentials"
        r = anon.post(f"{ROUTE}/predict_records", json=payload, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401
    with tgw.client(token) as c:
        keys = {scope: c.post("/api/v1/api-keys", json={"name": scope, "scopes": [scope]}).json()["key"]
                for scope in ("predict", "history")}
    with tgw.client() as c:
        ok = c.post(f"{ROUTE}/predict_records", json=payload, headers={"X-API-Key": keys["predict"]})
        assert ok.status_code == 200 and ok.json()["results"][0]["label"] == "setosa"
        r = c.post(f"{ROUTE}/predict_records", json=payload, headers={"X-API-Key": keys["history"]})
        assert r.status_code == 403 and _err(r)["code"] == "missing_scope"
    with tgw.client(tgw.admin_token()) as c:
        assert c.post(f"{ROUTE}/predict_records", json=payload).status_code == 200


def test_errors_pass_through_and_are_recorded_as_failures(tgw: RunningGateway) -> None:
    token = _user(tgw, "clumsy")
    _, x_te, _, _ = split()
    whole = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)))
    with tgw.client(token) as c:
        r = c.post(f"{ROUTE}/classify_image", files={"image": ("broken.png", whole[: len(whole) // 2], "image/png")})
        assert r.status_code == 400 and _err(r)["code"] == "corrupt_image"
        r = c.post(f"{ROUTE}/classify_image", files={"image": ("d.png", render_digit(x_te[0]), "image/png")},
                   data={"model": "no-such-model"})
        assert r.status_code == 404 and _err(r)["code"] == "model_not_found"
        r = c.post(f"{ROUTE}/predict_records", json={"model": "iris-rf", "records": [{"petal_colour": 3}]})
        assert r.status_code == 422 and "petal_colour" in _err(r)["message"]
        big = b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024)  # over the service's 10 MiB, under the gateway's 16 MiB
        r = c.post(f"{ROUTE}/classify_image", files={"image": ("big.png", big, "image/png")})
        assert r.status_code == 413 and _err(r)["code"] == "image_too_large"
        r = c.post(f"{ROUTE}/classify_image", files={"image": ("huge.png", bytes(17 * 1024 * 1024), "image/png")})
        assert r.status_code == 413 and _err(r)["code"] == "body_too_large"
        r = c.post(f"{ROUTE}/summarize_text", json={})
        err = _err(r)
        assert r.status_code == 404 and err["code"] == "task_not_found"
        assert err["details"]["tasks"] == ["classify_image", "predict_records", "explain", "simulate_battery"]
    # Every call the service refused is a failed prediction (status, code, the model asked for, no output); the 413
    # refused by the gateway before the task route and the unknown task are no predictions of any model.
    rows = sorted((r["status"], r["error_code"], r["model"], r["output_label"]) for r in _history(tgw, token))
    assert rows == [(400, "corrupt_image", "classify_image", None), (404, "model_not_found", "no-such-model", None),
                    (413, "image_too_large", "classify_image", None), (422, rows[3][1], "iris-rf", None)]


def test_task_service_down_is_a_fast_503(tmp_path: Path, bento: BentoFixture) -> None:
    (dead,) = free_ports(1)  # nothing listens there
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", repository=bento.repository, bento_port=dead)
    with run_gateway(settings) as gw:
        token = gw.create_user("stranded")
        with gw.client(token) as c:
            start = time.perf_counter()
            r = c.post(f"{ROUTE}/predict_records", json={"model": "iris-rf", "records": []})
            elapsed = time.perf_counter() - start
        assert r.status_code == 503 and _err(r)["code"] == "upstream_unavailable"
        assert elapsed < 1.0, f"503 took {elapsed:.2f}s"
        rows = [(h["status"], h["error_code"], h["model"], h["output_label"]) for h in _history(gw, token)]
        assert rows == [(503, "upstream_unavailable", "iris-rf", None)]  # a failed prediction, not a success


def test_anonymous_callers_pass_only_when_enabled(tmp_path: Path, bento: BentoFixture) -> None:
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}", repository=bento.repository,
                                bento_port=bento.settings.bento_port, gateway_allow_anonymous=True)
    with run_gateway(settings) as gw, gw.client() as anon:
        r = anon.post(f"{ROUTE}/simulate_battery", json={"score": False, "profile": {"durations_s": [60.0], "currents_a": [1.0]}})
        assert r.status_code == 200, r.text
        (row,) = _history(gw, gw.admin_token())  # the admin sees everyone's rows, the anonymous one included
        assert row["user_id"] is None and row["protocol"] == "task:simulate_battery" and row["model"] == "battery-simulator"
