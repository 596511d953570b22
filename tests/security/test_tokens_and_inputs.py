"""Tokens, numbers and logins an attacker controls: every bad one is a 4xx with the JSON error body, never a 500.

Also keeps the guarantees that already held (forged/expired/``alg: none`` tokens, revoked keys, cross-user history),
login throttling, the bounded password-hashing pool and the file modes under ``var/``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from auth_api.core.security import TokenCodec
from auth_api.models import Prediction, User
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway

HUGE = str(2**63)  # one past BIGINT
HUGER = "9" * 40


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _sign(key: bytes, claims: Any, header: dict[str, Any] | None = None) -> str:
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 500, (r.request.url, r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"error"}, body
    assert "Traceback" not in r.text and str(Path.cwd()) not in r.text and "/tmp/" not in r.text
    return dict(body["error"]) if isinstance(body["error"], dict) else {"code": body.get("code"), "message": body["error"]}


def _uid(gw: RunningGateway, name: str) -> int:
    with Session(gw.state.engine) as db:
        uid = db.exec(select(User.id).where(User.username == name)).one()
        assert uid is not None
        return uid


# --- numbers beyond 64 bits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"/api/v1/history/{HUGE}"), ("GET", f"/api/v1/history/{HUGER}"), ("GET", f"/api/v1/history?offset={HUGE}"),
    ("POST", f"/api/v1/history/{HUGE}/feedback"), ("GET", f"/api/v1/users?offset={HUGE}"), ("GET", f"/api/v1/users/{HUGE}"),
    ("PATCH", f"/api/v1/users/{HUGE}"), ("DELETE", f"/api/v1/api-keys/{HUGE}"), ("GET", "/api/v1/history/-1"),
    ("GET", "/api/v1/users/0"),
])
def test_integers_beyond_64_bits_are_4xx(gateway: RunningGateway, method: str, path: str) -> None:
    body = {"correct": True} if path.endswith("feedback") else {"role": "user"} if method == "PATCH" else None
    with gateway.client(gateway.admin_token()) as c:
        r = c.request(method, path, json=body)
    assert r.status_code in (404, 422), (path, r.status_code, r.text)
    _error(r)


def test_largest_ids_are_simply_not_found(gateway: RunningGateway) -> None:
    top = str(2**31 - 1)  # ids are INTEGER columns (32-bit on PostgreSQL)
    with gateway.client(gateway.admin_token()) as c:
        for method, path in (("GET", f"/api/v1/history/{top}"), ("GET", f"/api/v1/users/{top}"), ("DELETE", f"/api/v1/api-keys/{top}")):
            assert c.request(method, path).status_code == 404, path
        # Beyond the INTEGER columns: refused at the edge (a prediction's UUID is the other accepted form of a history key).
        for path in ("/api/v1/history/2147483648", "/api/v1/history/9999999999", f"/api/v1/history/{2**63}",
                     "/api/v1/users/2147483648"):
            assert c.get(path).status_code == 422, path
        assert c.get(f"/api/v1/history?offset={2**63 - 1}").json()["items"] == []
        assert c.get(f"/api/v1/users?offset={2**63 - 1}").json() == []


# --- malformed claims under the real signature ------------------------------------------------------------------
GOOD = {"sub": "1", "name": "admin", "role": "admin", "typ": "access", "tv": 0, "jti": "x"}
BAD_CLAIMS = {
    "non_numeric_sub": {"sub": "admin"}, "float_sub": {"sub": 1.5}, "int_sub": {"sub": 1}, "negative_sub": {"sub": "-1"},
    "huge_sub": {"sub": HUGE}, "int4_overflow_sub": {"sub": "2147483648"}, "unicode_digits_sub": {"sub": "١"},
    "list_role": {"role": ["admin"]},
    "missing_exp": {"exp": None}, "string_exp": {"exp": "tomorrow"}, "float_exp": {"exp": 1e20}, "bool_exp": {"exp": True},
    "wrong_typ": {"typ": "refresh"}, "missing_typ": {"typ": None}, "missing_tv": {"tv": None}, "string_tv": {"tv": "0"},
    "list_payload": None, "missing_sub": {"sub": None},
}


@pytest.mark.parametrize("case", sorted(BAD_CLAIMS))
def test_malformed_claims_signed_with_the_real_key_are_401(gateway: RunningGateway, case: str) -> None:
    now = int(time.time())
    claims: Any = {**GOOD, "iat": now, "exp": now + 600}
    change = BAD_CLAIMS[case]
    if change is None:
        claims = [claims]
    else:
        for k, v in change.items():
            if v is None:
                claims.pop(k)
            else:
                claims[k] = v
    token = _sign(gateway.state.codec._key, claims)
    with gateway.client(token) as c:
        for method, path in (("GET", "/api/v1/auth/me"), ("GET", "/api/v1/users"), ("POST", "/v2/models/nomodel/infer"),
                             ("POST", "/api/v1/api-keys")):
            r = c.request(method, path, json={"inputs": []} if "v2" in path else {})
            assert r.status_code == 401, (case, path, r.status_code, r.text)
            _error(r)


# --- guarantees that already held ----------------------------------------------------------------------------------
def test_forged_expired_and_alg_none_tokens_are_401(gateway: RunningGateway) -> None:
    now = int(time.time())
    claims = {**GOOD, "iat": now, "exp": now + 600}
    forged = _sign(b"not-the-key-" * 4, claims)
    expired = TokenCodec(gateway.state.codec._key, -60, 60).access_token(1, "admin", "admin")
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    none = f"{none_header}.{_b64(json.dumps(claims).encode())}."
    hs512 = _sign(gateway.state.codec._key, claims, {"alg": "HS512", "typ": "JWT"})
    for token, code in ((forged, "bad_signature"), (expired, "token_expired"), (none, None), (hs512, None)):
        with gateway.client(token) as c:
            r = c.get("/api/v1/users")
            assert r.status_code == 401, r.text
            if code:
                assert _error(r)["code"] == code


def test_revoked_api_key_is_401(gateway: RunningGateway) -> None:
    token = gateway.create_user("keyrev")
    with gateway.client(token) as c:
        created = c.post("/api/v1/api-keys", json={"scopes": ["history"]}).json()
        assert c.delete(f"/api/v1/api-keys/{created['id']}").status_code == 200
    with gateway.client() as c:
        r = c.get("/api/v1/history", headers={"X-API-Key": created["key"]})
        assert r.status_code == 401 and _error(r)["code"] == "revoked_api_key"


def test_user_cannot_read_another_users_history(gateway: RunningGateway) -> None:
    a = gateway.create_user("hist_a")
    gateway.create_user("hist_b")
    with Session(gateway.state.engine) as db:
        row = Prediction(user_id=_uid(gateway, "hist_b"), model="iris", protocol="rest", status=200, gateway_ms=1.0,
                         upstream_ms=1.0, output_label="setosa")
        db.add(row)
        db.commit()
        db.refresh(row)
    with gateway.client(a) as c:
        assert c.get(f"/api/v1/history/{row.id}").status_code == 404
        assert c.post(f"/api/v1/history/{row.id}/feedback", json={"correct": False}).status_code == 404
        assert c.get("/api/v1/history").json()["total"] == 0
    with gateway.client(gateway.tokens["hist_b"]) as c:
        assert c.get(f"/api/v1/history/{row.id}").status_code == 200


# --- login throttling -----------------------------------------------------------------------------------------------
def _login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post("/api/v1/auth/login", json={"username": user, "password": password})


def test_login_throttling_per_account(tmp_path: Path, db_url: str) -> None:
    with run_gateway(gateway_settings(tmp_path, db_url, gateway_login_lockout_base_s=2.0)) as gw, gw.client() as c:
        gw.create_user("victim")
        waits: dict[str, list[int]] = {}
        bodies: dict[str, list[Any]] = {}
        for user in ("victim", "nosuchuser"):  # the same answers whether or not the account exists
            codes = [_login(c, user, "wrong-password").status_code for _ in range(5)]
            assert codes == [401] * 5
            throttled = [_login(c, user.upper(), "wrong-password") for _ in range(4)]  # case variants share the counter
            assert [r.status_code for r in throttled] == [429] * 4
            waits[user] = [int(r.headers["retry-after"]) for r in throttled]
            bodies[user] = [r.json() for r in throttled]
            assert _error(throttled[0])["code"] == "login_throttled"
        assert waits["victim"] == waits["nosuchuser"] and bodies["victim"] == bodies["nosuchuser"]
        assert waits["victim"] == sorted(waits["victim"]) and waits["victim"][-1] >= 4 * waits["victim"][0]  # grows
        assert _login(c, "victim", PASSWORD).status_code == 429  # even the right password waits
        metrics = c.get("/metrics").text
        assert 'gateway_auth_failures_total{reason="login_throttled"} 9.0' in metrics
        assert 'gateway_auth_failures_total{reason="bad_credentials"} 10.0' in metrics


def test_owner_gets_back_in_after_the_wait_and_success_resets(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url, gateway_login_lockout_base_s=0.3, gateway_login_lockout_max_s=0.6)
    with run_gateway(settings) as gw, gw.client() as c:
        gw.create_user("owner")
        for _ in range(30):  # an attacker hammering the account
            _login(c, "owner", "guess-guess")
        assert _login(c, "owner", PASSWORD).status_code == 429
        time.sleep(0.7)  # the capped wait has passed
        assert _login(c, "owner", PASSWORD).status_code == 200
        for _ in range(2):  # a success reset the account counter: four more mistakes are allowed
            for _ in range(4):
                assert _login(c, "owner", "typo-typo").status_code == 401
            assert _login(c, "owner", PASSWORD).status_code == 200


def test_login_throttling_per_client_ip(tmp_path: Path, db_url: str) -> None:
    with run_gateway(gateway_settings(tmp_path, db_url, gateway_login_ip_max_failures=6)) as gw, gw.client() as c:
        gw.create_user("bystander")
        codes = [_login(c, f"spray{i}", "wrong-password").status_code for i in range(8)]
        assert codes == [401] * 6 + [429] * 2  # different usernames, one client: the IP counter stops it
        assert _login(c, "bystander", PASSWORD).status_code == 429


def test_password_hashing_never_runs_more_than_one_at_a_time(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url, gateway_login_ip_max_failures=1000)
    with run_gateway(settings) as gw:
        token = gw.create_user("latency")

        def probe(n: int) -> list[float]:
            out = []
            with gw.client(token) as c:
                for _ in range(n):
                    t0 = time.perf_counter()
                    assert c.get("/api/v1/auth/me").status_code == 200
                    out.append((time.perf_counter() - t0) * 1000)
            return out

        quiet = probe(40)
        storm_done = threading.Event()

        def bad_login(i: int) -> None:
            with gw.client() as c:
                for j in range(2):
                    _login(c, f"storm{i}-{j}", "wrong-password")

        threads = [threading.Thread(target=bad_login, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        loaded = probe(40)
        for t in threads:
            t.join(timeout=120)
        storm_done.set()
        assert gw.state.hashing.peak_running == 1
        q, s = statistics.median(quiet), statistics.median(loaded)
        print(f"/auth/me p50: quiet {q:.1f} ms, during 16 concurrent bad logins {s:.1f} ms")
        assert s < max(10 * q, 50.0), (q, s)


# --- files under var/ ---------------------------------------------------------------------------------------------
def test_var_dir_database_and_key_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask: without care, files come out world-readable
    try:
        settings = gateway_settings(tmp_path, "sqlite://", database_url=None)
        with run_gateway(settings) as gw:
            assert gw.login("admin", "admin-test-password-1")
        var = tmp_path / "var"
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        for name in ("gateway.db", "jwt.key", "storage-signing.key"):
            assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
        # whatever else the gateway keeps there (journal segments, locks, stored inputs) is owner-only too
        loose = [str(p.relative_to(var)) for p in var.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
        assert not loose, loose
        # an older installation with loose modes is tightened on the next start
        var.chmod(0o755)
        for name in ("gateway.db", "jwt.key"):
            (var / name).chmod(0o644)
        with run_gateway(settings) as gw:
            assert gw.login("admin", "admin-test-password-1")
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        for name in ("gateway.db", "jwt.key", "gateway.db-wal"):
            if (var / name).exists():
                assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
    finally:
        os.umask(old)
