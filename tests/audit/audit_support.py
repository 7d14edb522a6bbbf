"""Helpers of the audit tests (imported by conftest and test modules by this name)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit import (
    Action,
    Actor,
    AuditEventIn,
    AuditLog,
    DatasetRef,
    Details,
    Subjects,
    VerifyReport,
    verify_log,
)
from gateway.settings import Settings
from gateway.store import Store

EVERY = 10  # checkpoint interval (events) of the test installation


def query_event(n: int, user: str = "alice", agreement: str = "agr-1",
                dataset: str = "flights") -> AuditEventIn:
    return AuditEventIn(
        actor=Actor(user=user, role="researcher", organisation="Fudan"),
        action=Action.query_executed,
        subjects=Subjects(agreement=agreement, datasets=(DatasetRef(id=dataset, version=2),),
                          job=f"job-{n}"),
        details=Details(sql=f"SELECT count(*) FROM {dataset} WHERE n = {n}",
                        rewritten_sql=f"SELECT count(*) FROM v_{dataset} WHERE n = {n}",
                        rows_returned=1, result_digest=f"{n:064x}", duration_ms=n % 50),
    )


@dataclass
class Installation:
    settings: Settings
    store: Store
    log: AuditLog
    public_key: Ed25519PublicKey

    @property
    def db_path(self) -> Path:
        return Path(self.settings.db_url.removeprefix("sqlite:///"))

    @property
    def checkpoints(self) -> Path:
        return self.settings.checkpoints_path

    def fill(self, n: int, **kwargs: str) -> None:
        for i in range(n):
            self.log.append(query_event(i, **kwargs))

    def verify(self) -> VerifyReport:
        return verify_log(self.store.engine, self.checkpoints, self.public_key,
                          max_unsealed=EVERY)

    def sql(self) -> Raw:
        """A raw autocommit connection, as a tamperer with database access would use."""
        if self.settings.db_url.startswith("sqlite"):
            return sqlite3.connect(self.db_path, isolation_level=None)
        import psycopg

        url = self.settings.db_url.replace("postgresql+psycopg://", "postgresql://")
        return _QmarkToPyformat(psycopg.connect(url, autocommit=True))


class Raw(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...


class _QmarkToPyformat:
    """Lets the tampering SQL, written with ``?``, run through psycopg too."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)


