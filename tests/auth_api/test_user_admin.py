"""User administration: deletion (anonymised or purged), the roles table, token introspection."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
from sqlmodel import Session, select

from auth_api.models import Prediction, User
from auth_api.roles import ROLE_RANK
from tests.fixtures.gateway import PASSWORD, RunningGateway


def _err(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _uid(gw: RunningGateway, name: str) -> int:
    with gw.client(gw.admin_token()) as c:
        return int(next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == name))


def _history(gw: RunningGateway, user_id: int, n: int = 3) -> None:
    """Rows as the ingester writes them (no Triton here: the tests need history, not inference)."""
    with Session(gw.state.engine) as db:
        for _ in range(n):
            db.add(Prediction(user_id=user_id, model="iris", protocol="rest", status=200, gateway_ms=1.0, upstream_ms=1.0,
                              output_label="setosa", client_ip="203.0.113.7"))
        db.commit()


def test_delete_anonymises_frees_the_name_and_kills_every_credential(gateway: RunningGateway) -> None:
    token = gateway.create_user("judy")
    uid = _uid(gateway, "judy")
    refresh = gateway.login("judy", PASSWORD)["refresh_token"]
    with gateway.client(token) as c:
        key = c.post("/api/v1/api-keys", json={"name": "k"}).json()["key"]
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 200
    _history(gateway, uid)
    with gateway.client(gateway.admin_token()) as c:
        c.patch(f"/api/v1/users/{uid}", json={"email": "judy@example.org"})
        r = c.delete(f"/api/v1/users/{uid}")
        assert r.status_code == 200, r.text
        assert c.get(f"/api/v1/users/{uid}").status_code == 404
        assert "judy" not in c.get("/api/v1/users").text
        assert c.delete(f"/api/v1/users/{uid}").status_code == 404
    with gateway.client() as c:
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
        assert c.post("/api/v1/auth/login", json={"username": "judy", "password": PASSWORD}).status_code == 401
    with Session(gateway.state.engine) as db:
        row = db.get(User, uid)
        assert row is not None and row.username == f"~deleted-{uid}" and row.email is None and not row.is_active
        kept = db.exec(select(Prediction).where(Prediction.user_id == uid)).all()
        assert len(kept) == 3 and all(p.client_ip is None for p in kept)  # counted, not tied to a person
    with gateway.client(gateway.admin_token()) as c:  # name and email are free again
        r = c.post("/api/v1/users", json={"username": "Judy", "password": PASSWORD, "email": "judy@example.org"})
        assert r.status_code == 201, r.text


def test_purge_removes_the_history_too(gateway: RunningGateway) -> None:
    gateway.create_user("kim")
    uid = _uid(gateway, "kim")
    _history(gateway, uid)
    with gateway.client(gateway.admin_token()) as c:
        assert c.delete(f"/api/v1/users/{uid}", params={"purge": "true"}).status_code == 200
        assert c.delete("/api/v1/users/1", params={"purg": "true"}).status_code == 422  # unknown query parameter
    with Session(gateway.state.engine) as db:
        assert db.get(User, uid) is None
        assert db.exec(select(Prediction).where(Prediction.user_id == uid)).all() == []


def test_not_yourself_not_the_last_admin_and_only_admins(gateway: RunningGateway) -> None:
    user_token = gateway.create_user("leo")
    gateway.create_user("root2", role="admin")
    admin_id, root2 = _uid(gateway, "admin"), _uid(gateway, "root2")
    with gateway.client(user_token) as c:
        r = c.delete(f"/api/v1/users/{root2}")
        assert r.status_code == 403 and _err(r) == "insufficient_role"
    with gateway.client(gateway.admin_token()) as c:
        r = c.delete(f"/api/v1/users/{admin_id}")
        assert r.status_code == 409 and _err(r) == "cannot_delete_self"
        assert c.delete("/api/v1/users/999999").status_code == 404
    # Two admins deleting each other at the same moment: one wins, the system keeps an active admin.
    barrier = threading.Barrier(2)

    def delete(token: str, target: int) -> int:
        with gateway.client(token) as c:
            barrier.wait()
            return c.delete(f"/api/v1/users/{target}").status_code

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(delete, gateway.admin_token(), root2)
        b = pool.submit(delete, gateway.tokens["root2"], admin_id)
        codes = sorted([a.result(), b.result()])
    assert codes[0] == 200 and codes[1] in (401, 409), codes
    with Session(gateway.state.engine) as db:
        assert len(db.exec(select(User).where(User.role == "admin", User.is_active == True)).all()) == 1  # noqa: E712


def test_roles_come_from_the_table_authorization_reads(gateway: RunningGateway) -> None:
    token = gateway.create_user("mia")
    with gateway.client(token) as c:
        roles = c.get("/api/v1/roles").json()
    assert [r["name"] for r in roles] == sorted(ROLE_RANK, key=ROLE_RANK.__getitem__)
    by = {r["name"]: r for r in roles}
    assert "users:delete" in by["admin"]["permissions"] and "users:delete" not in by["engineer"]["permissions"]
    assert set(by["user"]["permissions"]) <= set(by["engineer"]["permissions"]) <= set(by["admin"]["permissions"])
    with gateway.client() as c:
        assert c.get("/api/v1/roles").status_code == 401


def test_verify_token_answers_subject_role_and_expiry(gateway: RunningGateway) -> None:
    token = gateway.create_user("ned", role="engineer")
    with gateway.client(token) as c:
        r = c.get("/api/v1/auth/verify")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sub"] == str(_uid(gateway, "ned")) and body["role"] == "engineer" and body["username"] == "ned"
        assert datetime.fromisoformat(body["expires_at"]).timestamp() > datetime.now().timestamp()
        key = c.post("/api/v1/api-keys", json={"name": "k", "expires_in_days": 3}).json()["key"]
    with gateway.client() as c:
        r = c.get("/api/v1/auth/verify", headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json()["kind"] == "api_key" and r.json()["expires_at"] is not None
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {token}x"}):
            r = c.get("/api/v1/auth/verify", headers=headers)
            assert r.status_code == 401 and "error" in r.json()
