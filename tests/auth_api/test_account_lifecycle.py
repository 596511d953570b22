"""Register → mailed code → verify → log in; resend limits; password reset by mailed code through a real SMTP server;
the password policy; no user enumeration through the reset form; login throttling end to end."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from auth_api.models import AccountCode
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway
from tests.fixtures.smtp import SmtpServer, mail_settings

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def mail_gw(tmp_path: Path, db_url: str, smtp_server: SmtpServer) -> Iterator[RunningGateway]:
    with run_gateway(gateway_settings(tmp_path, db_url, **mail_settings(smtp_server))) as gw:
        yield gw


def _err(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _login(c: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/api/v1/auth/login", json={"username": name, "password": password})


def _register(c: httpx.Client, name: str, email: str, password: str = PASSWORD) -> httpx.Response:
    return c.post("/api/v1/auth/register", json={"username": name, "password": password, "email": email})


def _age_codes(gw: RunningGateway, **delta: float) -> None:
    """Move every code's creation and expiry into the past (what the clock would do)."""
    d = timedelta(**delta)
    with Session(gw.state.engine) as db:
        for row in db.exec(select(AccountCode)).all():
            row.created_at, row.expires_at = row.created_at - d, row.expires_at - d
            db.add(row)
        db.commit()


def test_register_verify_login_and_codes_are_single_use(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client() as c:
        assert _register(c, "carol", "carol@example.org").status_code == 201
        (mail,) = smtp_server.wait_for("carol@example.org")
        r = _login(c, "carol")
        assert r.status_code == 403 and _err(r) == "email_not_verified" and "verify-email" in r.json()["error"]["details"]["hint"]
        r = _login(c, "carol", "not the password!")  # a wrong password says nothing about verification
        assert r.status_code == 401 and _err(r) == "bad_credentials"
        wrong = "000000" if mail.code != "000000" else "111111"
        r = c.post("/api/v1/auth/verify-email", json={"username": "carol", "code": wrong})
        assert r.status_code == 400 and _err(r) == "code_invalid"
        r = c.post("/api/v1/auth/verify-email", json={"email": "CAROL@example.org", "code": mail.code})
        assert r.status_code == 200, r.text
        r = c.post("/api/v1/auth/verify-email", json={"email": "carol@example.org", "code": mail.code})
        assert r.status_code == 400 and _err(r) == "code_used"
        assert _login(c, "carol").status_code == 200
        me = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {_login(c, 'carol').json()['access_token']}"})
        assert me.json()["email_verified"] is True
        r = c.post("/api/v1/auth/verify-email", json={"email": "nobody@example.org", "code": mail.code})
        assert r.status_code == 400 and _err(r) == "code_invalid"
        r = c.post("/api/v1/auth/verify-email", json={"email": "carol@example.org", "username": "carol", "code": "1"})
        assert r.status_code == 422


def test_sixth_attempt_finds_the_code_dead_and_expired_codes_say_so(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client() as c:
        assert _register(c, "dave", "dave@example.org").status_code == 201
        code = smtp_server.wait_for("dave@example.org")[0].code
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(5):
            r = c.post("/api/v1/auth/verify-email", json={"username": "dave", "code": wrong})
            assert r.status_code == 400 and _err(r) == "code_invalid"
        r = c.post("/api/v1/auth/verify-email", json={"username": "dave", "code": code})
        assert r.status_code == 400 and _err(r) == "code_exhausted"
        # A new code (the resend limit is once a minute: pretend a minute passed), then let it expire.
        _age_codes(mail_gw, minutes=2)
        assert c.post("/api/v1/auth/resend-code", json={"username": "dave"}).status_code == 202
        code2 = smtp_server.wait_for("dave@example.org", 2)[-1].code
        _age_codes(mail_gw, minutes=16)
        r = c.post("/api/v1/auth/verify-email", json={"username": "dave", "code": code2})
        assert r.status_code == 400 and _err(r) == "code_expired"
        assert _login(c, "dave").status_code == 403


def test_resend_at_most_once_a_minute_and_the_old_code_dies(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client() as c:
        assert _register(c, "erin", "erin@example.org").status_code == 201
        first = smtp_server.wait_for("erin@example.org")[0].code
        for _ in range(3):
            r = c.post("/api/v1/auth/resend-code", json={"email": "erin@example.org"})
            assert r.status_code == 202
        unknown = c.post("/api/v1/auth/resend-code", json={"email": "ghost@example.org"})
        assert unknown.status_code == 202 and unknown.json() == r.json()
        time.sleep(1.5)
        assert len(smtp_server.to("erin@example.org")) == 1  # within the minute: no new mail
        _age_codes(mail_gw, minutes=1, seconds=1)
        assert c.post("/api/v1/auth/resend-code", json={"email": "erin@example.org"}).status_code == 202
        second = smtp_server.wait_for("erin@example.org", 2)[-1].code
        if second != first:
            r = c.post("/api/v1/auth/verify-email", json={"email": "erin@example.org", "code": first})
            assert r.status_code == 400 and _err(r) == "code_invalid"
        assert c.post("/api/v1/auth/verify-email", json={"email": "erin@example.org", "code": second}).status_code == 200


def test_forgotten_password_is_reset_end_to_end_over_smtp(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client(mail_gw.admin_token()) as c:
        r = c.post("/api/v1/users", json={"username": "frank", "password": PASSWORD, "email": "frank@example.org"})
        assert r.status_code == 201 and r.json()["email_verified"] is True  # admin-created accounts are verified
    with mail_gw.client() as c:
        old = _login(c, "frank").json()
        r = c.post("/api/v1/auth/password/forgot", json={"email": "Frank@Example.org"})
        assert r.status_code == 202
        (mail,) = smtp_server.wait_for("frank@example.org")
        assert "password reset code" in str(mail.message["Subject"])
        r = c.post("/api/v1/auth/password/reset", json={"email": "frank@example.org", "code": mail.code, "new_password": "frank"})
        assert r.status_code == 422  # policy first; the code is not spent
        r = c.post("/api/v1/auth/password/reset", json={"email": "frank@example.org", "code": mail.code,
                                                        "new_password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        r = c.post("/api/v1/auth/password/reset", json={"email": "frank@example.org", "code": mail.code,
                                                        "new_password": "yet another passphrase"})
        assert r.status_code == 400 and _err(r) == "code_used"
        assert c.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}).status_code == 401
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {old['access_token']}"}).status_code == 401
        assert _login(c, "frank").status_code == 401
        assert _login(c, "frank", NEW_PASSWORD).status_code == 200
        r = c.post("/api/v1/auth/password/reset", json={"email": "nobody@example.org", "code": mail.code,
                                                        "new_password": NEW_PASSWORD})
        assert r.status_code == 400 and _err(r) == "code_invalid"


def test_reset_answers_alike_for_known_and_unknown_emails_whatever_the_password(mail_gw: RunningGateway,
                                                                                 smtp_server: SmtpServer) -> None:
    """Without the right code, no new password (the email itself, a common one, the account's own username) makes the
    answer for a registered email differ from the answer for an unknown one."""
    known, unknown = "quentin.mailbox@example.org", "nobody.here.at.all@example.org"
    with mail_gw.client(mail_gw.admin_token()) as c:
        r = c.post("/api/v1/users", json={"username": "quentin.long", "password": PASSWORD, "email": known})
        assert r.status_code == 201, r.text
    with mail_gw.client() as c:
        assert c.post("/api/v1/auth/password/forgot", json={"email": known}).status_code == 202
        code = smtp_server.wait_for(known)[0].code  # a live code exists: only the right one may tell the account apart
        wrong = "000000" if code != "000000" else "111111"

        def answer(email: str, new_password: str) -> tuple[int, str]:
            r = c.post("/api/v1/auth/password/reset", json={"email": email, "code": wrong, "new_password": new_password})
            return r.status_code, r.text.replace(email, "<email>")

        for new in ("{email}", "{local}", "password123", "QUENTIN.LONG"):
            a = answer(known, new.format(email=known, local=known.split("@")[0]))
            b = answer(unknown, new.format(email=unknown, local=unknown.split("@")[0]))
            assert a == b, (new, a, b)
        assert answer(known, known)[0] == 422 and answer(known, "QUENTIN.LONG")[0] == 400  # the email: refused for all
        # With the right code the owner hears about their username, and the refused password does not spend the code.
        r = c.post("/api/v1/auth/password/reset", json={"email": known, "code": code, "new_password": "Quentin.Long"})
        assert r.status_code == 422 and _err(r) == "weak_password" and "username" in r.text, r.text
        r = c.post("/api/v1/auth/password/reset", json={"email": known, "code": code, "new_password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        assert _login(c, "quentin.long", NEW_PASSWORD).status_code == 200


@pytest.mark.parametrize(("password", "why"), [("short-pw1", "at least 10"), ("password123", "too common"),
                                               ("QwertyUIOP", "too common"), ("policyuser", "username")])
def test_password_policy_has_clear_422s(mail_gw: RunningGateway, password: str, why: str) -> None:
    with mail_gw.client() as c:
        r = _register(c, "policyuser", "policy@example.org", password)
        assert r.status_code == 422 and why in r.text, r.text
    token = mail_gw.create_user("keeperkeep")
    with mail_gw.client(token) as c:
        new = "KeeperKeep" if why == "username" else password  # this account's own name, in another case
        r = c.post("/api/v1/auth/password/change", json={"old_password": PASSWORD, "new_password": new})
        assert r.status_code == 422 and why in r.text, r.text
        r = c.post("/api/v1/auth/password/change", json={"old_password": PASSWORD, "new_password": "Keeper" + "!" * 5})
        assert r.status_code == 200, r.text


def test_codes_are_stored_as_keyed_hashes(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client() as c:
        assert _register(c, "olga", "olga@example.org").status_code == 201
    code = smtp_server.wait_for("olga@example.org")[0].code
    with Session(mail_gw.state.engine) as db:
        (row,) = db.exec(select(AccountCode)).all()
    # A leaked table gives away no code: not the code, not an unkeyed hash one could tabulate for all 10**6 codes.
    assert len(row.code_hash) == 64 and row.code_hash != code
    assert row.code_hash not in {hashlib.sha256(v.encode()).hexdigest() for v in (code, f"verify:{row.user_id}:{code}")}


def test_reset_code_lives_30_minutes(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client(mail_gw.admin_token()) as c:
        assert c.post("/api/v1/users", json={"username": "pia", "password": PASSWORD, "email": "pia@example.org"}).status_code == 201
    with mail_gw.client() as c:
        assert c.post("/api/v1/auth/password/forgot", json={"email": "pia@example.org"}).status_code == 202
        first = smtp_server.wait_for("pia@example.org")[0].code
        _age_codes(mail_gw, minutes=20)  # past a verification code's 15 minutes, within a reset code's 30
        r = c.post("/api/v1/auth/password/reset", json={"email": "pia@example.org", "code": first, "new_password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        assert c.post("/api/v1/auth/password/forgot", json={"email": "pia@example.org"}).status_code == 202
        second = smtp_server.wait_for("pia@example.org", 2)[-1].code
        _age_codes(mail_gw, minutes=31)
        r = c.post("/api/v1/auth/password/reset", json={"email": "pia@example.org", "code": second,
                                                        "new_password": "yet another passphrase"})
        assert r.status_code == 400 and _err(r) == "code_expired", r.text
        assert _login(c, "pia", NEW_PASSWORD).status_code == 200


def test_changing_the_email_re_verifies_it(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    mail_gw.create_user("gina")
    with mail_gw.client(mail_gw.admin_token()) as c:
        uid = next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == "gina")
        r = c.patch(f"/api/v1/users/{uid}", json={"email": "gina@example.org"})
        assert r.status_code == 200 and r.json()["email_verified"] is False
    code = smtp_server.wait_for("gina@example.org")[0].code
    with mail_gw.client() as c:
        assert _login(c, "gina").status_code == 403
        assert c.post("/api/v1/auth/verify-email", json={"username": "gina", "code": code}).status_code == 200
        assert _login(c, "gina").status_code == 200


def test_verification_can_be_switched_off(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", require_email_verification=False)
    with run_gateway(settings) as gw, gw.client() as c:
        assert c.post("/api/v1/auth/register", json={"username": "nomail", "password": PASSWORD}).status_code == 201
        assert _login(c, "nomail").status_code == 200
    with run_gateway(gateway_settings(tmp_path / "on", f"sqlite:///{tmp_path / 'h.db'}")) as gw, gw.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": "nomail", "password": PASSWORD})
        assert r.status_code == 422 and _err(r) == "email_required"


def test_forgot_password_does_not_reveal_accounts(mail_gw: RunningGateway, smtp_server: SmtpServer) -> None:
    with mail_gw.client(mail_gw.admin_token()) as c:
        assert c.post("/api/v1/users", json={"username": "hank", "password": PASSWORD, "email": "hank@example.org"}).status_code == 201
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    bodies: dict[str, set[tuple[int, str]]] = {"known": set(), "unknown": set()}
    with mail_gw.client() as c:
        for i in range(2 * 50):  # interleaved, so load on the machine hits both kinds alike
            kind = "known" if i % 2 == 0 else "unknown"
            email = "hank@example.org" if kind == "known" else f"nobody{i}@example.org"
            t0 = time.perf_counter()
            r = c.post("/api/v1/auth/password/forgot", json={"email": email})
            times[kind].append(time.perf_counter() - t0)
            bodies[kind].add((r.status_code, r.text))
    assert bodies["known"] == bodies["unknown"] and len(bodies["known"]) == 1 and next(iter(bodies["known"]))[0] == 202
    diff_ms = abs(statistics.median(times["known"]) - statistics.median(times["unknown"])) * 1000
    assert diff_ms < 20, diff_ms
    assert len(smtp_server.wait_for("hank@example.org")) == 1  # and one mail, not fifty


@pytest.fixture
def throttled_gw(tmp_path: Path) -> Iterator[RunningGateway]:
    # First block 0.5 s: the next wrong attempt must land inside it (and escalate) even on a loaded box, where a
    # 0.2 s block could end between two attempts and let a real password check (a 401) into the run of 429s.
    settings = gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", gateway_login_lockout_base_s=0.5,
                                gateway_login_lockout_max_s=1.5, gateway_login_failure_window_s=2.0,
                                gateway_login_ip_max_failures=1000)
    with run_gateway(settings) as gw:
        yield gw


def _failure_metric(gw: RunningGateway, reason: str) -> float:
    with gw.client() as c:
        text = c.get("/metrics").text
    line = next((ln for ln in text.splitlines() if ln.startswith(f'gateway_auth_failures_total{{reason="{reason}"}}')), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_hundred_wrong_passwords_then_the_owner_logs_in(throttled_gw: RunningGateway) -> None:
    gw = throttled_gw
    gw.create_user("ivan")
    runs: dict[str, list[int]] = {}
    with gw.client() as c:
        for name in ("ivan", "no-such-user"):
            statuses, waits = [], []
            for _ in range(100):
                r = _login(c, name, "wrong password!")
                statuses.append(r.status_code)
                if r.status_code == 429:
                    waits.append(int(r.headers["Retry-After"]))
                    assert _err(r) == "login_throttled"
            assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
            assert waits == sorted(waits) and waits[-1] == 2  # grows, capped (1.5 s rounds up)
            runs[name] = statuses
            if name == "ivan":
                assert _login(c, "ivan").status_code == 429  # even the right password waits while blocked
        assert runs["ivan"] == runs["no-such-user"]  # identical for existing and unknown usernames
        time.sleep(2.2)  # the block (cap 1.5 s) and the quiet window (2 s) pass
        assert _login(c, "ivan").status_code == 200
        assert _login(c, "ivan", "wrong password!").status_code == 401  # success reset the run: counting starts over
        assert _login(c, "ivan").status_code == 200
    assert _failure_metric(gw, "login_throttled") >= 190 and _failure_metric(gw, "bad_credentials") >= 11
