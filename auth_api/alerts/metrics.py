"""``alerts_total{severity}`` computed from the ``alerts`` table at scrape time.

Alerts are created wherever rules are evaluated (the embedded ingester, the external ingester process, an app's own
call of evaluate_events), so no one process could count them all; the table can. Only one gateway worker (the first)
exports it, so a scrape merged over workers does not count an alert twice. Alerts are never deleted, so the value
only grows, as a counter must.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from auth_api.alerts.models import SEVERITIES, Alert

logger = logging.getLogger(__name__)
ALERTS = Alert.__table__  # type: ignore[attr-defined]
TTL_S = 1.0


class AlertsCollector(Collector):
    def __init__(self, engine: Engine):
        self.engine = engine
        self._counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        self._at = float("-inf")

    def counts(self) -> dict[str, int]:
        now = time.monotonic()
        if now - self._at > TTL_S:
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(sa.select(ALERTS.c.severity, sa.func.count()).group_by(ALERTS.c.severity)).all()
                self._counts = {**dict.fromkeys(SEVERITIES, 0), **{str(s): int(n) for s, n in rows}}
                self._at = now
            except Exception:  # the database away: the last known counts (a scrape must not fail)
                logger.warning("could not count alerts for /metrics", exc_info=True)
        return self._counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("alerts", "Alerts raised, by severity (counted from the alerts table at scrape time).",
                                     labels=["severity"])
        for severity, n in sorted(self.counts().items()):
            family.add_metric([severity], n)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())
