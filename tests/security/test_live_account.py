"""Authorization follows the live account: demotion, deactivation and password changes take effect on the next request."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from sqlalchemy import text
from sqlmodel import Session, col, func, select
from tritonclient.utils import InferenceServerException

from auth_api.core.db import make_engine
from auth_api.models import ApiKey, User
from tests.auth_api.ws_client import close_code, open_ws, send, until
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway

NEW_PASSWORD = "a brand new passphrase"
REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own: login throttles of other tests stay elsewhere


def _code(r: Any) -> str:
    body = r.json()
    err = body["error"]
    return str(err["code"] if isinstance(err, dict) else body.get("code"))


def _uid(gw: RunningGateway, username: str) -> int:
    with Session(gw.state.engine) as db:
        user = db.exec(select(User).where(User.username == username)).one()
        assert user.id is not None
        return user.id


def _patch(gw: RunningGateway, uid: int, body: dict[str, Any]) -> Any:
    with gw.client(gw.admin_token()) as c:
        return c.patch(f"/api/v1/users/{uid}", json=body)


def test_deactivated_and_demoted_admin_loses_admin_power_at_once(gateway: RunningGateway) -> None:
    adm2 = gateway.create_user("adm2", "admin")
    uid = _uid(gateway, "adm2")
    with gateway.client(adm2) as c:
        assert c.get("/api/v1/users").status_code == 200  # admin power while an admin
    assert _patch(gateway, uid, {"is_active": False, "role": "user"}).status_code == 200
    with gateway.client(adm2) as c:
        r = c.get("/api/v1/users")
        assert r.status_code == 401 and _code(r) == "inactive_user"
        mint = c.post("/api/v1/users", json={"username": "evil", "password": PASSWORD, "role": "admin"})
        assert mint.status_code == 401
        assert c.patch(f"/api/v1/users/{uid}", json={"is_active": True, "role": "admin"}).status_code == 401
        assert c.post("/v2/models/nomodel/infer", json={"inputs": []}).status_code == 401
    with gateway.client() as c:
        assert c.post("/api/v1/auth/login", json={"username": "evil", "password": PASSWORD}).status_code == 401
    # reactivated as a plain user: the old token stays dead (deactivation ended it), a new login is a user
    assert _patch(gateway, uid, {"is_active": True}).status_code == 200
    with gateway.client(adm2) as c:
        assert _code(c.get("/api/v1/auth/me")) == "token_revoked"
    with gateway.client(gateway.login("adm2", PASSWORD)["access_token"]) as c:
        r = c.get("/api/v1/users")
        assert r.status_code == 403 and _code(r) == "insufficient_role"


def test_demoted_engineer_cannot_promote_with_an_old_token(gateway: RunningGateway) -> None:
    eng = gateway.create_user("eng1", "engineer")
    with gateway.client(eng) as c:
        assert c.post("/api/v1/models/nomodel/versions/1/promote").status_code == 404  # admitted: the model is unknown
    assert _patch(gateway, _uid(gateway, "eng1"), {"role": "user"}).status_code == 200
    with gateway.client(eng) as c:
        r = c.post("/api/v1/models/nomodel/versions/1/promote")
        assert r.status_code == 403 and _code(r) == "insufficient_role"
        assert c.get("/api/v1/auth/me").json()["role"] == "user"


def test_deactivation_stops_api_keys_and_grpc_at_once(gateway: RunningGateway) -> None:
    token = gateway.create_user("keyowner")
    with gateway.client(token) as c:
        key = c.post("/api/v1/api-keys", json={"scopes": ["predict", "history"]}).json()["key"]
    uid = _uid(gateway, "keyowner")
    grpc = grpcclient.InferenceServerClient(url=gateway.grpc_url)
    try:
        with gateway.client() as c:
            assert c.get("/api/v1/history", headers={"X-API-Key": key}).status_code == 200
            assert _patch(gateway, uid, {"is_active": False}).status_code == 200
            r = c.get("/api/v1/history", headers={"X-API-Key": key})
            assert r.status_code == 401 and _code(r) == "inactive_user"
            assert c.post("/v2/models/nomodel/infer", json={"inputs": []}, headers={"X-API-Key": key}).status_code == 401
            for md in ({"authorization": f"Bearer {token}"}, {"x-api-key": key}):
                with pytest.raises(InferenceServerException, match="account disabled"):
                    grpc.is_model_ready("nomodel", headers=md)
            # a key created before the deactivation works again after reactivation
            assert _patch(gateway, uid, {"is_active": True}).status_code == 200
            assert c.get("/api/v1/history", headers={"X-API-Key": key}).status_code == 200
    finally:
        grpc.close()


def test_no_api_key_for_a_deactivated_account_even_from_a_stale_cache(tmp_path: Path, db_url: str) -> None:
    # An hour-long account cache stands for another gateway process that has not heard of the change yet.
    with run_gateway(gateway_settings(tmp_path, db_url, gateway_account_cache_ttl_s=3600)) as gw:
        token = gw.create_user("stale")
        with gw.client(token) as c:
            assert c.get("/api/v1/auth/me").status_code == 200  # cached as active
        other = make_engine(db_url)  # the change made through another process's connection
        with other.begin() as conn:
            conn.execute(text("UPDATE users SET is_active = false, token_version = token_version + 1 WHERE username = 'stale'"))
        other.dispose()
        with gw.client(token) as c:
            r = c.post("/api/v1/api-keys", json={"name": "sneaky"})
            assert r.status_code == 401 and _code(r) == "inactive_user"
        with Session(gw.state.engine) as db:
            assert db.exec(select(func.count()).select_from(ApiKey)).one() == 0
            db.execute(text("UPDATE users SET is_active = true WHERE username = 'stale'"))
            db.commit()
        with Session(gw.state.engine) as db:
            assert db.exec(select(func.count()).select_from(ApiKey)).one() == 0  # nothing went live on reactivation


def test_other_processes_changes_are_seen_within_the_cache_ttl(gateway: RunningGateway, db_url: str) -> None:
    adm = gateway.create_user("adm3", "admin")
    with gateway.client(adm) as c:
        assert c.get("/api/v1/users").status_code == 200
        other = make_engine(db_url)
        with other.begin() as conn:
            conn.execute(text("UPDATE users SET role = 'user' WHERE username = 'adm3'"))
        other.dispose()
        deadline = time.monotonic() + 2.5
        while c.get("/api/v1/users").status_code == 200:
            assert time.monotonic() < deadline, "a demotion made elsewhere was still ignored after 2.5 s"
            time.sleep(0.1)


def test_a_change_through_one_gateway_reaches_another_at_once_over_redis(tmp_path: Path, db_url: str) -> None:
    # Two gateway processes on one database and one Redis; b trusts its account cache for an hour, so only the
    # invalidation sent over Redis can make it notice a change made through a.
    common: dict[str, Any] = {"redis_url": REDIS_URL, "jwt_secret": "one signing key for both gateways, 32+ bytes"}
    with run_gateway(gateway_settings(tmp_path / "a", db_url, **common)) as a, \
            run_gateway(gateway_settings(tmp_path / "b", db_url, gateway_account_cache_ttl_s=3600, **common)) as b:
        deadline = time.monotonic() + 10
        while not b.state.auth.invalidations.subscribed.is_set():  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "gateway b never subscribed to the invalidation channel"
            time.sleep(0.05)
        token = a.create_user("adm6", "admin")
        uid = _uid(a, "adm6")
        with b.client(token) as c:
            assert c.get("/api/v1/users").status_code == 200  # b has adm6 cached as an active admin
            for body, status, code in (({"role": "user"}, 403, "insufficient_role"), ({"is_active": False}, 401, "inactive_user")):
                assert _patch(a, uid, body).status_code == 200
                t0 = time.monotonic()
                while (r := c.get("/api/v1/users")).status_code == 200:
                    assert time.monotonic() - t0 < 1.0, f"gateway b still honours adm6 after {body}"
                    time.sleep(0.01)
                assert r.status_code == status and _code(r) == code, r.text


def test_deactivation_ends_an_open_websocket_at_its_next_message(gateway: RunningGateway) -> None:
    token = gateway.create_user("wsuser")
    with open_ws(gateway, token) as ws:
        until(ws, "ready")
        send(ws, command="ping")
        assert until(ws, "pong")
        assert _patch(gateway, _uid(gateway, "wsuser"), {"is_active": False}).status_code == 200
        send(ws, command="ping")
        code, seen = close_code(ws)
        assert code == 1008 and seen and seen[-1]["error"]["code"] == "inactive_user", (code, seen)


def test_admin_password_change_ends_sessions(gateway: RunningGateway) -> None:
    gateway.create_user("pw1")
    pair = gateway.login("pw1", PASSWORD)
    assert _patch(gateway, _uid(gateway, "pw1"), {"password": NEW_PASSWORD}).status_code == 200
    with gateway.client(pair["access_token"]) as c:
        r = c.get("/api/v1/auth/me")
        assert r.status_code == 401 and _code(r) == "token_revoked"
        assert c.post("/api/v1/api-keys", json={}).status_code == 401
    with gateway.client() as c:
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
        assert c.post("/api/v1/auth/login", json={"username": "pw1", "password": PASSWORD}).status_code == 401
    assert gateway.login("pw1", NEW_PASSWORD)["access_token"]


def test_self_service_password_change(gateway: RunningGateway) -> None:
    gateway.create_user("pw2")
    old = gateway.login("pw2", PASSWORD)
    other_session = gateway.login("pw2", PASSWORD)
    with gateway.client(old["access_token"]) as c:
        wrong = c.post("/api/v1/auth/password/change", json={"old_password": "not my password", "new_password": NEW_PASSWORD})
        assert wrong.status_code == 401
        r = c.post("/api/v1/auth/password/change", json={"old_password": PASSWORD, "new_password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        fresh = r.json()
    with gateway.client() as c:
        for tok in (old["access_token"], other_session["access_token"]):
            assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok}"}).status_code == 401
        for tok in (old["refresh_token"], other_session["refresh_token"]):
            assert c.post("/api/v1/auth/refresh", json={"refresh_token": tok}).status_code == 401
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}).status_code == 200
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 200
    assert gateway.login("pw2", NEW_PASSWORD)


def test_last_active_admin_cannot_be_demoted_or_deactivated(gateway: RunningGateway) -> None:
    admin_id = _uid(gateway, "admin")
    for body in ({"role": "user"}, {"role": "engineer"}, {"is_active": False}):
        r = _patch(gateway, admin_id, body)
        assert r.status_code == 409 and _code(r) == "last_admin", r.text
    with gateway.client(gateway.admin_token()) as c:
        me = c.get("/api/v1/auth/me").json()
        assert me["role"] == "admin" and me["is_active"] is True
    # with a second admin, one of them may step down
    gateway.create_user("adm4", "admin")
    assert _patch(gateway, _uid(gateway, "adm4"), {"role": "user"}).status_code == 200


def test_two_admins_demoting_each_other_at_once_leave_one_admin(gateway: RunningGateway) -> None:
    b = gateway.create_user("adm5", "admin")
    a = gateway.admin_token()
    ids = {"admin": _uid(gateway, "admin"), "adm5": _uid(gateway, "adm5")}
    results: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def demote(token: str, target: str) -> None:
        with gateway.client(token) as c:
            barrier.wait()
            results[target] = c.patch(f"/api/v1/users/{ids[target]}", json={"role": "user"}).status_code

    threads = [threading.Thread(target=demote, args=(a, "adm5")), threading.Thread(target=demote, args=(b, "admin"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results.values()) in ([200, 409], [200, 401], [200, 403]), results
    with Session(gateway.state.engine) as db:
        admins = db.exec(select(func.count()).select_from(User).where(User.role == "admin", col(User.is_active).is_(True))).one()
    assert admins == 1
