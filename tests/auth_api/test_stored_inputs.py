"""Stored inputs end to end: a real gateway in front of a real ``bentoml serve``, storing uploads in files or in S3
(moto_server over HTTP), with the same tests on both backends."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from auth_api.storage_gc import gc
from tests.fixtures.bento import BentoFixture
from tests.fixtures.db import fresh_database
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.s3 import start_moto
from tests.services.bento.helpers import render_digit
from training.digits_common import split

pytestmark = pytest.mark.slow
ROUTE = "/api/v1/tasks/classify_image"
KEEP = {"storage_keep_by": {"classify_image": "input", "iris-rf": "none"}}


@pytest.fixture(scope="module", params=["file", "s3"])
def sgw(request: pytest.FixtureRequest, bento: BentoFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp(f"stored_{request.param}")
    extra = request.getfixturevalue("moto").settings() if request.param == "s3" else {}
    with fresh_database("sqlite", tmp) as url:
        settings = gateway_settings(tmp, url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                    bento_port=bento.settings.bento_port, **KEEP, **extra)
        with run_gateway(settings) as gw:
            yield gw


def _digit(i: int, fmt: str = "PNG") -> bytes:
    _, x_te, _, _ = split()
    return render_digit(x_te[i], scale=8, fmt=fmt)


def _user(gw: RunningGateway, name: str) -> str:
    return gw.tokens.get(name) or gw.create_user(name)


def _classify(gw: RunningGateway, token: str, data: bytes, name: str = "digit.png", ctype: str = "image/png") -> str:
    with gw.client(token) as c:
        r = c.post(ROUTE, files={"image": (name, data, ctype)})
    assert r.status_code == 200, r.text
    pid = r.json()["prediction_id"]
    assert r.headers["X-Prediction-Id"] == pid
    return str(pid)


def _history(gw: RunningGateway, token: str, pid: str) -> dict:
    with gw.client(token) as c:
        r = c.get(f"/api/v1/history/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _metric(gw: RunningGateway, name: str) -> float:
    with gw.client() as c:
        text = c.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _readiness(gw: RunningGateway) -> dict:
    """Each dependency's state (Triton is not behind these gateways: the answer is a 503 carrying the same report)."""
    body = httpx.get(gw.url + "/health/ready").json()
    return dict(body.get("dependencies") or body["error"]["details"]["dependencies"])


def test_upload_then_history_then_signed_download_gives_the_same_bytes(sgw: RunningGateway) -> None:
    token = _user(sgw, "eye")
    image = _digit(0)
    pid = _classify(sgw, token, image)
    row = _history(sgw, token, pid)  # at once: no flush, no sleep
    assert row["prediction_id"] == pid and row["input"] == "kept", row
    assert row["input_content_type"] == "image/png" and row["input_size"] == len(image)
    r = httpx.get(row["input_url"])  # no credentials: the URL is the credential
    assert r.status_code == 200 and r.content == image and r.headers["content-type"] == "image/png"
    with sgw.client(token) as c:
        redirect = c.get(f"/api/v1/history/{pid}/input")
    assert redirect.status_code == 307
    again = httpx.get(redirect.headers["location"])
    assert again.status_code == 200 and again.content == image


def test_only_the_owner_or_an_admin_gets_a_url(sgw: RunningGateway) -> None:
    pid = _classify(sgw, _user(sgw, "owner1"), _digit(1))
    stranger = _user(sgw, "stranger1")
    with sgw.client(stranger) as c:
        assert c.get(f"/api/v1/history/{pid}").status_code == 404
        r = c.get(f"/api/v1/history/{pid}/input")
    assert r.status_code == 404 and r.json()["error"]["code"] == "prediction_not_found"
    assert _history(sgw, sgw.admin_token(), pid)["input_url"]


def test_the_same_image_twice_is_stored_once(sgw: RunningGateway) -> None:
    token = _user(sgw, "twice")
    image = _digit(2)
    a, b = _classify(sgw, token, image), _classify(sgw, token, image, name="copy.png")
    ra, rb = _history(sgw, token, a), _history(sgw, token, b)
    assert a != b and ra["input"] == rb["input"] == "kept"
    assert urlsplit(ra["input_url"]).path == urlsplit(rb["input_url"]).path
    with sgw.client(token) as c:
        usage = c.get("/api/v1/dashboard/stats").json()["storage"]
    assert usage == {"bytes": len(image), "objects": 1}


def test_declared_type_and_file_name_are_not_trusted(sgw: RunningGateway) -> None:
    token = _user(sgw, "liar")
    jpeg = _digit(3, fmt="JPEG")
    pid = _classify(sgw, token, jpeg, name="../../../../etc/evil.png", ctype="image/png")
    row = _history(sgw, token, pid)
    assert row["input_content_type"] == "image/jpeg"
    key = urlsplit(row["input_url"]).path
    assert "evil" not in key and ".." not in key and key.endswith(".jpg")
    r = httpx.get(row["input_url"])
    assert r.content == jpeg and r.headers["content-type"] == "image/jpeg"
    assert not list(Path("/etc").glob("evil*")) and not list(sgw.settings.var_dir.rglob("evil*"))


def test_a_file_the_task_refuses_is_not_stored(sgw: RunningGateway) -> None:
    """Text posing as a PNG: the task refuses it (4xx), the failed prediction is in history, and nothing was stored."""
    token = _user(sgw, "poser")
    with sgw.client(token) as c:
        before = c.get("/api/v1/dashboard/stats").json()["storage"]
        r = c.post(ROUTE, files={"image": ("photo.png", b"definitely not an image\n" * 40, "image/png")})
        assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == "not_an_image", r.text
        row = _history(sgw, token, r.headers["X-Prediction-Id"])
        assert row["status"] == r.status_code and row["input"] is None and row["input_url"] is None, row
        assert c.get(f"/api/v1/history/{row['prediction_id']}/input").json()["error"]["code"] == "input_not_kept"
        assert c.get("/api/v1/dashboard/stats").json()["storage"] == before == {"bytes": 0, "objects": 0}


def test_what_is_kept_follows_the_per_route_and_per_model_setting(sgw: RunningGateway) -> None:
    token = _user(sgw, "tabular")
    rec = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
    with sgw.client(token) as c:
        summary = c.post("/api/v1/tasks/predict_records", json={"model": "iris-logreg", "records": [rec]})
        bare = c.post("/api/v1/tasks/predict_records", json={"model": "iris-rf", "records": [rec]})
    assert summary.status_code == bare.status_code == 200, summary.text
    kept = _history(sgw, token, summary.json()["prediction_id"])
    assert kept["input"] is None and kept["input_url"] is None and kept["output_label"] == "setosa"  # summary: today's
    none = _history(sgw, token, bare.json()["prediction_id"])
    assert none["input"] is None and none["output_label"] is None and none["model"] == "iris-rf"  # none: a bare row


def test_gc_removes_what_no_row_needs_and_a_dead_link_is_404(sgw: RunningGateway) -> None:
    token = _user(sgw, "retention")
    pid = _classify(sgw, token, _digit(4))
    url = _history(sgw, token, pid)["input_url"]
    assert httpx.get(url).status_code == 200
    gw = sgw.state
    from auth_api.stored_inputs import store_of

    store = store_of(gw)
    assert store is not None
    report = gc(gw.engine, store.storage, older_than_s=0, grace_s=0)
    assert report.deleted_objects >= 1 and report.failed == 0
    row = _history(sgw, token, pid)
    assert row["input"] == "not_kept" and row["input_reason"] == "expired" and row["input_url"] is None
    assert httpx.get(url).status_code == 404  # the old link: the object is gone, not a 500
    with sgw.client(token) as c:
        assert c.get("/api/v1/dashboard/stats").json()["storage"]["objects"] == 0


def test_deleting_a_user_deletes_their_objects(sgw: RunningGateway) -> None:
    token = _user(sgw, "leaving")
    pid = _classify(sgw, token, _digit(5))
    url = _history(sgw, token, pid)["input_url"]
    with sgw.client(sgw.admin_token()) as c:
        uid = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["id"]
        assert c.delete(f"/api/v1/users/{uid}").status_code == 200
    assert httpx.get(url).status_code == 404
    from auth_api.stored_inputs import store_of

    store = store_of(sgw.state)
    assert store is not None and list(store.storage.keys(uid)) == []


def test_usage_is_a_metric_and_storage_a_readiness_dependency(sgw: RunningGateway) -> None:
    token = _user(sgw, "metered")
    assert _history(sgw, token, _classify(sgw, token, _digit(6)))["input"] == "kept"
    assert _metric(sgw, "gateway_inputs_kept_total") >= 1
    with sgw.client(sgw.admin_token()) as c:
        everyone = c.get("/api/v1/dashboard/stats").json()["storage"]
    assert everyone["objects"] >= 1 and any(u["bytes"] == len(_digit(6)) for u in everyone["by_user"]), everyone
    deadline = time.monotonic() + 12  # the gauges re-read the database at most every 10 s
    while (_metric(sgw, "storage_bytes"), _metric(sgw, "storage_objects")) != (everyone["bytes"], everyone["objects"]):
        assert time.monotonic() < deadline, (_metric(sgw, "storage_bytes"), _metric(sgw, "storage_objects"), everyone)
        time.sleep(0.5)
    assert _readiness(sgw)["storage"]["state"] == "up"


def test_a_dead_store_never_costs_the_prediction(bento: BentoFixture, tmp_path: Path) -> None:
    with start_moto() as server, fresh_database("sqlite", tmp_path) as url:
        settings = gateway_settings(tmp_path, url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                    bento_port=bento.settings.bento_port, **KEEP, **server.settings())
        with run_gateway(settings) as gw:
            token = gw.create_user("unlucky")
            server.stop()  # the store goes down after the gateway started
            pid = _classify(gw, token, _digit(7))
            row = _history(gw, token, pid)
            assert row["status"] == 200 and row["output_label"] is not None
            assert row["input"] == "not_kept" and row["input_reason"] == "store_unavailable" and row["input_url"] is None
            assert _metric(gw, 'gateway_inputs_not_kept_total{reason="store_unavailable"}') == 1
            with gw.client(token) as c:
                assert c.get(f"/api/v1/history/{pid}/input").status_code == 404
            storage = _readiness(gw)["storage"]
            assert storage["state"] != "up" and not storage["required"] and "not kept" in storage["impact"]


def test_an_anonymous_call_keeps_nothing_and_its_row_answers_at_once(bento: BentoFixture, tmp_path: Path) -> None:
    """Anonymous calls allowed and uploads kept: nobody owns the anonymous upload, so it is not stored, and the admin's
    look at its row does not wait for a store that never comes."""
    with fresh_database("sqlite", tmp_path) as url:
        settings = gateway_settings(tmp_path, url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                    bento_port=bento.settings.bento_port, gateway_allow_anonymous=True, **KEEP)
        with run_gateway(settings) as gw:
            r = httpx.post(gw.url + ROUTE, files={"image": ("digit.png", _digit(8), "image/png")})
            assert r.status_code == 200, r.text
            with gw.client(gw.admin_token()) as c:
                start = time.monotonic()
                row = c.get(f"/api/v1/history/{r.headers['X-Prediction-Id']}").json()
                took = time.monotonic() - start
                assert row["status"] == 200 and row["user_id"] is None and row["input"] is None, row
                assert took < 2.0, f"the lookup waited {took:.1f} s for an input nobody stores"
                assert c.get("/api/v1/dashboard/stats").json()["storage"]["objects"] == 0


def test_ws_and_task_rows_may_still_be_storing_and_other_rows_never(tmp_path: Path) -> None:
    """Which history rows a lookup waits for (their store may run in a sibling worker): fresh, successful, owned task
    calls and WebSocket frames whose route or model keeps the input; nothing else."""
    from types import SimpleNamespace

    from auth_api.journal import new_prediction_id
    from auth_api.stored_inputs import _may_still_store
    from mlstack.settings import Settings

    s = Settings(var_dir=tmp_path, storage_keep_by={"digits-cnn": "input", "classify_image": "input"})

    def row(**kw: object) -> object:
        return SimpleNamespace(**{"prediction_id": new_prediction_id(), "status": 200, "user_id": 1, "protocol": "ws",
                                  "model": "digits-cnn", **kw})

    assert _may_still_store(s, row())  # a kept frame: the store may be running in the worker that had the socket
    assert _may_still_store(s, row(protocol="task:classify_image", model="digits-keras"))
    for other in (row(model="iris-svm"), row(status=400), row(user_id=None), row(protocol="http"), row(protocol="rest"),
                  row(prediction_id=None)):
        assert not _may_still_store(s, other), other


def test_a_frame_whose_image_a_sibling_worker_is_storing_is_waited_for(tmp_path: Path) -> None:
    """Two workers: one answered a WebSocket frame and is still storing its image; the history lookup lands on the other
    (which has no future for it) and waits for the row rather than answering ``input: null``."""
    import threading

    from prometheus_client import CollectorRegistry
    from sqlmodel import Session

    from auth_api.journal import new_prediction_id
    from auth_api.models import Prediction
    from auth_api.stored_inputs import InputStore, StorageMetrics, Upload
    from mlstack.storage import open_storage

    image = _digit(9)
    with fresh_database("sqlite", tmp_path) as url, \
            run_gateway(gateway_settings(tmp_path, url, storage_keep_by={"digits-cnn": "input"})) as gw:
        token = gw.create_user("streamer")
        with gw.client(token) as c:
            uid = c.get("/api/v1/auth/me").json()["id"]
        pid = new_prediction_id()
        with Session(gw.state.engine) as db:  # the row of the frame the sibling answered
            db.add(Prediction(prediction_id=pid, user_id=uid, model="digits-cnn", version="1", protocol="ws", status=200,
                              gateway_ms=1.0, upstream_ms=1.0))
            db.commit()
        sibling = InputStore(gw.settings, gw.state.engine, open_storage(gw.settings),
                             StorageMetrics(CollectorRegistry(), gw.state.engine))
        storing = threading.Timer(1.0, sibling._store, [Upload(pid, uid, image, "image/png")])  # a store still running
        storing.start()
        try:
            row = _history(gw, token, pid)
        finally:
            storing.join()
            sibling.executor.shutdown()
        assert row["protocol"] == "ws" and row["input"] == "kept", row
        assert httpx.get(row["input_url"]).content == image


def test_uploads_beyond_the_pending_byte_bound_are_not_kept_as_backlog(bento: BentoFixture, tmp_path: Path) -> None:
    """``storage_pending_max_bytes`` of 16 KiB: a 200-byte upload is kept, a 64 KiB one is not (reason backlog,
    counted), and its prediction succeeds all the same."""
    import io

    import numpy as np
    from PIL import Image

    small = _digit(0)
    out = io.BytesIO()  # noise does not compress: ~64 KiB of PNG
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8), mode="L").save(out, "PNG")
    large = out.getvalue()
    assert len(small) < 1024 and len(large) > 32 * 1024
    with fresh_database("sqlite", tmp_path) as url:
        settings = gateway_settings(tmp_path, url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                    bento_port=bento.settings.bento_port, storage_pending_max_bytes=16 * 1024, **KEEP)
        with run_gateway(settings) as gw:
            token = gw.create_user("bulky")
            kept = _history(gw, token, _classify(gw, token, small))
            assert kept["input"] == "kept" and kept["input_size"] == len(small), kept
            refused = _history(gw, token, _classify(gw, token, large))
            assert refused["status"] == 200 and refused["output_label"] is not None
            assert refused["input"] == "not_kept" and refused["input_reason"] == "backlog" and refused["input_url"] is None
            assert _metric(gw, 'gateway_inputs_not_kept_total{reason="backlog"}') == 1
