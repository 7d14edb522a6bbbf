"""Deployment fixtures: a real PostgreSQL server per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pg_support import TempPostgres, postgres_missing  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    server = TempPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(postgres: TempPostgres) -> TempPostgres:
    """The session's server with an empty schema."""
    postgres.reset()
    return postgres
