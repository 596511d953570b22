"""Accounts and credentials: register, login (JSON and OAuth2 form), refresh rotation and reuse, logout, API keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from auth_api.models import ApiKey, User
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway


def _error(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    return dict(body["error"])


def test_register_login_me_and_swagger_form(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": "alice", "password": PASSWORD, "email": "a@example.com"})
        assert r.status_code == 201 and r.json()["role"] == "user" and "password" not in r.text
        assert c.post("/api/v1/auth/register", json={"username": "alice", "password": PASSWORD}).status_code == 409
        gateway.verify_email("a@example.com")  # registration mails a code; the account logs in once it is entered
        form = c.post("/api/v1/auth/token", data={"username": "alice", "password": PASSWORD})
        assert form.status_code == 200
        pair = form.json()
        assert pair["token_type"] == "bearer" and pair["expires_in"] == 900 and pair["refresh_token"]
        me = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200 and me.json()["username"] == "alice"
        bad = c.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"})
        assert bad.status_code == 401 and _error(bad)["code"] == "bad_credentials"


def test_refresh_rotates_and_reuse_is_refused(gateway: RunningGateway) -> None:
    gateway.create_user("bob")
    pair = gateway.login("bob", PASSWORD)
    with gateway.client() as c:
        r1 = c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r1.status_code == 200
        new = r1.json()
        assert new["refresh_token"] != pair["refresh_token"]
        # the old refresh token was revoked when used; presenting it again fails and ends the session family
        reuse = c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reuse.status_code == 401 and _error(reuse)["code"] == "refresh_token_revoked"
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
        # logout revokes a live refresh token
        pair2 = gateway.login("bob", PASSWORD)
        out = c.post("/api/v1/auth/logout", json={"refresh_token": pair2["refresh_token"]},
                     headers={"Authorization": f"Bearer {pair2['access_token']}"})
        assert out.status_code == 200
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": pair2["refresh_token"]}).status_code == 401
        # an access token is not a refresh token
        wrong = c.post("/api/v1/auth/refresh", json={"refresh_token": pair2["access_token"]})
        assert wrong.status_code == 401 and _error(wrong)["code"] == "wrong_token_type"


def test_api_key_lifecycle(gateway: RunningGateway) -> None:
    token = gateway.create_user("carol")
    with gateway.client(token) as c:
        r = c.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["predict", "history"]})
        assert r.status_code == 201
        created = r.json()
        key = created["key"]
        assert key.startswith(created["prefix"] + ".")
        listed = c.get("/api/v1/api-keys").json()
        assert [k["prefix"] for k in listed] == [created["prefix"]] and "key" not in listed[0]
    with Session(gateway.state.engine) as db:
        row = db.exec(select(ApiKey)).one()
        assert key.split(".", 1)[1] not in (row.secret_hash, row.prefix)  # only a hash is stored
    with gateway.client() as c:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            assert c.get("/api/v1/history", headers=headers).status_code == 200
        assert c.get("/api/v1/history", headers={"X-API-Key": key + "x"}).status_code == 401
    with gateway.client(token) as c:
        assert c.delete(f"/api/v1/api-keys/{created['id']}").status_code == 200
    with gateway.client() as c:
        r = c.get("/api/v1/history", headers={"X-API-Key": key})
        assert r.status_code == 401 and _error(r)["code"] == "revoked_api_key"
    with Session(gateway.state.engine) as db:
        assert db.exec(select(ApiKey)).one().last_used_at is not None


def test_deactivated_user_cannot_log_in_or_refresh(gateway: RunningGateway) -> None:
    gateway.create_user("dora")
    pair = gateway.login("dora", PASSWORD)
    with gateway.client(gateway.admin_token()) as ca:
        uid = next(u["id"] for u in ca.get("/api/v1/users").json() if u["username"] == "dora")
        assert ca.patch(f"/api/v1/users/{uid}", json={"is_active": False}).json()["is_active"] is False
    with gateway.client() as c:
        assert c.post("/api/v1/auth/login", json={"username": "dora", "password": PASSWORD}).status_code == 401
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


@pytest.mark.parametrize("username", ["admin' OR '1'='1", "x'; DROP TABLE users; --", "a" * 300, "", "💥"])
def test_sql_looking_and_bad_usernames_are_refused_and_write_nothing(gateway: RunningGateway, username: str) -> None:
    with Session(gateway.state.engine) as db:
        before = db.exec(select(func.count()).select_from(User)).one()
    with gateway.client() as c:
        login = c.post("/api/v1/auth/login", json={"username": username, "password": "whatever-password"})
        assert login.status_code in (401, 422) and "Traceback" not in login.text
        _error(login)
        reg = c.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
        assert reg.status_code == 422
        assert _error(reg)["code"] == "invalid_request"
    with Session(gateway.state.engine) as db:
        assert db.exec(select(func.count()).select_from(User)).one() == before


def test_registration_can_be_disabled(tmp_path: Path, db_url: str) -> None:
    with run_gateway(gateway_settings(tmp_path, db_url, gateway_allow_registration=False)) as gw, gw.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": "mallory", "password": PASSWORD})
        assert r.status_code == 403 and _error(r)["code"] == "registration_disabled"


def test_first_start_generates_admin_password_and_jwt_key(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    settings = gateway_settings(tmp_path, url, admin_password=None)
    with run_gateway(settings) as gw:
        err = capfd.readouterr().err
        line = next(ln for ln in err.splitlines() if "created admin user 'admin' with password:" in ln)
        password = line.rsplit(":", 1)[1].strip()
        assert len(password) >= 16
        assert gw.login("admin", password)["access_token"]
    key = tmp_path / "var" / "jwt.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) >= 32
    # second start: same key (tokens survive restarts), no new admin, nothing printed
    with run_gateway(settings) as gw:
        assert "created admin user" not in capfd.readouterr().err
        assert gw.login("admin", password)
    other = gateway_settings(tmp_path / "other", f"sqlite:///{tmp_path / 'h.db'}", admin_password=None)
    with run_gateway(other) as gw2:
        err2 = capfd.readouterr().err
        assert password not in err2  # a different random password per installation
        assert gw2.state.codec._key != key.read_bytes().strip()
