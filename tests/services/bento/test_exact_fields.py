"""A task body with a field its API does not take is a 422 naming it, from the task service and through the gateway;
it is never answered as if the field were absent (``"methd": "lime"`` would run SHAP, ``"verison"`` the live version)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlstack.repository.layout import read_card
from tests.fixtures.bento import BentoFixture
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway

pytestmark = pytest.mark.slow


def _records(repo: Path, model: str) -> list[dict[str, float]]:
    return [dict.fromkeys(read_card(repo, model, 1).feature_names, 0.02)]


def _bodies(repo: Path) -> list[tuple[str, dict[str, Any], str]]:
    """(API, a body with one misspelt field, that field)."""
    iris, diabetes = _records(repo, "iris-logreg"), _records(repo, "diabetes-linear")
    return [("explain", {"model": "diabetes-linear", "records": diabetes, "methd": "lime"}, "methd"),
            ("predict_records", {"model": "iris-logreg", "records": iris, "verison": 1}, "verison"),
            ("simulate_battery", {"profil": {"kind": "constant", "current_a": 2.0, "duration_s": 60}, "score": False}, "profil")]


def _refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["details"]["field"] == field and f"'{field}'" in err["message"], err


def test_unknown_fields_are_refused_by_the_task_service(bento: BentoFixture) -> None:
    for api, body, field in _bodies(bento.repository):
        _refused(bento.post(api, body), field)
        fixed = {k: v for k, v in body.items() if k != field}
        assert bento.post(api, fixed).status_code == 200, (api, bento.log_tail())
    r = bento.post("explain", {"model": "diabetes-linear", "records": _records(bento.repository, "diabetes-linear"),
                               "method": "lime"})
    assert r.status_code == 200 and r.json()["method"] == "lime.LimeTabularExplainer", r.text
    assert bento.post("predict_records", {"model": "iris-logreg", "records": _records(bento.repository, "iris-logreg"),
                                          "version": 1}).json()["version"] == 1


@pytest.fixture
def tgw(bento: BentoFixture, tmp_path: Path, db_url: str) -> Iterator[RunningGateway]:
    settings = gateway_settings(tmp_path, db_url, repository=bento.repository, bento_host=bento.settings.bento_host,
                                bento_port=bento.settings.bento_port)
    with run_gateway(settings) as gw:
        yield gw


def test_unknown_fields_are_refused_through_the_gateway(tgw: RunningGateway, bento: BentoFixture) -> None:
    token = tgw.create_user("fields_user")
    with tgw.client(token) as c:
        for api, body, field in _bodies(bento.repository):
            _refused(c.post(f"/api/v1/tasks/{api}", json=body), field)
        tgw.flush_history()
        rows = c.get("/api/v1/history").json()["items"]
    assert sorted((r["status"], r["error_code"]) for r in rows) == [(422, "invalid_request")] * 3, rows
