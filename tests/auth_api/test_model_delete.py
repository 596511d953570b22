"""Deleting a whole model through the gateway: confirmed on purpose, Triton unloads it, registry rows say deleted,
history is kept, the refusals on the way (live version, rollback with one version) point at it; numbers never reused."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlmodel import Session, select

from auth_api.models import ModelVersion
from tests.auth_api.test_registry import ROW, _upload, _wait_ready
from tests.auth_api.test_serving import iris_card, iris_onnx
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def _wait_gone(c: httpx.Client, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.get(f"/v2/models/{name}/ready").status_code != 200:
            return
        time.sleep(0.25)
    raise AssertionError(f"Triton still serves {name}")


def test_delete_whole_model(tgw: RunningGateway, triton: TritonFixture) -> None:
    name = f"del-iris-{uuid.uuid4().hex[:6]}"
    eng = tgw.create_user("del_engineer", "engineer")
    admin = tgw.admin_token()
    with tgw.client(eng) as c:
        assert _upload(c, name, iris_onnx(), iris_card(name).model_dump_json()).status_code == 201
        _wait_ready(c, name, 1)
        assert c.post(f"/api/v1/predict/{name}", json={"instances": [ROW]}).status_code == 200
        r = c.post(f"/api/v1/models/{name}/rollback")
        assert r.status_code == 409 and "delete the whole model" in r.json()["error"]["message"]
        assert r.json()["error"]["details"]["delete_model"] == f"DELETE /api/v1/models/{name}?confirm={name}"
        assert c.delete(f"/api/v1/models/{name}?confirm={name}").status_code == 403  # engineers cannot
    tgw.flush_history()
    with tgw.client(admin) as a:
        r = a.delete(f"/api/v1/models/{name}/versions/1")
        assert r.status_code == 409 and "only version" in r.json()["error"]["message"]
        for bad in ("", "?confirm=yes", f"?confirm={name}x"):
            r = a.delete(f"/api/v1/models/{name}{bad}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_required", r.text
        assert (triton.repository / name).is_dir()
        r = a.delete(f"/api/v1/models/{name}?confirm={name}")
        assert r.status_code == 200, r.text
        assert not (triton.repository / name).exists()
        _wait_gone(a, name)
        assert a.post(f"/api/v1/predict/{name}", json={"instances": [ROW]}).status_code == 404
        assert a.get(f"/api/v1/models/{name}").status_code == 404
        assert name not in [m["name"] for m in a.get("/api/v1/models").json()]
        with tgw.client(eng) as c:  # the engineer's prediction is still in their history
            assert c.get("/api/v1/history", params={"model": name}).json()["total"] == 1
        # Recreated under the same name: a new number, never version 1 again.
        r = _upload(a, name, iris_onnx(), iris_card(name).model_dump_json())
        assert r.status_code == 201 and r.json()["version"] == 2, r.text
        _wait_ready(a, name, 2)
    with Session(tgw.state.engine) as db:
        rows = {r.version: r.state for r in db.exec(select(ModelVersion).where(ModelVersion.name == name))}
    assert rows == {1: "deleted", 2: "live"}


def test_upload_without_card_inherits_and_says_so(tgw: RunningGateway) -> None:
    name = f"inh-iris-{uuid.uuid4().hex[:6]}"
    eng = tgw.create_user("inh_engineer", "engineer")
    with tgw.client(eng) as c:
        # v1 with its SHAP background sample (the `background` form field), which `explain` uses
        bg = io.BytesIO()
        np.save(bg, np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32))
        r = c.post(f"/api/v1/models/{name}/versions", data={"card": iris_card(name).model_dump_json()},
                   files={"file": ("model.onnx", iris_onnx(), "application/octet-stream"),
                          "background": ("bg.npy", bg.getvalue(), "application/octet-stream")})
        assert r.status_code == 201 and r.json()["background"] == "uploaded", r.text
        assert r.json()["card"]["files"] == ["background.npy"] and r.json()["inherited"] is None
        r = _upload(c, name, iris_onnx(0.5), None)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["card"]["task"] == "classification" and body["card"]["labels"] == iris_card(name).labels
        assert body["inherited"] == {"from_version": 1, "fields": ["task", "feature_names", "labels", "dataset"]}
        assert body["background"] == "inherited:v1"
        r = c.post(f"/api/v1/models/{name}/versions", files={"file": ("model.onnx", iris_onnx(), "application/octet-stream"),
                                                              "background": ("bg.npy", b"not an array", "text/plain")})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_background", r.text
        r = _upload(c, name, iris_onnx(), '{"task": "clustering"}')
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_card"
        assert r.json()["error"]["details"]["errors"][0]["field"] == "task"
        assert "pydantic" not in r.text
