"""Shared fixtures live in tests/fixtures/ (one module per component) and are loaded here."""

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.triton", "tests.fixtures.db", "tests.fixtures.bento", "tests.fixtures.gateway",
                  "tests.fixtures.smtp", "tests.fixtures.s3"]
