"""The locked-down DuckDB connection every statement runs on.

Measured in ../shared/SECURITY-NOTES.md (DuckDB 1.5.5 here): attach the encrypted,
read-only dataset files first, then switch off every way out — external access, the
local file system, extension autoload/autoinstall, Python replacement scans, the temp
directory — set resource limits, and lock the configuration last so no statement can
undo any of it. DuckDB 1.5.5 has no ``max_execution_time``: the timeout is enforced by
``interrupt()`` from a timer thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

SOURCE_TABLE = "data"


@dataclass(frozen=True)
class DatasetMount:
    """One published dataset version: an encrypted DuckDB file holding table ``data``."""

    dataset_id: str
    path: Path
    key: str | None  # DuckDB ENCRYPTION_KEY; None only for unencrypted test files


@dataclass(frozen=True)
class EngineLimits:
    memory_mb: int = 1024
    threads: int = 1
    timeout_ms: int = 30_000


class StatementTimeout(Exception):
    """The statement ran longer than ``timeout_ms`` and was interrupted."""


def catalog_name(dataset_id: str) -> str:
    """Name under which a dataset's file is attached; only the rewriter emits it."""
    return f"ds_{dataset_id}"


def source_table(dataset_id: str) -> str:
    """Fully qualified, quoted reference to a dataset's table in the engine."""
    return f'"{catalog_name(dataset_id)}"."main"."{SOURCE_TABLE}"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_engine(
    mounts: Sequence[DatasetMount], limits: EngineLimits, *, progress: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open an in-memory connection with the datasets attached read-only, then lock it.

    ``progress`` turns on DuckDB's progress tracking (nothing is printed) so that
    ``query_progress()`` from another thread reports a percentage; the sandbox agent
    uses it to report progress. It must be decided here: the lock forbids SET later.
    """
    con = duckdb.connect(
        ":memory:",
        config={
            "autoload_known_extensions": False,
            "autoinstall_known_extensions": False,
            "allow_community_extensions": False,
            "allow_unsigned_extensions": False,
        },
    )
    try:
        for mount in mounts:
            options = "READ_ONLY"
            if mount.key is not None:
                options += f", ENCRYPTION_KEY {_literal(mount.key)}"
            con.execute(
                f"ATTACH {_literal(str(mount.path))} AS \"{catalog_name(mount.dataset_id)}\" "
                f"({options})"
            )
        for statement in (
            "SET python_enable_replacements = false",
            "SET temp_directory = ''",
            f"SET memory_limit = '{int(limits.memory_mb)}MB'",
            f"SET threads = {int(limits.threads)}",
            "SET enable_external_access = false",
            # Common subexpression elimination hoists work out from under TRY(), where
            # aggregate mode puts everything that can fail (gateway/rewrite/make_total.py):
            # the error escapes, and some nested TRY() plans crash DuckDB 1.5.
            "SET disabled_optimizers = 'common_subexpressions'",
            "SET disabled_filesystems = 'LocalFileSystem'",
            "SET lock_configuration = true",
        ):
            if progress and statement == "SET lock_configuration = true":
                for setting in (
                    "SET enable_progress_bar = true",
                    "SET enable_progress_bar_print = false",
                    "SET progress_bar_time = 0",
                ):
                    con.execute(setting)
            con.execute(statement)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def deadline(con: duckdb.DuckDBPyConnection, timeout_ms: int) -> Iterator[threading.Event]:
    """Interrupt ``con`` if the block runs past ``timeout_ms``; sets the event if it did."""
    fired = threading.Event()

    def _interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(timeout_ms / 1000, _interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
