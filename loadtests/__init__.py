"""Locust scenarios (one module per target) and the harness behind `mlstack bench`."""
