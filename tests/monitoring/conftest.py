"""Fixtures for the monitoring tests: promtool and prometheus from Debian's package (fail, never skip, when missing)."""

from __future__ import annotations

import pytest

from monitoring.launcher import PrometheusError, find_binary


@pytest.fixture(scope="session")
def promtool() -> str:
    try:
        return find_binary("promtool")
    except PrometheusError as exc:
        pytest.fail(exc.message, pytrace=False)


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    try:
        return find_binary("prometheus")
    except PrometheusError as exc:
        pytest.fail(exc.message, pytrace=False)
