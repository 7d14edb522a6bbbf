"""Serialised appenders: one linear chain however many processes append.

``Backend.locked()`` yields a ``Tx`` while holding the only right to extend the chain
and commits when the block ends, or rolls back on any exception.

- SQLite: an ``flock`` on ``<db>-auditlock`` orders appenders (it wakes the next one
  at once, where SQLite's own busy handler sleeps in steps of milliseconds), then
  ``BEGIN IMMEDIATE`` takes the database write lock so other writers of the same file
  wait too. The hot path runs on a dedicated ``sqlite3`` connection with cached
  statements: SQLAlchemy's per-statement overhead would halve the throughput.
- PostgreSQL (any other dialect): ``SELECT ... FOR UPDATE`` on the ``audit_head`` row,
  held until commit.

Either way the new event and the moved head commit in one transaction: a process killed
mid-append leaves the previous head, never half an event.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text

from gateway.audit.models import EVENT_COLUMNS
from gateway.errors import AuditError

Row = tuple[Any, ...]

_COLUMNS = ", ".join(EVENT_COLUMNS)
SELECT_EVENTS = f"SELECT {_COLUMNS} FROM audit_events"
_INSERT_QMARK = f"INSERT INTO audit_events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_NAMED = (f"INSERT INTO audit_events ({_COLUMNS}) VALUES (:seq, :ts, :action, :actor_user,"
                 " :actor_role, :actor_org, :agreement_id, :job_id, :datasets, :details,"
                 " :prev_hash, :hash)")


class Tx(Protocol):
    def head(self) -> tuple[int, str]: ...
    def events(self, first: int, last: int) -> list[Row]: ...
    def insert(self, row: Row) -> None: ...
    def set_head(self, seq: int, hash_: str) -> None: ...
    def make_durable(self) -> None:
        """Make every event committed so far survive an OS crash (before sealing it)."""


class Backend(Protocol):
    def locked(self) -> AbstractContextManager[Tx]: ...
    def close(self) -> None: ...


def backend_for(engine: Engine) -> Backend:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            raise AuditError("the audit log needs an on-disk SQLite database, not "
                             f"{engine.url.render_as_string(hide_password=True)!r}")
        return SqliteBackend(Path(database))
    return SqlBackend(engine)


class SqliteBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1

    def _open(self) -> sqlite3.Connection:
        # After a fork the inherited connection and lock descriptor belong to the parent:
        # sharing the open file description would make both processes hold one flock.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False, cached_statements=32)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._lock_fd = os.open(f"{self.path}-auditlock", os.O_RDWR | os.O_CREAT, 0o600)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def locked(self) -> Iterator[Tx]:
        with self._thread_lock:
            try:
                conn = self._open()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            except (sqlite3.Error, OSError) as exc:
                raise AuditError(f"cannot open the audit log at {self.path}: {exc}") from exc
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTx(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"audit write failed: {exc}") from exc
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
            os.close(self._lock_fd)
        self._conn = None


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._changes_at_start = conn.total_changes

    def head(self) -> tuple[int, str]:
        row = self._conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if row is None:
            raise AuditError("audit_head has no row; run `dsb db upgrade`")
        return int(row[0]), str(row[1])

    def events(self, first: int, last: int) -> list[Row]:
        return self._conn.execute(f"{SELECT_EVENTS} WHERE seq BETWEEN ? AND ? ORDER BY seq",
                                  (first, last)).fetchall()

    def insert(self, row: Row) -> None:
        self._conn.execute(_INSERT_QMARK, row)

    def set_head(self, seq: int, hash_: str) -> None:
        self._conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, hash_))

    def make_durable(self) -> None:
        # WAL with synchronous=NORMAL does not fsync at commit. A commit made with
        # synchronous=FULL fsyncs the WAL, and with it every earlier commit still in the
        # WAL (those already copied into the main file were synced by SQLite's own
        # checkpoint). So: end this transaction (it has only read so far), commit one
        # synced write, and carry on in a new transaction. The flock is held all
        # along, so no other appender runs in between. (Opening and closing the files to
        # fsync them ourselves would drop SQLite's POSIX locks: a known way to corrupt.)
        if self._conn.total_changes != self._changes_at_start:
            raise AssertionError("make_durable() must run before the transaction writes")
        conn = self._conn
        conn.execute("COMMIT")
        conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Two updates that cancel out: SQLite skips writing a row set to itself, and
            # a commit that writes nothing syncs nothing (checked with strace).
            conn.execute("UPDATE audit_head SET seq = seq + 1 WHERE id = 1")
            conn.execute("UPDATE audit_head SET seq = seq - 1 WHERE id = 1")
            conn.execute("COMMIT")
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")


class SqlBackend:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def locked(self) -> Iterator[Tx]:
        try:
            with self.engine.begin() as conn:
                yield _SqlTx(conn)
        except AuditError:
            raise
        except Exception as exc:
            if exc.__class__.__module__.startswith("sqlalchemy"):
                raise AuditError(f"audit write failed: {exc}") from exc
            raise

    def close(self) -> None:
        pass


class _SqlTx:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def head(self) -> tuple[int, str]:
        # The row lock is what serialises appenders across processes and hosts.
        row = self._conn.execute(
            text("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")).first()
        if row is None:
            raise AuditError("audit_head has no row; run `dsb db upgrade`")
        return int(row[0]), str(row[1])

    def events(self, first: int, last: int) -> list[Row]:
        result = self._conn.execute(
            text(f"{SELECT_EVENTS} WHERE seq BETWEEN :a AND :b ORDER BY seq"),
            {"a": first, "b": last})
        return [tuple(r) for r in result]

    def insert(self, row: Row) -> None:
        self._conn.execute(text(_INSERT_NAMED), dict(zip(EVENT_COLUMNS, row, strict=True)))

    def set_head(self, seq: int, hash_: str) -> None:
        self._conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
                           {"s": seq, "h": hash_})

    def make_durable(self) -> None:
        pass  # a committed PostgreSQL transaction is durable (synchronous_commit = on)
