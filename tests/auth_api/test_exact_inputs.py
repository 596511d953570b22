"""The gateway's own API does what was asked or says what it did not understand: unknown body fields and query
parameters are a 422 naming them, the filters users reach for (``?role=``, ``?model=``) filter, and an account's
email is unique and logs in like its username."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from auth_api.models import Prediction
from mlstack.repository.serving import live_version
from tests.auth_api.test_serving import publish_iris
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway


def _err(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def _named(r: httpx.Response, where: str, name: str) -> None:
    assert r.status_code == 422, r.text
    err = _err(r)
    assert err["code"] == "invalid_request"
    assert [where, name] in [e["loc"] for e in err["details"]["errors"]], err


# --- unknown body fields ---------------------------------------------------------------------------------------------
def test_patch_user_with_an_unknown_field_is_refused_and_changes_nothing(gateway: RunningGateway) -> None:
    gateway.create_user("nick")
    with gateway.client(gateway.admin_token()) as c:
        uid = next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == "nick")
        r = c.patch(f"/api/v1/users/{uid}", json={"nickname": "x", "role": "engineer"})
        _named(r, "body", "nickname")
        assert c.get(f"/api/v1/users/{uid}").json()["role"] == "user"  # the known field was not applied either
        assert c.patch(f"/api/v1/users/{uid}", json={"role": "engineer"}).json()["role"] == "engineer"


@pytest.mark.parametrize("path,body", [
    ("/api/v1/auth/register", {"username": "newbie", "password": PASSWORD, "is_admin": True}),
    ("/api/v1/auth/login", {"username": "admin", "password": "whatever-pw", "remember_me": True}),
    ("/api/v1/auth/refresh", {"refresh_token": "x", "scope": "all"}),
    ("/api/v1/users", {"username": "withextra", "password": PASSWORD, "roles": ["admin"]}),
    ("/api/v1/api-keys", {"name": "k", "scope": ["predict"]}),
    ("/api/v1/auth/password/change", {"old_password": PASSWORD, "new_password": PASSWORD + "2", "confirm": "x"}),
])
def test_request_bodies_refuse_unknown_fields(gateway: RunningGateway, path: str, body: dict[str, Any]) -> None:
    extra = next(k for k in body if k not in {"username", "password", "refresh_token", "name", "old_password", "new_password"})
    with gateway.client(gateway.admin_token()) as c:
        _named(c.post(path, json=body), "body", extra)
    if path == "/api/v1/auth/register":
        with gateway.client() as c:
            assert c.post("/api/v1/auth/login", json={"username": "newbie", "password": PASSWORD}).status_code == 401


# --- unknown query parameters, and the filters that exist ----------------------------------------------------------
def test_users_filter_by_role(gateway: RunningGateway) -> None:
    gateway.create_user("eng1", role="engineer")
    gateway.create_user("plain1")
    with gateway.client(gateway.admin_token()) as c:
        assert {u["username"] for u in c.get("/api/v1/users", params={"role": "engineer"}).json()} == {"eng1"}
        assert {u["role"] for u in c.get("/api/v1/users", params={"role": "admin"}).json()} == {"admin"}
        assert len(c.get("/api/v1/users").json()) == 3
        _named(c.get("/api/v1/users", params={"role": "superuser"}), "query", "role")


@pytest.mark.parametrize("path,param", [
    ("/api/v1/users", "rol"), ("/api/v1/users", "sort"), ("/api/v1/users/1", "verbose"), ("/api/v1/api-keys", "owner"),
    ("/api/v1/dashboard/stats", "modle"), ("/api/v1/dashboard/recent", "model"), ("/api/v1/dashboard/timeline", "tz"),
    ("/api/v1/auth/me", "x"),
])
def test_unknown_query_parameters_are_refused(gateway: RunningGateway, path: str, param: str) -> None:
    with gateway.client(gateway.admin_token()) as c:
        _named(c.get(path, params={param: "1"}), "query", param)
        assert c.get(path).status_code == 200


# Every /api/v1 router, checked once where the routers are included: (method, path, an unknown parameter, the status
# the same call gets without it; every declared parameter of the route is sent along and must stay accepted).
@pytest.mark.parametrize("method,path,known,unknown,plain", [
    ("GET", "/api/v1/models", {}, "sort", 200),
    ("GET", "/api/v1/models/nomodel", {}, "version", 404),
    ("GET", "/api/v1/models/nomodel/stats", {"hours": "1"}, "hour", 404),
    ("POST", "/api/v1/models/nomodel/rollback", {"to_version": "1"}, "to", 404),
    ("POST", "/api/v1/models/nomodel/versions/1/promote", {}, "force", 404),
    ("DELETE", "/api/v1/models/nomodel", {"confirm": "nomodel"}, "confirmed", 404),
    ("POST", "/api/v1/models/nomodel/cache/clear", {}, "all", 404),
    ("PUT", "/api/v1/models/nomodel/share", {}, "public", 404),
    ("GET", "/api/v1/history", {"model": "iris-logreg", "status": "200", "limit": "5", "offset": "0"}, "modle", 200),
    ("GET", "/api/v1/history/999999", {}, "verbose", 404),
    ("GET", "/api/v1/history/999999/input", {}, "download", 404),
    ("POST", "/api/v1/predict/nomodel", {}, "version", 404),
    ("POST", "/api/v1/tasks/nosuch", {}, "model", 404),
    ("GET", "/api/v1/jobs", {"all_users": "true", "limit": "5"}, "state", 200),
    ("GET", "/api/v1/jobs/nope", {"log_lines": "3"}, "lines", 404),
    ("GET", "/api/v1/jobs/nope/events", {}, "after", 404),
    ("GET", "/api/v1/files/0123abcd.png", {"exp": "1", "sig": "x"}, "download", 403),  # exp/sig read: a bad signature
])
def test_unknown_query_parameters_are_refused_on_every_router(gateway: RunningGateway, method: str, path: str,
                                                              known: dict[str, str], unknown: str, plain: int) -> None:
    body = {"shared": True} if path.endswith("/share") else {"instances": [[1, 2, 3, 4]]} if "/predict/" in path else None
    with gateway.client(gateway.admin_token()) as c:
        _named(c.request(method, path, params={**known, unknown: "1"}, json=body), "query", unknown)
        r = c.request(method, path, params=known, json=body)
        assert r.status_code == plain, r.text


def test_rollback_with_a_misspelt_parameter_rolls_nothing_back(tmp_path: Path, db_url: str) -> None:
    repo = tmp_path / "repo"
    for _ in range(3):
        publish_iris(repo, "iris-rb")
    with run_gateway(gateway_settings(tmp_path, db_url, repository=repo)) as gw, gw.client(gw.admin_token()) as c:
        assert c.get("/api/v1/models/iris-rb").json()["live_version"] == 3
        _named(c.post("/api/v1/models/iris-rb/rollback", params={"to": "1"}), "query", "to")
        assert c.get("/api/v1/models/iris-rb").json()["live_version"] == 3  # not rolled back to 2
        assert live_version(repo, "iris-rb") == 3
        r = c.post("/api/v1/models/iris-rb/rollback", params={"to_version": "1"})
        assert r.status_code == 200 and r.json()["live_version"] == 1, r.text


def test_predict_body_with_an_unknown_field_is_refused(gateway: RunningGateway) -> None:
    with gateway.client(gateway.admin_token()) as c:
        r = c.post("/api/v1/predict/iris-logreg", json={"instances": [[5.1, 3.5, 1.4, 0.2]], "versoin": 2})
        _named(r, "body", "versoin")
        assert "Traceback" not in r.text


def test_dashboard_stats_filter_by_model(gateway: RunningGateway) -> None:
    token = gateway.create_user("statsuser")
    with gateway.client(token) as c:
        me = c.get("/api/v1/auth/me").json()["id"]
    rows = [("iris-logreg", 200, "setosa"), ("iris-logreg", 200, "virginica"), ("iris-logreg", 400, None),
            ("digits-cnn", 200, "7")]
    with Session(gateway.state.engine) as db:
        for model, status, label in rows:
            db.add(Prediction(user_id=me, model=model, version="1", protocol="rest", status=status, gateway_ms=1.0,
                              upstream_ms=1.0, output_label=label, error_code=None if status == 200 else "bad_input"))
        db.commit()
    with gateway.client(token) as c:
        everything = c.get("/api/v1/dashboard/stats").json()
        assert everything["total"] == 3 and everything["errors"] == 1
        iris = c.get("/api/v1/dashboard/stats", params={"model": "iris-logreg"}).json()
        assert iris["total"] == 2 and iris["errors"] == 1
        assert {m["model"] for m in iris["by_model"]} == {"iris-logreg"}
        assert {lab["label"] for lab in iris["by_label"]} == {"setosa", "virginica"}
        digits = c.get("/api/v1/dashboard/stats", params={"model": "digits-cnn"}).json()
        assert digits["total"] == 1 and digits["errors"] == 0
        none = c.get("/api/v1/dashboard/stats", params={"model": "nope"}).json()
        assert none["total"] == 0 and none["by_model"] == []


# --- emails: unique, and a way to log in -----------------------------------------------------------------------------
def _register(c: httpx.Client, username: str, email: str | None) -> httpx.Response:
    return c.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD, "email": email})


def test_email_logs_in_on_the_json_and_the_oauth2_form(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        assert _register(c, "mailer", "Mail.Er@Example.org").status_code == 201
        gateway.verify_email("Mail.Er@Example.org")
        for login in ("mail.er@example.org", "MAIL.ER@EXAMPLE.ORG", "Mail.Er@Example.org", "mailer"):
            r = c.post("/api/v1/auth/login", json={"username": login, "password": PASSWORD})
            assert r.status_code == 200, (login, r.text)
            r = c.post("/api/v1/auth/token", data={"username": login, "password": PASSWORD})
            assert r.status_code == 200, (login, r.text)
            me = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
            assert me.json()["username"] == "mailer"
        r = c.post("/api/v1/auth/login", json={"username": "mail.er@example.org", "password": "wrong password"})
        assert r.status_code == 401 and _err(r)["code"] == "bad_credentials"
        r = c.post("/api/v1/auth/login", json={"username": "nobody@example.org", "password": PASSWORD})
        assert r.status_code == 401 and _err(r)["code"] == "bad_credentials"


def test_an_email_belongs_to_one_account(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        assert _register(c, "first", "shared@example.com").status_code == 201
        r = _register(c, "second", "SHARED@example.com")
        assert r.status_code == 409 and _err(r)["code"] == "email_taken"
        assert _register(c, "third", "third@example.com").status_code == 201
    with gateway.client(gateway.admin_token()) as c:
        r = c.post("/api/v1/users", json={"username": "fourth", "password": PASSWORD, "email": "Shared@Example.com"})
        assert r.status_code == 409 and _err(r)["code"] == "email_taken"
        third = next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == "third")
        r = c.patch(f"/api/v1/users/{third}", json={"email": "shared@EXAMPLE.com"})
        assert r.status_code == 409 and _err(r)["code"] == "email_taken"
    gateway.verify_email("shared@example.com")
    with gateway.client() as c:  # the email still logs in to its first owner only
        r = c.post("/api/v1/auth/login", json={"username": "shared@example.com", "password": PASSWORD})
        tok = r.json()["access_token"]
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok}"}).json()["username"] == "first"
