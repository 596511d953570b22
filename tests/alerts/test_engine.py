"""The evaluator without a gateway: combinable conditions, built-in rules (the apps' API), the cool-down guard under
concurrent evaluators on SQLite and PostgreSQL, and the SSRF policy at save time and at connect time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from auth_api.alerts.engine import ALERTS, ensure_builtin_rule, evaluate_events
from auth_api.alerts.metrics import AlertsCollector
from auth_api.alerts.models import AlertRule
from auth_api.alerts.rules import holds
from auth_api.alerts.webhooks import GuardedBackend, WebhookRefused, validate_url
from auth_api.core import db
from auth_api.core.errors import InvalidInput
from auth_api.models import utcnow
from tests.fixtures.db import fresh_database

RULES = AlertRule.__table__  # type: ignore[attr-defined]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


def _rule(conn: sa.Connection, owner: int, condition: dict[str, Any], *, model: str = "m", asset: str | None = None,
          cooldown_s: int = 0, scope: str = "own") -> int:
    now = utcnow()
    res = conn.execute(sa.insert(RULES).values(owner_id=owner, name=f"r{owner}", model=model, asset=asset, condition=condition,
                                               severity="warning", channels=["in_app"], cooldown_s=cooldown_s, scope=scope,
                                               enabled=True, created_at=now, updated_at=now))
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def _ev(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "user_id": 1, **kw}


def test_conditions_combine_with_and() -> None:
    cond = {"label_in": ["short", "overheat"], "probability_gt": 0.8}
    assert holds(cond, {"label": "short", "probability": 0.9})
    assert not holds(cond, {"label": "short", "probability": 0.8}), "strictly greater"
    assert not holds(cond, {"label": "healthy", "probability": 0.99})
    assert not holds(cond, {"label": "short"}), "a test on a missing field does not hold"
    assert holds({"label_not_in": ["healthy"]}, {"label": "short"}) and not holds({"label_not_in": ["healthy"]}, {"label": "healthy"})
    assert holds({"score_lt": -0.1, "value_gt": -1.0}, {"score": -0.5, "value": -0.5})
    assert not holds({"score_lt": -0.1}, {"score": 0.0}) and not holds({"value_gt": 3}, {"value": 3})
    assert not holds({"value_gt": 0}, {"value": True}), "a bool is no number"


def test_builtin_rules_cooldown_per_user_and_asset_and_owner_scope(engine: Engine) -> None:
    with engine.begin() as conn:
        rid = ensure_builtin_rule(conn, "battery.fault", "battery-fault", {"label_not_in": ["healthy"], "probability_gt": 0.8},
                                  "critical", ["in_app"], cooldown_s=300)
        assert ensure_builtin_rule(conn, "battery.fault", "battery-fault", {"label_not_in": ["healthy"], "probability_gt": 0.8},
                                   "critical", ["in_app"], cooldown_s=300) == rid, "idempotent"
        mine = _rule(conn, 7, {"label_in": ["a"], "value_gt": 1.0})
    fault = {"model": "battery-fault", "label": "short", "probability": 0.95, "source": "analysis:1"}
    with engine.begin() as conn:
        ids = evaluate_events(conn, [
            {**fault, "user_id": 1, "asset": "b1"}, {**fault, "user_id": 1, "asset": "b1"},  # same window: once
            {**fault, "user_id": 1, "asset": "b2"}, {**fault, "user_id": 2, "asset": "b1"},  # other asset, other user
            {**fault, "user_id": 3, "asset": "b9", "label": "healthy"}, {**fault, "user_id": 3, "probability": 0.5},
            _ev(label="a", value=2.0, user_id=7), _ev(label="a", value=0.5, user_id=7),  # AND: only the first
            _ev(label="a", value=2.0, user_id=8),  # not the owner's prediction
        ])
        rows = conn.execute(sa.select(ALERTS).where(ALERTS.c.id.in_(ids)).order_by(ALERTS.c.id)).all()
    assert [(r.rule_id, r.user_id, r.asset) for r in rows] == [(rid, 1, "b1"), (rid, 1, "b2"), (rid, 2, "b1"), (mine, 7, None)]
    assert all(r.severity == "critical" and r.model == "battery-fault" for r in rows[:3])
    # /metrics counts from the table: alerts written by any process (here: this one, no gateway) are in one scrape
    assert AlertsCollector(engine).counts() == {"info": 0, "warning": 1, "critical": 3}
    with engine.begin() as conn:  # later call, still inside the cool-down
        assert evaluate_events(conn, [{**fault, "user_id": 1, "asset": "b1"}]) == []
        ensure_builtin_rule(conn, "battery.fault", "battery-fault", {"label_not_in": ["healthy"]}, "warning", ["in_app"],
                            cooldown_s=0)  # the code changed: the rule follows it
        assert conn.execute(sa.select(RULES.c.severity, RULES.c.condition).where(RULES.c.id == rid)).one() == \
            ("warning", {"label_not_in": ["healthy"]})
        assert len(evaluate_events(conn, [{**fault, "user_id": 1, "asset": "b1"}])) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_evaluators_fire_once(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Eight evaluators (think: two ingesters, apps) see the same event at once: one alert, whatever the interleaving."""
    if backend == "postgresql":
        request.getfixturevalue("pg_available")
    with fresh_database(backend, tmp_path) as url:
        eng = db.make_engine(url)
        db.upgrade(eng)
        with eng.begin() as conn:
            _rule(conn, 5, {"label_in": ["x"]}, cooldown_s=600)
        barrier = threading.Barrier(8)
        fired: list[int] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait()
                with eng.begin() as conn:
                    fired.extend(evaluate_events(conn, [_ev(label="x", user_id=5, asset="p")]))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with eng.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(ALERTS)).scalar()
        eng.dispose()
    assert not errors, errors
    assert len(fired) == 1 and n == 1


@pytest.mark.parametrize(("url", "allow", "why"), [
    ("http://127.0.0.1:9/x", False, "loopback"),
    ("http://localhost/x", False, "loopback"),
    ("http://10.1.2.3/x", False, "private"),
    ("http://[::ffff:127.0.0.1]/x", False, "loopback"),
    ("http://169.254.169.254/latest/meta-data/", True, "link-local"),
    ("http://[fe80::1]/x", True, "link-local"),
    ("http://224.0.0.1/x", True, "multicast"),
    ("http://0.0.0.0/x", True, "unspecified"),
    ("file:///etc/passwd", True, "scheme"),
    ("ftp://example.org/x", True, "scheme"),
    ("http:///nohost", True, "no host"),
])
def test_ssrf_policy_on_save(url: str, allow: bool, why: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_url(url, allow_private=allow)
    assert exc.value.details["field"] == "webhook_url" and why in exc.value.message, exc.value.message


def test_loopback_passes_only_with_the_setting_and_the_connect_rechecks() -> None:
    validate_url("http://127.0.0.1:9/x", allow_private=True)

    async def connect(allow: bool) -> None:
        stream = await GuardedBackend(allow).connect_tcp("localhost", 9, timeout=2)
        await stream.aclose()

    with pytest.raises(WebhookRefused, match="loopback"):  # at delivery: refused before any connection is made
        asyncio.run(connect(False))
    with pytest.raises(httpcore.ConnectError):  # allowed: the connection is attempted (nothing listens on the discard port)
        asyncio.run(connect(True))


def test_ingester_hook_reads_history_rows_refreshes_its_cache_and_never_blocks_history(engine: Engine) -> None:
    from auth_api.alerts.engine import AlertHook

    hook = AlertHook()

    def row(label: str, user: int = 4, status: int = 200) -> dict[str, Any]:
        return {"model": "iris-logreg", "version": "1", "output_label": label, "output_confidence": 0.97, "output_value": None,
                "user_id": user, "prediction_id": None, "protocol": "ws", "status": status}

    with engine.begin() as conn:
        hook(conn, [row("setosa")])  # no rule yet (and the cache is built)
        _rule(conn, 4, {"label_in": ["setosa"], "probability_gt": 0.9}, model="iris-logreg")
        hook(conn, [row("setosa"), row("setosa", status=500), row("virginica"), row("setosa", user=9)])
        (alert,) = conn.execute(sa.select(ALERTS)).all()
        assert (alert.user_id, alert.label, alert.source, alert.version) == (4, "setosa", "ws", "1")
        # a rule the evaluator chokes on (bad data written behind the API's back) is skipped; the others still fire
        bad = _rule(conn, 4, {"probability_gt": "high"}, model="iris-logreg")
        hook(conn, [row("setosa")])
        conn.execute(sa.update(RULES).where(RULES.c.id == bad).values(enabled=False, updated_at=utcnow()))
    with engine.connect() as conn:  # the outer transaction committed
        assert conn.execute(sa.select(sa.func.count()).select_from(ALERTS)).scalar() == 2
        assert conn.execute(sa.select(RULES.c.enabled).where(RULES.c.id == bad)).scalar() is False
    from sqlmodel import Session

    from auth_api.alerts.store import purge_user

    with Session(engine) as s:
        purge_user(s, 4)
        s.commit()
    with engine.connect() as conn:  # what crud.delete_user(purge=True) should call: nothing of user 4 is left
        assert conn.execute(sa.select(sa.func.count()).select_from(ALERTS)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(RULES)).scalar() == 0
