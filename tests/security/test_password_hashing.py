"""Password hashing is bounded per host: each argon2 hash runs on one thread (parallelism=1), hashes stored with the
former parallelism=4 are upgraded at login, and every gateway sharing a ``var_dir`` takes the same hashing slot."""

from __future__ import annotations

import fcntl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import argon2
from sqlmodel import Session, select

from auth_api.core import security
from auth_api.models import User
from tests.fixtures.gateway import ADMIN_PASSWORD, PASSWORD, RunningGateway, gateway_settings, run_gateway

# What older versions stored: argon2-cffi's defaults, whose parallelism=4 ran four threads per hash.
OLD_HASHER = argon2.PasswordHasher()

# Another process holding the host's only hashing slot until its stdin closes.
HOLD_SLOT = """
import fcntl, sys
f = open(sys.argv[1], "r+")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def _stored_hash(gw: RunningGateway, username: str) -> str:
    with Session(gw.state.engine) as db:
        h = db.exec(select(User.password_hash).where(User.username == username)).one()
        assert h is not None
        return h


def _set_hash(gw: RunningGateway, username: str, password_hash: str) -> None:
    with Session(gw.state.engine) as db:
        user = db.exec(select(User).where(User.username == username)).one()
        user.password_hash = password_hash
        db.add(user)
        db.commit()


def test_hashes_the_gateway_makes_use_one_thread(gateway: RunningGateway) -> None:
    token = gateway.create_user("onethread")  # hashed by the admin route
    with gateway.client(token) as c:
        r = c.post("/api/v1/auth/password/change", json={"old_password": PASSWORD, "new_password": "a second passphrase"})
        assert r.status_code == 200, r.text
    with gateway.client() as c:
        r = c.post("/api/v1/auth/register", json={"username": "selfmade", "password": PASSWORD, "email": "s@example.org"})
        assert r.status_code == 201, r.text
    for name in ("admin", "onethread", "selfmade"):  # bootstrap, password change, registration
        params = argon2.extract_parameters(_stored_hash(gateway, name))
        assert (params.type, params.parallelism) == (argon2.Type.ID, 1), (name, params)
        assert params.time_cost >= 3 and params.memory_cost >= 64 * 1024, (name, params)  # as strong as before
    assert argon2.extract_parameters(security._DUMMY_HASH).parallelism == 1  # what unknown usernames are verified against


def test_an_old_four_thread_hash_still_logs_in_and_is_upgraded(gateway: RunningGateway) -> None:
    token = gateway.create_user("veteran")
    _set_hash(gateway, "veteran", OLD_HASHER.hash(PASSWORD))
    assert argon2.extract_parameters(_stored_hash(gateway, "veteran")).parallelism == 4
    with gateway.client() as c:
        wrong = c.post("/api/v1/auth/login", json={"username": "veteran", "password": "not the password"})
        assert wrong.status_code == 401
        assert argon2.extract_parameters(_stored_hash(gateway, "veteran")).parallelism == 4  # only a proven password
        assert c.post("/api/v1/auth/login", json={"username": "veteran", "password": PASSWORD}).status_code == 200
    upgraded = _stored_hash(gateway, "veteran")
    assert argon2.extract_parameters(upgraded).parallelism == 1 and security.verify_password(PASSWORD, upgraded)
    with gateway.client(token) as c:  # the password did not change: sessions go on
        assert c.get("/api/v1/auth/me").status_code == 200
    assert gateway.login("veteran", PASSWORD)
    assert _stored_hash(gateway, "veteran") == upgraded  # upgraded once, not at every login


def test_no_gateway_on_the_host_hashes_while_another_process_holds_the_slot(tmp_path: Path, db_url: str) -> None:
    """Two gateways on one var_dir (as the worker processes of one host are) and a third process: while that process
    holds the hashing slot, a login to either gateway waits; each answers only after the slot is released."""
    settings = gateway_settings(tmp_path, db_url)
    with run_gateway(settings) as gw1, run_gateway(settings) as gw2:
        slot = settings.var_dir / "password-hashing-0.lock"
        assert stat.S_IMODE(slot.stat().st_mode) == 0o600
        assert [p.name for p in settings.var_dir.glob("password-hashing-*.lock")] == [slot.name]  # one slot by default
        holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(slot)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        events: list[str] = []
        lock = threading.Lock()
        statuses: dict[str, int] = {}

        def login(name: str, gw: RunningGateway) -> None:
            with gw.client() as c:
                r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            with lock:
                events.append(f"{name} answered")
                statuses[name] = r.status_code

        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            threads = [threading.Thread(target=login, args=(n, g)) for n, g in (("gw1", gw1), ("gw2", gw2))]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            # Both logins reached their gateway's hashing thread and found the slot taken by the other process.
            while not all(g.state.hashing.slots is not None and g.state.hashing.slots.waiting == 1 for g in (gw1, gw2)):
                assert not events, events  # nobody may hash (and answer) while the slot is held elsewhere
                assert time.monotonic() < deadline, "the logins never reached the hashing slot"
                time.sleep(0.02)
            with open(slot) as probe:  # and the slot really is held: not even a non-blocking try gets it
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    raise AssertionError("the hashing slot was free while another process held it")
                except BlockingIOError:
                    pass
            with lock:
                assert not events, events
                events.append("released")
            assert holder.stdin is not None
            holder.stdin.close()  # the holder exits; the kernel releases its lock
            assert holder.wait(timeout=30) == 0
            for t in threads:
                t.join(timeout=60)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        assert events[0] == "released" and sorted(events[1:]) == ["gw1 answered", "gw2 answered"], events
        assert statuses == {"gw1": 200, "gw2": 200}
