"""A real installation on disk: SQLite file, platform key pair, checkpoint file.

The ``AuditLog`` is built the way the gateway builds it (``open_audit_log``), with a
small checkpoint interval so that a few dozen events span several checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from audit_support import EVERY, Installation

from gateway.audit.config import AuditSettings, open_audit_log
from gateway.policy.signing import generate_keypair, load_public_key
from gateway.settings import Settings
from gateway.store import open_store
from tests.pg_support import reset_schema

# PostgreSQL runs only where one is offered (loopback), e.g.
# DSB_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:55432/dsb_audit
POSTGRES_URL = os.environ.get("DSB_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("set DSB_TEST_POSTGRES_URL to also run against PostgreSQL")
    return str(request.param)


@pytest.fixture
def install(home: Settings, backend: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Installation]:
    monkeypatch.setenv("DSB_AUDIT_CHECKPOINT_EVERY_EVENTS", str(EVERY))
    monkeypatch.setenv("DSB_AUDIT_CHECKPOINT_EVERY_S", "3600")
    if backend == "postgresql":
        assert POSTGRES_URL is not None
        reset_schema(POSTGRES_URL)
        monkeypatch.setenv("DSB_DATABASE_URL", POSTGRES_URL)
        home = Settings()
    key_path = home.platform_key_path
    generate_keypair(key_path, key_path.with_suffix(".pub"))
    store = open_store(home.db_url)
    log = open_audit_log(home, store, AuditSettings())
    yield Installation(home, store, log, load_public_key(key_path.with_suffix(".pub")))
    log.close()
    store.engine.dispose()

