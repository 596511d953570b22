"""Mail through the outbox: a real SMTP conversation (plain and STARTTLS with a self-signed certificate), an outage that
delays mail and loses none, the .eml default, and headers nobody can inject into."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from auth_api.mail.sender import SmtpTarget, build_message
from auth_api.models import OutboxMessage, utcnow
from tests.fixtures.gateway import PASSWORD, RunningGateway, gateway_settings, run_gateway
from tests.fixtures.smtp import CODE_RE, SmtpServer, mail_settings, self_signed
from tests.fixtures.triton import free_ports


def _register(gw: RunningGateway, name: str, email: str) -> None:
    with gw.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD, "email": email})
    assert r.status_code == 201, r.text


def test_registration_code_arrives_over_starttls_and_logs_in(tmp_path: Path, db_url: str, smtp_tls_server: SmtpServer) -> None:
    settings = gateway_settings(tmp_path, db_url, **mail_settings(smtp_tls_server), mail_from="mlstack <noreply@example.org>")
    with run_gateway(settings) as gw:
        _register(gw, "tlsuser", "tls.user@example.org")
        (mail,) = smtp_tls_server.wait_for("tls.user@example.org")
        assert mail.message["From"] == "mlstack <noreply@example.org>" and mail.message["To"] == "tls.user@example.org"
        assert mail.message.get_body(("html",)) is not None and mail.code in mail.text and "tlsuser" in mail.text
        with gw.client() as c:
            assert c.post("/api/v1/auth/login", json={"username": "tlsuser", "password": PASSWORD}).status_code == 403
            r = c.post("/api/v1/auth/verify-email", json={"email": "tls.user@example.org", "code": mail.code})
            assert r.status_code == 200, r.text
            assert c.post("/api/v1/auth/login", json={"username": "tlsuser", "password": PASSWORD}).status_code == 200


def test_smtp_login_with_user_and_password(tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A server that wants AUTH after STARTTLS: a wrong password keeps the mail in the outbox; the right one delivers it."""
    ctx, ca = self_signed(tmp_path)
    srv = SmtpServer(port=free_ports(1)[0], tls_context=ctx, ca_file=ca, credentials=("mailer@example.org", "s3cret:p@ss"))
    srv.start()
    try:
        bad = replace(srv, credentials=("mailer@example.org", "not-the-password"))
        with run_gateway(gateway_settings(tmp_path / "bad", db_url, **mail_settings(bad))) as gw:
            _register(gw, "authuser", "auth.user@example.org")
            deadline = time.monotonic() + 20
            while True:
                with Session(gw.state.engine) as db:
                    (row,) = db.exec(select(OutboxMessage)).all()
                if row.attempts >= 2:
                    break
                assert time.monotonic() < deadline, row
                time.sleep(0.1)
            assert row.sent_at is None and srv.messages == []
        with run_gateway(gateway_settings(tmp_path / "good", db_url, **mail_settings(srv))):
            (mail,) = srv.wait_for("auth.user@example.org")
            assert "verification code" in str(mail.message["Subject"])
        assert not any("s3cret" in r.getMessage() or "not-the-password" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()


def test_the_ca_file_is_trusted_besides_the_systems(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLSTACK_SMTP_CA_FILE adds a CA: a server with a certificate from the system's store still gets the mail."""
    (tmp_path / "system").mkdir()
    (tmp_path / "extra").mkdir()
    ctx, system_ca = self_signed(tmp_path / "system")
    _, extra_ca = self_signed(tmp_path / "extra")  # e.g. a company CA, unrelated to this server's certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(system_ca))  # stands in for the system's CA store
    srv = SmtpServer(port=free_ports(1)[0], tls_context=ctx, ca_file=extra_ca)
    srv.start()
    try:
        with run_gateway(gateway_settings(tmp_path, db_url, **mail_settings(srv))) as gw:
            _register(gw, "sysca", "sys.ca@example.org")
            (mail,) = srv.wait_for("sys.ca@example.org")
            assert "verification code" in str(mail.message["Subject"])
    finally:
        srv.stop()


def test_an_smtp_outage_delays_mail_and_loses_none(tmp_path: Path, db_url: str, smtp_server: SmtpServer) -> None:
    smtp_server.stop()
    with run_gateway(gateway_settings(tmp_path, db_url, **mail_settings(smtp_server))) as gw:
        addresses = [f"wait{i}@example.org" for i in range(3)]
        for i, addr in enumerate(addresses):
            _register(gw, f"wait{i}", addr)
        deadline = time.monotonic() + 20
        while True:  # the sender tried and failed: the messages wait in the outbox
            with Session(gw.state.engine) as db:
                rows = db.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all()
            if len(rows) == 3 and all(r.attempts >= 2 and r.sent_at is None for r in rows):
                break
            assert time.monotonic() < deadline, [(r.attempts, r.last_error) for r in rows]
            time.sleep(0.1)
        assert smtp_server.messages == []
        smtp_server.start()
        for addr in addresses:
            smtp_server.wait_for(addr)
        time.sleep(2.5)  # longer than the longest retry delay: nothing is sent twice
        assert sorted(a for m in smtp_server.messages for a in m.envelope_to) == sorted(addresses)
        with Session(gw.state.engine) as db:
            assert all(r.sent_at is not None for r in db.exec(select(OutboxMessage)).all())


def _sent_rows(gw: RunningGateway, n: int) -> list[OutboxMessage]:
    deadline = time.monotonic() + 20
    while True:  # the server has the mail a moment before the sender marks the row sent
        with Session(gw.state.engine) as db:
            rows = list(db.exec(select(OutboxMessage).order_by(col(OutboxMessage.id))).all())
        if len(rows) == n and all(r.sent_at is not None for r in rows):
            return rows
        assert time.monotonic() < deadline, [(r.id, r.sent_at, r.last_error) for r in rows]
        time.sleep(0.05)


def _text_columns(row: OutboxMessage) -> list[str]:
    return [v for v in row.model_dump().values() if isinstance(v, str)]


def test_delivered_messages_leave_no_code_in_the_outbox(tmp_path: Path, db_url: str, smtp_server: SmtpServer) -> None:
    """Codes are stored hashed; the mail that carried one must not keep it readable in the database after delivery."""
    with run_gateway(gateway_settings(tmp_path, db_url, **mail_settings(smtp_server))) as gw:
        _register(gw, "atrest", "at.rest@example.org")
        with gw.client() as c:
            c.post("/api/v1/auth/verify-email", json={"email": "at.rest@example.org",
                                                      "code": smtp_server.wait_for("at.rest@example.org")[0].code})
            assert c.post("/api/v1/auth/password/forgot", json={"email": "at.rest@example.org"}).status_code == 202
        mails = smtp_server.wait_for("at.rest@example.org", 2)
        assert mails[0].code in mails[0].text and mails[1].code in mails[1].text  # what was delivered carried the codes
        rows = _sent_rows(gw, 2)
        for row in rows:
            assert not any(CODE_RE.search(v) for v in _text_columns(row)), row
            assert row.recipient == "at.rest@example.org" and row.body_text == row.body_html == ""
        assert [r.subject for r in rows] == ["Your mlstack verification code: [removed after delivery]",
                                             "Your mlstack password reset code: [removed after delivery]"]


def test_rows_delivered_before_redaction_existed_are_redacted_at_start(tmp_path: Path, db_url: str) -> None:
    settings = gateway_settings(tmp_path, db_url)
    with run_gateway(settings) as gw, Session(gw.state.engine) as db:
        db.add(OutboxMessage(recipient="old@example.org", subject="Your mlstack password reset code: 482913",
                             body_text="your password reset code is 482913", body_html="<b>482913</b>", sent_at=utcnow()))
        db.commit()
    with run_gateway(settings) as gw:
        (row,) = _sent_rows(gw, 1)
        deadline = time.monotonic() + 20
        while row.body_text:
            assert time.monotonic() < deadline, row
            time.sleep(0.05)
            (row,) = _sent_rows(gw, 1)
        assert not any(CODE_RE.search(v) for v in _text_columns(row)) and row.recipient == "old@example.org"
        assert row.subject == "Your mlstack password reset code: [removed after delivery]"


def test_without_smtp_messages_are_eml_files_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="auth_api.mail.sender")
    with run_gateway(gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")) as gw:
        _register(gw, "laptop", "laptop@example.org")
        code = gw.outbox_code("laptop@example.org")
        assert len(code) == 6 and code.isdigit()
        files = list((tmp_path / "var" / "outbox").glob("*.eml"))
        assert len(files) == 1 and b"Subject: Your mlstack verification code" in files[0].read_bytes()
        assert any("laptop@example.org" in r.getMessage() and "verification code" in r.getMessage() for r in caplog.records)
        gw.verify_email("laptop@example.org")


@pytest.mark.parametrize("email", ["a@example.org\r\nBcc: victim@example.org", "a@example.org\nSubject: hi",
                                   "a@example.org%0d%0aBcc:x@example.org", "é@example.org", "a@exämple.org",
                                   "a" * 64 + "@" + "b" * 185 + ".org", "x" * 300 + "@example.org"])
def test_header_injection_unicode_and_long_emails_are_422(tmp_path: Path, email: str) -> None:
    with run_gateway(gateway_settings(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")) as gw:
        with gw.client() as c:
            r = c.post("/api/v1/auth/register", json={"username": "inject", "password": PASSWORD, "email": email})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
            r = c.post("/api/v1/auth/password/forgot", json={"email": email})
            assert r.status_code == 422
        with gw.client(gw.admin_token()) as c:
            assert c.post("/api/v1/users", json={"username": "inject", "password": PASSWORD, "email": email}).status_code == 422
        with Session(gw.state.engine) as db:
            assert db.exec(select(OutboxMessage)).all() == []


def test_crlf_in_a_stored_value_never_becomes_a_header() -> None:
    row = OutboxMessage(id=1, recipient="a@example.org", subject="hello\r\nBcc: victim@example.org", body_text="x", body_html="x")
    with pytest.raises(ValueError):  # EmailMessage refuses it: the message is not sent, it stays in the outbox
        build_message(row, "mlstack <noreply@example.org>")
    from auth_api.mail.templates import render

    msg = render("verify_email", username="evil\r\nBcc: victim@example.org", code="123456", minutes=15)
    assert "\r" not in msg.subject and "\n" not in msg.subject and "<b>123456</b>" in msg.html


def test_smtp_urls_parse() -> None:
    t = SmtpTarget.parse("smtps://u%40x:p%3Aw@mail.example.org")
    assert (t.host, t.port, t.implicit_tls, t.username, t.password) == ("mail.example.org", 465, True, "u@x", "p:w")
    assert "p:w" not in str(t)
    t = SmtpTarget.parse("smtp://mail.example.org:2525?starttls=required")
    assert (t.port, t.implicit_tls, t.starttls) == (2525, False, True)
    assert SmtpTarget.parse("smtp://mail.example.org").starttls is None
    with pytest.raises(ValueError):
        SmtpTarget.parse("http://mail.example.org")
