"""Engine and sessions for the metadata store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from gateway.store.state_cache import StateCache

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


@dataclass
class Store:
    engine: Engine
    sessions: sessionmaker[Session]
    # Shared by every Store of one database in this process, so a write through any of
    # them (a CLI command in the same process, a test's own store) invalidates it.
    cache: StateCache = field(default_factory=StateCache)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        with self.sessions() as session, session.begin():
            yield session


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; synchronous=NORMAL in WAL mode is
    # durable across process crashes (only an OS crash may lose the last commits).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # uvicorn workers and gateway containers start at once: one migrates while
            # the others wait here (lock held to commit), then find the schema at head.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7250309)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_store(url: str, *, migrate: bool = True) -> Store:
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    store = Store(engine, sessionmaker(engine, expire_on_commit=False),
                  _CACHES.setdefault(engine.url.render_as_string(), StateCache()))

    @event.listens_for(store.sessions, "after_flush")
    def _state_written(session: Session, _context: Any) -> None:
        # Job rows are written on every query and are not cached state.
        if any(getattr(o, "__tablename__", "") not in HOT_TABLES
               for o in (*session.new, *session.dirty, *session.deleted)):
            store.cache.invalidate()

    return store


_CACHES: dict[str, StateCache] = {}
# Tables written on every query; writes to any other table make the state cache stale.
HOT_TABLES = frozenset({"jobs"})


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a refused or dropped database connection.

    SQLAlchemy raises ``OperationalError`` for a refused connection and marks a dropped
    one ``connection_invalidated``; callers such as the audit log wrap either. Both mean
    "retry shortly" (a restart or failover), not "the request was wrong".
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OperationalError) or (
                isinstance(cause, DBAPIError) and cause.connection_invalidated):
            return True
        cause = cause.__cause__
    return False
