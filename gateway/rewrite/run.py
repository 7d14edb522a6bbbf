"""Execute a rewritten statement on the locked-down engine, then post-check it.

Engine error texts can quote data values (a failed cast prints the value), so the
caller gets a stable code and a generic message; the engine's own text is kept in
``EngineError.detail`` for the audit trail only.

    >>> # table, report = execute(rewritten, mounts, EngineLimits(timeout_ms=5_000))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from gateway.errors import EngineError, ResourceExhausted, StatementTimeout
from gateway.rewrite.context import Rewritten
from gateway.rewrite.postcheck import postcheck
from sandbox.engine import DatasetMount, EngineLimits, deadline, open_engine

BATCH_ROWS = 8192
# Aggregate results are read whole so suppression can be counted; past this many raw
# rows the statement is refused rather than held in memory.
MAX_RAW_ROWS = 1_000_000


@dataclass(frozen=True)
class ExecutionReport:
    rows: int
    suppressed_groups: int
    truncated: bool
    elapsed_ms: float
    columns: tuple[str, ...]


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, limit: int) -> pa.Table:
    reader = con.execute(sql).to_arrow_reader(BATCH_ROWS)
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        if rows > limit:
            raise ResourceExhausted(
                f"the result has more than {limit} rows before suppression; "
                "group more coarsely or filter")
    return pa.Table.from_batches(batches, schema=reader.schema)


def fetch(
    rewritten: Rewritten,
    mounts: Sequence[DatasetMount],
    limits: EngineLimits,
) -> pa.Table:
    """Run ``rewritten.sql`` with only the datasets it uses attached; the raw result
    (hidden columns included, nothing suppressed yet)."""
    by_id = {m.dataset_id: m for m in mounts}
    missing = [d for d in rewritten.datasets if d not in by_id]
    if missing:
        raise EngineError(f"datasets not mounted: {', '.join(missing)}",
                          detail="missing mounts")
    con = open_engine([by_id[d] for d in rewritten.datasets], limits)
    try:
        with deadline(con, limits.timeout_ms) as fired:
            try:
                return _fetch(con, rewritten.sql, MAX_RAW_ROWS)
            except duckdb.Error as exc:
                if fired.is_set() or isinstance(exc, duckdb.InterruptException):
                    raise StatementTimeout(
                        f"the statement ran longer than timeout_ms={limits.timeout_ms} "
                        "and was stopped") from None
                if isinstance(exc, duckdb.OutOfMemoryException):
                    raise ResourceExhausted(
                        f"the statement needed more than memory_mb={limits.memory_mb}") from None
                raise EngineError("the statement failed while running; the details are "
                                  "in the audit trail", detail=f"{type(exc).__name__}: {exc}") \
                    from None
    finally:
        con.close()


def execute(
    rewritten: Rewritten,
    mounts: Sequence[DatasetMount],
    limits: EngineLimits,
) -> tuple[pa.Table, ExecutionReport]:
    """Run ``rewritten.sql`` (see ``fetch``), add the noise of a noisy scenario (no budget
    is charged here: that is the gateway's job), then post-check the result."""
    started = time.monotonic()
    table = fetch(rewritten, mounts, limits)
    if rewritten.noise is not None:
        from gateway.privacy.noise import apply_noise  # loads OpenDP: only when needed

        table, _ = apply_noise(table, rewritten.noise)
    released = postcheck(table, rewritten)
    elapsed = (time.monotonic() - started) * 1000
    return released.table, ExecutionReport(
        rows=released.table.num_rows,
        suppressed_groups=released.suppressed_groups,
        truncated=released.truncated,
        elapsed_ms=round(elapsed, 1),
        columns=tuple(released.table.column_names),
    )
