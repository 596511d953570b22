"""/api/v1/ws against a real gateway and Triton: auth variants, every command, binary frames, errors that keep the
connection, drops under a flood, history rows = answered frames, feedback by prediction id."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.ws_frames import digit_pngs
from tests.auth_api.ws_client import close_code, open_ws, recv, send, until, ws_url
from tests.fixtures.db import fresh_database
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
IRIS = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


@pytest.fixture
def tgw(tmp_path: Path, triton: TritonFixture) -> Iterator[RunningGateway]:
    with fresh_database("sqlite", tmp_path) as url, run_gateway(gateway_settings(tmp_path, url, triton=triton,
                                                                                 gateway_ws_auth_timeout_s=1.0)) as gw:
        yield gw


def test_auth_variants(tgw: RunningGateway) -> None:
    token = tgw.create_user("ws_auth")
    with open_ws(tgw, token) as ws:  # Authorization header
        assert recv(ws)["type"] == "ready"
    from websockets.sync.client import connect

    with connect(ws_url(tgw), subprotocols=["bearer", token]) as ws:  # type: ignore[list-item]  # browsers
        assert ws.subprotocol == "bearer"
        assert recv(ws)["user"] == "ws_auth"
    with open_ws(tgw) as ws:  # first message
        send(ws, command="auth", token=token)
        assert recv(ws)["type"] == "ready"
        send(ws, command="ping", request_id=7)
        assert recv(ws) == {"type": "pong", "request_id": 7}
    with tgw.client(token) as c:
        key = c.post("/api/v1/api-keys", json={"name": "cam"}).json()["key"]
    with open_ws(tgw, key) as ws:  # an API key as the bearer
        assert recv(ws)["type"] == "ready"
    with open_ws(tgw) as ws:  # nothing within the auth timeout
        code, seen = close_code(ws)
        assert code == 1008 and seen[0]["error"]["code"] == "missing_credentials"
    with open_ws(tgw) as ws:  # a first message that is no auth
        send(ws, command="ping")
        assert close_code(ws)[0] == 1008
    with open_ws(tgw, "not-a-token") as ws:
        code, seen = close_code(ws)
        assert code == 1008 and seen[0]["type"] == "error"


def test_every_command(tgw: RunningGateway) -> None:
    token = tgw.create_user("ws_cmd")
    frames = digit_pngs()
    with open_ws(tgw, token) as ws:
        until(ws, "ready")
        label, png = frames[3]
        send(ws, command="predict", model="digits-cnn", image=base64.b64encode(png).decode(), request_id="a")
        p = until(ws, "prediction")
        assert p["request_id"] == "a" and p["model"] == "digits-cnn" and p["version"]
        assert p["label"] == str(label) and 0 < p["confidence"] <= 1 and len(p["predictions"]) == 3
        assert p["predictions"][0]["label"] == p["label"] and p["latency_ms"] > 0 and len(p["prediction_id"]) == 36
        send(ws, command="predict", model="iris-svm", records=[IRIS, IRIS], request_id="r")
        p = until(ws, "prediction")
        assert [r["label"] for r in p["results"]] == ["setosa", "setosa"] and p["results"][0]["predictions"]
        send(ws, command="predict", model="diabetes-linear", records=[_diabetes(tgw)])
        assert isinstance(until(ws, "prediction")["results"][0]["value"], float)
        send(ws, command="predict", model="iris-logreg",
             inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(IRIS.values())}])
        assert until(ws, "prediction")["label"] == "setosa"
        for cmd in ("labels", "emotions"):
            send(ws, command=cmd, model="digits-cnn", request_id=cmd)
            msg = recv(ws)
            assert msg["type"] == "labels" and msg["request_id"] == cmd and msg["labels"] == [str(i) for i in range(10)]
        send(ws, command="model_info", model="digits-cnn")
        info = recv(ws)
        assert info["task"] == "classification" and info["inputs"][0]["shape"][1:] == [1, 8, 8] and info["metrics"]
        send(ws, command="health")
        h = recv(ws)
        assert h["gateway"] == "up" and h["triton"] == "up" and "bento" in h
        send(ws, command="config", model="digits-cnn", top_k=1)
        assert recv(ws)["model"] == "digits-cnn"
        for label, png in frames[:5]:
            ws.send(png)  # binary frame: the configured model, no base64
            p = until(ws, "prediction")
            assert p["label"] == str(label) and len(p["predictions"]) == 1
        # Errors answer and keep the connection open.
        for bad, code in ((dict(command="dance"), "unknown_command"),
                          (dict(command="predict", model="nope-model", records=[IRIS]), "model_not_found"),
                          (dict(command="predict", model="digits-cnn", image="@@@"), "invalid_base64"),
                          (dict(command="predict", model="digits-cnn", image=base64.b64encode(b"hello").decode()), "not_an_image"),
                          (dict(command="predict", model="iris-svm", records=[{"x": 1.0}]), "feature_mismatch"),
                          (dict(command="predict", model="iris-svm"), "invalid_payload"),
                          (dict(command="predict", model="iris-svm", records=[IRIS], image="AAAA"), "invalid_payload"),
                          (dict(command="labels", model=""), "missing_model"),
                          (dict(command="config", model="digits-cnn", top_k=0), "invalid_top_k")):
            send(ws, request_id="bad", **bad)
            err = until(ws, "error")
            assert err["error"]["code"] == code and err["request_id"] == "bad", err
        ws.send("{not json")
        assert until(ws, "error")["error"]["code"] == "invalid_json"
        ws.send(frames[0][1])
        assert until(ws, "prediction")["label"] == "0"


def _diabetes(gw: RunningGateway) -> dict[str, float]:
    names = gw.state.catalog.card("diabetes-linear").feature_names
    return {n: 0.01 for n in names}


def test_flood_drops_oldest_and_reports(tgw: RunningGateway) -> None:
    token = tgw.create_user("ws_flood")
    frames = digit_pngs()
    with open_ws(tgw, token) as ws:
        until(ws, "ready")
        send(ws, command="config", model="digits-cnn")
        until(ws, "config")
        n = 300
        for i in range(n):
            ws.send(frames[i % len(frames)][1])
        answered = dropped = notices = 0
        start = time.monotonic()
        while answered + dropped < n:
            msg = recv(ws, timeout=15)
            if msg["type"] == "prediction":
                answered += 1
            elif msg["type"] == "dropped":
                dropped += msg["count"]
                notices += 1
        elapsed = time.monotonic() - start
        assert answered + dropped == n and dropped > 0 and answered >= 1
        assert notices <= elapsed + 2  # at most one notice a second
        send(ws, command="ping")
        assert until(ws, "pong")
    metrics = httpx.get(tgw.url + "/metrics").text
    assert f"gateway_ws_frames_received_total {float(n)}" in metrics
    assert 'gateway_ws_frames_dropped_total{reason="backpressure"}' in metrics


def test_latest_frame_wins_under_a_flood(tgw: RunningGateway) -> None:
    """A burst of frames: older waiting frames are dropped for newer ones, so the newest frame is always answered."""
    token = tgw.create_user("ws_latest")
    images = [base64.b64encode(png).decode() for _label, png in digit_pngs()]
    with open_ws(tgw, token) as ws:
        until(ws, "ready")
        n = 80
        for i in range(n):
            send(ws, command="predict", model="digits-cnn", image=images[i % len(images)], request_id=i)
        answered: list[int] = []
        dropped = 0
        while len(answered) + dropped < n:
            msg = recv(ws, timeout=15)
            if msg["type"] == "prediction":
                answered.append(msg["request_id"])
            elif msg["type"] == "dropped":
                dropped += msg["count"]
        assert dropped > 0 and len(answered) + dropped == n
        assert n - 1 in answered, answered  # the latest frame wins: nothing newer ever displaced it
        assert len(set(answered)) == len(answered)


def test_history_rows_equal_answered_frames_and_feedback(tmp_path: Path, db_url: str, triton: TritonFixture) -> None:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        token = gw.create_user("ws_hist")
        ids = []
        with open_ws(gw, token) as ws:
            until(ws, "ready")
            send(ws, command="config", model="digits-cnn")
            until(ws, "config")
            for _label, png in digit_pngs()[:7]:
                ws.send(png)
                ids.append(until(ws, "prediction")["prediction_id"])
            send(ws, command="predict", model="nope-model", records=[IRIS])
            until(ws, "error")
        gw.flush_history()
        with gw.client(token) as c:
            page = c.get("/api/v1/history", params={"status": 200}).json()
            assert page["total"] == 7 and {i["prediction_id"] for i in page["items"]} == set(ids)
            assert all(i["protocol"] == "ws" and i["model"] == "digits-cnn" for i in page["items"])
            r = c.post(f"/api/v1/history/{ids[0]}/feedback", json={"correct": False, "true_label": "8"})
            assert r.status_code in (200, 201), r.text
            assert c.get(f"/api/v1/history/{ids[0]}").status_code == 200
            stats = c.get("/api/v1/dashboard/stats").json()  # counted in the dashboards like any prediction
            assert stats["total"] == 7 and stats["errors"] == 1, stats


def test_a_model_that_keeps_inputs_keeps_each_frames_image(tmp_path: Path, triton: TritonFixture) -> None:
    """``storage_keep_by: {"digits-cnn": "input"}``: a streamed frame's image (binary or base64) is downloadable from its
    history row, byte for byte; a model without the setting keeps none."""
    with fresh_database("sqlite", tmp_path) as url, run_gateway(gateway_settings(
            tmp_path, url, triton=triton, storage_keep_by={"digits-cnn": "input"})) as gw:
        token = gw.create_user("ws_keep")
        (_, binary), (_, b64) = digit_pngs()[4], digit_pngs()[5]
        with open_ws(gw, token) as ws:
            until(ws, "ready")
            send(ws, command="config", model="digits-cnn")
            until(ws, "config")
            ws.send(binary)
            kept_binary = until(ws, "prediction")["prediction_id"]
            send(ws, command="predict", model="digits-cnn", image=base64.b64encode(b64).decode())
            kept_b64 = until(ws, "prediction")["prediction_id"]
            send(ws, command="predict", model="iris-svm", records=[IRIS])
            not_kept = until(ws, "prediction")["prediction_id"]
        gw.flush_history()
        with gw.client(token) as c:
            for pid, image in ((kept_binary, binary), (kept_b64, b64)):
                row = c.get(f"/api/v1/history/{pid}").json()
                assert row["protocol"] == "ws" and row["input"] == "kept", row
                assert row["input_content_type"] == "image/png" and row["input_size"] == len(image)
                assert httpx.get(row["input_url"]).content == image
            assert c.get(f"/api/v1/history/{not_kept}").json()["input"] != "kept"


def test_example_client_streams_digits_and_prints_labels(tgw: RunningGateway) -> None:
    import subprocess
    import sys

    token = tgw.create_user("ws_example")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "examples/ws_client.py", "--url", ws_url(tgw), "--token", token, "--digits", "10",
                          "--fps", "20"], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    labels = [line.split()[0] for line in out.stdout.splitlines() if " ms " in line]
    assert len(labels) == 10 and sum(got == str(i) for i, got in enumerate(labels)) >= 9, out.stdout  # digits-cnn: ~98%
