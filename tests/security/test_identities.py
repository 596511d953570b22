"""Usernames and emails are unique case-insensitively (NFKC + casefold); confusable usernames are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from auth_api.core.db import alembic_config, make_engine, upgrade
from auth_api.models import User
from tests.fixtures.gateway import PASSWORD, RunningGateway


def _code(r) -> str:  # type: ignore[no-untyped-def]
    return str(r.json()["error"]["code"])


@pytest.mark.parametrize("name", ["Admin", "ADMIN", "aDmIn", "ａｄｍｉｎ", " admin "])
def test_case_and_width_variants_of_a_taken_name_are_refused(gateway: RunningGateway, name: str) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
        assert r.status_code == 409 and _code(r) == "username_taken", r.text
    with gateway.client(gateway.admin_token()) as c:
        assert c.post("/api/v1/users", json={"username": name, "password": PASSWORD}).status_code == 409


@pytest.mark.parametrize("name", ["аdmin",  # Cyrillic а
                                  "adm\u200bin", "admin\u0301", "ad min", "-admin", "ab", "a" * 33, "admin@x", "ﬁle"])
def test_confusable_and_out_of_set_usernames_are_refused(gateway: RunningGateway, name: str) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD, "email": "x@example.com"})
    if name == "ﬁle":  # the ligature is NFKC-normalised to "file", which is a fine name
        assert r.status_code == 201 and r.json()["username"] == "file"
        return
    assert r.status_code == 422 and _code(r) == "invalid_request", r.text
    assert "username must be" in r.text


def test_login_is_case_insensitive_and_display_case_is_kept(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": "Alice.B", "password": PASSWORD, "email": "alice.b@example.com"})
        assert r.status_code == 201 and r.json()["username"] == "Alice.B"
        gateway.verify_email("alice.b@example.com")
        for login in ("alice.b", "ALICE.B", "Alice.B", "ａｌｉｃｅ.ｂ"):
            assert c.post("/api/v1/auth/login", json={"username": login, "password": PASSWORD}).status_code == 200, login
        assert c.post("/api/v1/auth/register", json={"username": "alice.b", "password": PASSWORD}).status_code == 409


def test_emails_are_unique_case_insensitively(gateway: RunningGateway) -> None:
    with gateway.client() as c:
        assert c.post("/api/v1/auth/register", json={"username": "em1", "password": PASSWORD,
                                                     "email": "Some.One@Example.com"}).status_code == 201
        r = c.post("/api/v1/auth/register", json={"username": "em2", "password": PASSWORD, "email": "some.one@EXAMPLE.COM"})
        assert r.status_code == 409 and _code(r) == "email_taken"
        assert c.post("/api/v1/auth/register", json={"username": "em3", "password": PASSWORD,
                                                     "email": "other@example.com"}).status_code == 201
    with gateway.client(gateway.admin_token()) as c:
        uid = next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == "em3")
        r = c.patch(f"/api/v1/users/{uid}", json={"email": "SOME.ONE@example.com"})
        assert r.status_code == 409 and _code(r) == "email_taken"


def test_migration_gives_existing_rows_keys_and_a_unique_index(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")  # the schema before this change, with case-variant duplicates in it
        with engine.begin() as conn:
            for name, email in (("bob", "Bob@Example.com"), ("Bob", "bob@example.com"), ("carol", None)):
                conn.execute(text("INSERT INTO users (username, email, password_hash, role, is_active, created_at) "
                                  "VALUES (:u, :e, 'x', 'user', true, CURRENT_TIMESTAMP)"), {"u": name, "e": email})
        upgrade(engine)
        with Session(engine) as db:
            rows = {u.username: u for u in db.exec(select(User))}
            assert rows["bob"].username_key == "bob" and rows["carol"].username_key == "carol"
            assert rows["Bob"].username_key == f"bob~{rows['Bob'].id}"  # the younger duplicate keeps a reachable key
            assert rows["bob"].email_key == "bob@example.com" and rows["Bob"].email_key is None
            assert all(u.token_version == 0 for u in rows.values())
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO users (username, username_key, password_hash, role, is_active, token_version, "
                              "created_at) VALUES ('BOB2', 'bob', 'x', 'user', true, 0, CURRENT_TIMESTAMP)"))
    finally:
        engine.dispose()


def test_nobody_can_take_a_deleted_accounts_name_and_block_the_deletion(gateway: RunningGateway) -> None:
    """Deleting user N renames it; a squatter who registered that name first used to turn the DELETE into a 500 and make
    user N impossible to delete."""
    gateway.create_user("victim")
    with gateway.client(gateway.admin_token()) as c:
        victim = next(u["id"] for u in c.get("/api/v1/users").json() if u["username"] == "victim")
    with gateway.client() as c:
        for name in (f"deleted-{victim}", f"Deleted-{victim}"):  # the old anonymised form is an ordinary name: allowed
            r = c.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD, "email": f"{name}@example.com"})
            assert r.status_code in (201, 409), r.text
        for name in (f"~deleted-{victim}", "~deleted-999"):  # the anonymised form is outside the alphabet of names
            r = c.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD, "email": "sq@example.com"})
            assert r.status_code == 422 and "username must be" in r.text, r.text
    with gateway.client(gateway.admin_token()) as c:
        assert c.post("/api/v1/users", json={"username": f"~deleted-{victim}", "password": PASSWORD}).status_code == 422
        r = c.delete(f"/api/v1/users/{victim}")
        assert r.status_code == 200, r.text
        assert c.get(f"/api/v1/users/{victim}").status_code == 404
        names = [u["username"] for u in c.get("/api/v1/users").json()]
        assert "victim" not in names and f"deleted-{victim}" in names  # the squatter's own account is untouched
    with Session(gateway.state.engine) as db:
        row = db.get(User, victim)
        assert row is not None and row.deleted_at is not None and not row.is_active
        assert row.username == row.username_key == f"~deleted-{victim}" and row.email is None
    with gateway.client() as c:  # the anonymised name logs nobody in, and answers like an unknown name
        for name in (f"~deleted-{victim}", "victim", "~deleted-999"):
            r = c.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
            assert r.status_code == 401 and _code(r) == "bad_credentials", (name, r.text)
        r = c.post("/api/v1/auth/verify-email", json={"username": f"~deleted-{victim}", "code": "123456"})
        assert r.status_code == 400 and _code(r) == "code_invalid"
