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
