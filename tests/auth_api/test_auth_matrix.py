"""Every route × every kind of caller: who gets in, who gets 401, who gets 403 — always with the JSON error body."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from auth_api.core.security import TokenCodec
from tests.fixtures.db import BACKENDS, fresh_database
from tests.fixtures.gateway import RunningGateway, gateway_settings, run_gateway

PUBLIC, USER, ENGINEER, ADMIN = "public", "user", "engineer", "admin"
# (method, path, minimum role, request kwargs). Model "nomodel" does not exist and Triton is down: an admitted
# caller gets 404/422/503, never 401/403.
ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("GET", "/health/live", PUBLIC, {}),
    ("GET", "/health/ready", PUBLIC, {}),
    ("GET", "/metrics", PUBLIC, {}),
    ("GET", "/v2/health/ready", PUBLIC, {}),
    ("GET", "/api/v1/auth/me", USER, {}),
    ("GET", "/api/v1/history", USER, {}),
    ("GET", "/api/v1/history/999", USER, {}),
    ("POST", "/api/v1/history/999/feedback", USER, {"json": {"correct": True}}),
    ("GET", "/api/v1/dashboard/stats", USER, {}),
    ("GET", "/api/v1/dashboard/recent?limit=5", USER, {}),
    ("GET", "/api/v1/dashboard/timeline?days=2&bucket=hour", USER, {}),
    ("GET", "/api/v1/dashboard/labels/setosa", USER, {}),
    ("GET", "/api/v1/models", USER, {}),
    ("GET", "/api/v1/models/nomodel", USER, {}),
    ("POST", "/api/v1/predict/nomodel", USER, {"json": {"instances": [[1.0, 2.0]]}}),
    ("GET", "/v2", USER, {}),
    ("GET", "/v2/models/nomodel", USER, {}),
    ("GET", "/v2/models/nomodel/ready", USER, {}),
    ("POST", "/v2/models/nomodel/infer", USER, {"json": {"inputs": []}}),
    ("POST", "/v2/models/nomodel/versions/1/infer", USER, {"json": {"inputs": []}}),
    ("POST", "/v2/repository/index", USER, {}),
    ("GET", "/v2/models/nomodel/stats", ENGINEER, {}),
    ("GET", "/api/v1/api-keys", "login", {}),
    ("POST", "/api/v1/models/nomodel/versions", ENGINEER, {"files": {"file": ("m.onnx", b"not onnx")}}),
    ("POST", "/api/v1/models/nomodel/versions/1/promote", ENGINEER, {}),
    ("POST", "/api/v1/models/nomodel/rollback", ENGINEER, {}),
    ("GET", "/api/v1/users", ADMIN, {}),
    ("POST", "/api/v1/users", ADMIN, {"json": {}}),
    ("GET", "/api/v1/users/999", ADMIN, {}),
    ("PATCH", "/api/v1/users/999", ADMIN, {"json": {"role": "user"}}),
    ("DELETE", "/api/v1/models/nomodel/versions/1", ADMIN, {}),
    # the applications on the stack: datasets, training jobs, alerts, the battery fleet
    ("GET", "/api/v1/datasets", USER, {}),
    ("GET", "/api/v1/datasets/nodataset", USER, {}),
    ("POST", "/api/v1/datasets", USER, {"files": {"file": ("t.csv", b"a,b\n1,2\n")}}),
    ("DELETE", "/api/v1/datasets/nodataset", USER, {}),
    ("GET", "/api/v1/jobs", USER, {}),
    ("GET", "/api/v1/jobs/999", USER, {}),
    ("POST", "/api/v1/jobs", USER, {"json": {}}),
    ("POST", "/api/v1/jobs/999/cancel", USER, {}),
    ("PUT", "/api/v1/models/nomodel/share", USER, {"json": {"shared": True}}),
    ("GET", "/api/v1/alerts", USER, {}),
    ("GET", "/api/v1/alerts/999", USER, {}),
    ("PUT", "/api/v1/alerts/999/read", USER, {}),
    ("POST", "/api/v1/alerts/read-all", USER, {}),
    ("GET", "/api/v1/alert-rules", USER, {}),
    ("POST", "/api/v1/alert-rules", USER, {"json": {}}),
    ("DELETE", "/api/v1/alert-rules/999", USER, {}),
    ("GET", "/api/v1/batteries", USER, {}),
    ("POST", "/api/v1/batteries", USER, {"json": {}}),
    ("GET", "/api/v1/batteries/999", USER, {}),
    ("GET", "/api/v1/batteries/999/data", USER, {}),
    ("POST", "/api/v1/batteries/999/analyses", USER, {"json": {}}),
    ("GET", "/api/v1/analyses/999", USER, {}),
    ("GET", "/api/v1/analyses/999/explanation", USER, {}),
    ("POST", "/api/v1/batteries/999/twin", USER, {}),
    ("GET", "/api/v1/batteries/999/thermal", USER, {}),
]
RANK = {USER: 0, ENGINEER: 1, ADMIN: 2}
CALLERS = ["anonymous", "user", "engineer", "admin", "api_key", "revoked_key", "expired_token", "tampered_token", "alg_none"]


def _b64(d: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


@pytest.fixture(scope="module", params=BACKENDS)
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, dict]]:
    if request.param == "postgresql":
        request.getfixturevalue("pg_available")
    tmp = tmp_path_factory.mktemp("matrix")
    with fresh_database(request.param, tmp) as url, run_gateway(gateway_settings(tmp, url)) as gw:
        creds: dict[str, dict[str, str]] = {"anonymous": {}}
        for role in ("user", "engineer"):
            creds[role] = {"Authorization": f"Bearer {gw.create_user(f'm_{role}', role)}"}
        creds["admin"] = {"Authorization": f"Bearer {gw.admin_token()}"}
        with gw.client(gw.tokens["m_user"]) as c:
            live = c.post("/api/v1/api-keys", json={"scopes": ["predict", "history", "models"]}).json()
            dead = c.post("/api/v1/api-keys", json={}).json()
            assert c.delete(f"/api/v1/api-keys/{dead['id']}").status_code == 200
        creds["api_key"] = {"X-API-Key": live["key"]}
        creds["revoked_key"] = {"Authorization": f"Bearer {dead['key']}"}
        user_id = gw.login("m_user", "correct horse battery")
        h, p, s = user_id["access_token"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        expired = TokenCodec(gw.state.codec._key, -60, 60).access_token(int(claims["sub"]), "m_user", "admin")
        creds["expired_token"] = {"Authorization": f"Bearer {expired}"}
        creds["tampered_token"] = {"Authorization": f"Bearer {h}.{_b64({**claims, 'role': 'admin'})}.{s}"}
        creds["alg_none"] = {"Authorization": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'role': 'admin'})}."}
        yield gw, creds


def _expected(caller: str, need: str) -> str:
    if need == PUBLIC:
        return "in"
    if caller in ("anonymous", "revoked_key", "expired_token", "tampered_token", "alg_none"):
        return "401"
    if need == "login":
        return "403" if caller == "api_key" else "in"
    role = "user" if caller == "api_key" else caller
    return "in" if RANK[role] >= RANK[need] else "403"


@pytest.mark.parametrize("caller", CALLERS)
def test_route_matrix(matrix: tuple[RunningGateway, dict], caller: str) -> None:
    gw, creds = matrix
    failures = []
    with gw.client() as c:
        for method, path, need, kwargs in ROUTES:
            r = c.request(method, path, headers=creds[caller], **kwargs)
            want = _expected(caller, need)
            got_ok = r.status_code not in (401, 403)
            if (want == "in") != got_ok or (want != "in" and str(r.status_code) != want):
                failures.append(f"{method} {path}: want {want}, got {r.status_code} {r.text[:200]}")
            if r.status_code >= 400 and path != "/v2/health/ready":
                body = r.json()
                if path.startswith("/v2"):  # KServe v2 shape: the message string (tritonclient reads it as one)
                    assert isinstance(body["error"], str) and body["code"], (path, body)
                else:
                    assert set(body["error"]) == {"code", "message", "details"}, (path, body)
            if r.status_code == 401:
                assert r.headers.get("www-authenticate") == "Bearer"
    assert not failures, "\n".join(failures)
