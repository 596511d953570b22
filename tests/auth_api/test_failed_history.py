"""Failed predictions leave a trace: a history row (status, error code, no outputs) on every prediction path, counted
apart from successes on every dashboard; calls that fail authentication leave none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway
from tests.fixtures.triton import TritonFixture

pytestmark = pytest.mark.slow
ROW = [5.1, 3.5, 1.4, 0.2]
V2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


@pytest.fixture
def tgw(tmp_path: Path, db_url: str, triton: TritonFixture) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, triton=triton)) as gw:
        yield gw


def test_failures_are_recorded_and_counted_apart(tgw: RunningGateway) -> None:
    token = tgw.create_user("failing_user")
    with tgw.client() as anon:
        assert anon.post("/v2/models/iris-rf/infer", json=V2).status_code == 401
        assert anon.post("/api/v1/predict/iris-rf", json={"instances": [ROW]}).status_code == 401
    with tgw.client(token) as c:
        assert c.post("/v2/models/iris-rf/infer", json=V2).status_code == 200
        assert c.post("/api/v1/predict/iris-rf", json={"instances": [ROW]}).status_code == 200
        bad = {"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [*ROW, 1.0]}]}
        assert c.post("/v2/models/iris-rf/infer", json=bad).status_code == 400
        assert c.post("/v2/models/iris-rf/versions/99/infer", json=V2).status_code == 404
        r = c.post("/api/v1/predict/iris-rf", json={"records": [{"petal_colour": 1.0}]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "feature_mismatch"
        assert c.post("/api/v1/predict/iris-rf", json={"instances": [[1.0, 2.0]]}).status_code == 422
        tgw.flush_history()
        failed = c.get("/api/v1/history", params={"status": 422}).json()
        assert failed["total"] == 2
        assert {i["error_code"] for i in failed["items"]} == {"feature_mismatch", "shape_mismatch"}
        assert all(i["output_label"] is None and i["protocol"] == "rest" and i["model"] == "iris-rf" for i in failed["items"])
        v2_failed = c.get("/api/v1/history", params={"status": 400}).json()["items"]
        assert [(i["protocol"], i["model"]) for i in v2_failed] == [("http", "iris-rf")] and v2_failed[0]["error_code"]
        assert c.get("/api/v1/history", params={"status": 404}).json()["items"][0]["version"] == "99"
        assert c.get("/api/v1/history").json()["total"] == 6  # the two 401s are nobody's predictions
        stats = c.get("/api/v1/dashboard/stats").json()
        assert stats["total"] == 2 and stats["errors"] == 4
        assert stats["by_model"] == [{"model": "iris-rf", "count": 2, "errors": 4}]
        assert {(e["status"], e["code"]) for e in stats["by_error"]} >= {(422, "feature_mismatch"), (422, "shape_mismatch")}
        (day,) = c.get("/api/v1/dashboard/timeline").json()
        assert (day["count"], day["successes"], day["errors"]) == (6, 2, 4)
        recent = c.get("/api/v1/dashboard/recent").json()
        assert sum(1 for i in recent if i["status"] != 200) == 4
