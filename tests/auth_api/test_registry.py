"""Model registry over the API: upload (same validation as `mlstack publish`), promote and roll back under live
traffic with no failed request, delete refuses the live version; rows mirror the model cards."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from auth_api.models import ModelVersion
from mlstack.repository.layout import versions
from tests.auth_api.test_serving import iris_card, iris_onnx
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
ROW = [6.1, 2.8, 4.7, 1.2]


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def _upload(c: httpx.Client, name: str, data: bytes, card: str | None) -> httpx.Response:
    files = {"file": ("model.onnx", data, "application/octet-stream")}
    return c.post(f"/api/v1/models/{name}/versions", files=files, data={"card": card} if card else None)


def _wait_ready(c: httpx.Client, name: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if c.get(f"/v2/models/{name}/versions/{version}/ready").status_code == 200:
            return
        time.sleep(0.25)
    raise AssertionError(f"{name} v{version} never became ready")


def _wait_serving(c: httpx.Client, name: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.post(f"/api/v1/predict/{name}", json={"instances": [ROW]})
        if r.status_code == 200 and r.json()["version"] == str(version):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} never served version {version}")


class Traffic(threading.Thread):
    """Unversioned requests in a loop; records every status and the version that answered."""

    def __init__(self, url: str, token: str, name: str):
        super().__init__(daemon=True)
        self.url, self.token, self.name = url, token, name
        self.codes: list[int] = []
        self.versions: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as c:
            while not self.stop.is_set():
                r = c.post(f"/api/v1/predict/{self.name}", json={"instances": [ROW]})
                self.codes.append(r.status_code)
                if r.status_code == 200:
                    self.versions.add(r.json()["version"])


def test_publish_promote_rollback_under_traffic(tgw: RunningGateway, triton: TritonFixture) -> None:
    name = f"gw-iris-{uuid.uuid4().hex[:6]}"
    eng = tgw.create_user("reg_engineer", "engineer")
    user = tgw.create_user("reg_user")
    card = iris_card(name).model_dump_json()
    with tgw.client(eng) as c:
        assert _upload(c, name, b"definitely not onnx", card).json()["error"]["code"] == "not_onnx"
        assert not (triton.repository / name).exists()  # refused: nothing written
        r = _upload(c, name, iris_onnx(1.0), card)
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1 and r.json()["card"]["created_by"] == "reg_engineer"
        _wait_ready(c, name, 1)
    with tgw.client(user) as cu:
        assert _upload(cu, name, iris_onnx(), card).status_code == 403
    traffic = Traffic(tgw.url, user, name)
    traffic.start()
    try:
        with tgw.client(eng) as c:
            assert _upload(c, name, iris_onnx(0.05), card).status_code == 201  # latest policy: v2 goes live
            _wait_serving(c, name, 2)
            r = c.post(f"/api/v1/models/{name}/rollback")
            assert r.status_code == 200 and r.json() == {"name": name, "live_version": 1, "previous_version": 2}
            _wait_serving(c, name, 1)
            r = c.post(f"/api/v1/models/{name}/versions/2/promote")
            assert r.status_code == 200 and r.json()["live_version"] == 2
            _wait_serving(c, name, 2)
            time.sleep(1.0)
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
    assert len(traffic.codes) > 20 and set(traffic.codes) == {200}, f"failed requests: {[s for s in traffic.codes if s != 200]}"
    assert traffic.versions == {"1", "2"}
    with tgw.client(eng) as c:
        info = c.get(f"/api/v1/models/{name}").json()
        assert info["live_version"] == 2 and [v["live"] for v in info["versions"]] == [False, True]
        assert info["versions"][1]["ready"] is True
        listing = {m["name"]: m for m in c.get("/api/v1/models").json()}
        assert listing[name]["versions"] == [1, 2] and listing[name]["task"] == "classification"
        assert listing["iris-svm"]["ready"] is True
        assert c.delete(f"/api/v1/models/{name}/versions/1").status_code == 403  # engineers cannot delete
    with tgw.client(tgw.admin_token()) as ca:
        r = ca.delete(f"/api/v1/models/{name}/versions/2")
        assert r.status_code == 409 and r.json()["error"]["code"] == "version_is_live"
        assert ca.delete(f"/api/v1/models/{name}/versions/1").status_code == 200
        assert ca.post(f"/api/v1/models/{name}/versions/1/promote").status_code == 404
    assert versions(triton.repository, name) == [2]
    with Session(tgw.state.engine) as db:
        rows = {r.version: r for r in db.exec(select(ModelVersion).where(ModelVersion.name == name))}
    assert rows[2].state == "live" and rows[1].state == "deleted" and rows[2].published_by == "reg_engineer"
    assert rows[2].task == "classification"


def test_registry_rows_mirror_the_repository_on_start(tmp_path: Path, db_url: str) -> None:
    from tests.auth_api.test_serving import publish_iris

    repo = tmp_path / "repo"
    publish_iris(repo, "iris-a")
    publish_iris(repo, "iris-a")
    with run_gateway(gateway_settings(tmp_path, db_url, repository=repo)) as gw, Session(gw.state.engine) as db:
        rows = sorted((r.name, r.version, r.state) for r in db.exec(select(ModelVersion)))
    assert rows == [("iris-a", 1, "available"), ("iris-a", 2, "live")]
