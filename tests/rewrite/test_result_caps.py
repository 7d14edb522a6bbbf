"""Caps on what a result returns: ``max_rows`` and ``result_cells``, nested values counted
element by element (issue "Enforcement by meaning").

``list(t)`` packs every row of a table into one LIST<STRUCT> value: one result row. The
post-check counts the cells inside lists, structs and maps against ``result_cells``, cuts
a result to the rows that fit, withholds it when not even the first row fits, and in
aggregate mode refuses nested columns outright. The streaming path of the job service
keeps the same caps across batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from gateway.errors import QueryRejected, ResultWithheld
from gateway.jobs.service import JobService
from gateway.policy.models import Mode
from gateway.rewrite import RewriteContext, Rewritten, rewrite
from gateway.rewrite.postcheck import Allowance, postcheck, row_cells
from gateway.rewrite.run import execute, fetch
from sandbox.engine import DatasetMount, EngineLimits

Ctx = Callable[[str], RewriteContext]
LIMITS = EngineLimits(timeout_ms=30_000)
RECORDS = "flights-records"  # max_rows 5000, result_cells 100000


def _capped(ctx: RewriteContext, **limits: int) -> RewriteContext:
    scenario = ctx.scenario.model_copy(
        update={"limits": ctx.scenario.limits.model_copy(update=limits)})
    return RewriteContext(scenario, ctx.datasets, salt=ctx.salt)


def _run(ctx: RewriteContext, sql: str, mounts: list[DatasetMount]) -> tuple[pa.Table, bool]:
    table, report = execute(rewrite(sql, ctx), mounts, LIMITS)
    assert int(row_cells(table).sum()) <= ctx.scenario.limits.result_cells
    assert table.num_rows <= ctx.scenario.limits.max_rows
    return table, report.truncated


def _rewritten(mode: Mode, **kw: object) -> Rewritten:
    base = Rewritten(sql="", display_sql="", explanation=[], datasets=(), mode=mode,
                     k=10, max_rows=100, result_cells=20, hidden_columns=("__dsb_n",))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


# -- through the rewriter and the engine ------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT list(f) FROM flights AS f",
    "SELECT array_agg(dep_delay) FROM flights",
    "SELECT carrier, array_agg(dep_delay) AS d FROM flights GROUP BY carrier",
    "SELECT string_agg(tailnum, ',') AS t FROM flights",
    "SELECT list(DISTINCT tailnum) AS t FROM flights",
    "SELECT histogram(carrier) AS h FROM flights",
])
def test_packing_aggregates_are_refused(make_ctx: Ctx, sql: str) -> None:
    # One value holding many rows escapes max_rows, and as text result_cells too.
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(RECORDS))
    assert info.value.code == "row_level_aggregate"


def test_lists_per_row_are_cut_to_the_rows_that_fit(
        make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    sql = "SELECT carrier, [dep_delay, arr_delay, distance, month] AS d FROM flights"
    ctx = _capped(make_ctx(RECORDS), result_cells=10_001)
    raw = fetch(rewrite(sql, ctx), demo_mounts, LIMITS)
    table, truncated = _run(ctx, sql, demo_mounts)
    assert truncated and 0 < table.num_rows < raw.num_rows
    # the largest prefix: one row more would not fit
    cells = row_cells(raw)
    assert cells[:table.num_rows + 1].sum() > 10_001 >= cells[:table.num_rows].sum()


def test_struct_of_many_columns_counts_each_field(make_ctx: Ctx,
                                                  demo_mounts: list[DatasetMount]) -> None:
    ctx = _capped(make_ctx(RECORDS), result_cells=20_000)
    table, truncated = _run(ctx, "SELECT struct_pack(year, month, day, dep_delay, carrier, "
                            "tailnum, origin, dest, distance, hour) AS s FROM flights",
                            demo_mounts)
    assert truncated and table.num_rows == 2_000  # 10 cells a row


def test_map_counts_keys_and_values() -> None:
    # No allowed function builds a MAP from rows any more; the counting stays for
    # whatever returns one.
    table = pa.table({"h": pa.array([[("a", 1), ("b", 2)]], pa.map_(pa.string(), pa.int64()))})
    assert int(row_cells(table)[0]) == 4  # two keys, two values


def test_nested_lists_count_every_leaf(make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    ctx = _capped(make_ctx(RECORDS), result_cells=3_000)
    table, truncated = _run(ctx, "SELECT [[dep_delay, dep_delay], [dep_delay]] AS l "
                            "FROM flights", demo_mounts)
    assert truncated and table.num_rows == 1_000  # 3 cells a row


def test_unnest_back_is_refused_or_capped(make_ctx: Ctx,
                                          demo_mounts: list[DatasetMount]) -> None:
    for sql in ("SELECT unnest(l) FROM (SELECT list(f) AS l FROM flights AS f)",
                "SELECT unnest(l, recursive := true) FROM (SELECT list(f) AS l "
                "FROM flights AS f)",
                "SELECT l[1] FROM (SELECT list(f) AS l FROM flights AS f)"):
        try:
            table, _ = _run(make_ctx(RECORDS), sql, demo_mounts)
        except QueryRejected:
            continue
        assert table.num_rows <= 5_000


def test_records_within_the_caps_are_released_whole(
        make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    table, truncated = _run(make_ctx("residents-sandbox"),
                            "SELECT r FROM residents AS r LIMIT 100", demo_mounts)
    assert table.num_rows == 100 and not truncated


def test_aggregate_mode_refuses_nested_outputs(demo_mounts: list[DatasetMount]) -> None:
    """Should a nested value get past the rewriter, the post-check refuses it."""
    for value in ("[1, 2]", "{'a': 1}", "MAP {'a': 1}", "union_value(k := 1)", "[[1]]"):
        sneaked = _rewritten(Mode.aggregate, sql=f'SELECT {value} AS v, 50 AS "__dsb_n"')
        with pytest.raises(ResultWithheld, match="nested values"):
            execute(sneaked, demo_mounts, LIMITS)


def test_aggregate_mode_rewriter_refuses_nested_aggregates(make_ctx: Ctx) -> None:
    for sql in ("SELECT carrier, list(dep_delay) FROM flights GROUP BY carrier",
                "SELECT carrier, list(DISTINCT origin) FROM flights GROUP BY carrier",
                "SELECT carrier, histogram(origin) FROM flights GROUP BY carrier",
                "SELECT list(f) FROM flights AS f",
                "SELECT origin, [count(*)] FROM flights GROUP BY origin"):
        with pytest.raises(QueryRejected):
            rewrite(sql, make_ctx("flights-aggregate"))


def test_cells_are_capped_in_aggregate_mode(make_ctx: Ctx,
                                            demo_mounts: list[DatasetMount]) -> None:
    ctx = _capped(make_ctx("flights-aggregate"), result_cells=10)
    table, truncated = _run(ctx, "SELECT carrier, count(*) FROM flights GROUP BY carrier",
                            demo_mounts)
    assert truncated and table.num_rows == 5


# -- the post-check itself ---------------------------------------------------------------

def _four_cells_a_row(rows: int = 5) -> pa.Table:
    return pa.table({"l": [[1, 2, 3]] * rows, "x": list(range(rows))})


def test_the_cap_exactly_at_the_boundary() -> None:
    table = _four_cells_a_row()
    released = postcheck(table, _rewritten(Mode.records, result_cells=20))
    assert released.table.num_rows == 5 and not released.truncated
    released = postcheck(table, _rewritten(Mode.records, result_cells=19))
    assert released.table.num_rows == 4 and released.truncated
    released = postcheck(table, _rewritten(Mode.records, result_cells=4))
    assert released.table.num_rows == 1 and released.truncated
    with pytest.raises(ResultWithheld, match="first row alone holds 4 cells"):
        postcheck(table, _rewritten(Mode.records, result_cells=3))


def test_cell_counting() -> None:
    table = pa.table({
        "m": pa.array([[("a", [1, 2])], None, []],
                      type=pa.map_(pa.string(), pa.list_(pa.int64()))),
        "s": [{"x": 1, "y": [1, 2, 3]}, None, {"x": None, "y": []}],
        "f": pa.array([[1, 2], [3, 4], None], type=pa.list_(pa.int64(), 2)),
    })
    # map: key + 2 values; struct: 1 + 3; fixed list: 2 | NULLs: 1 each | empties: 1
    assert row_cells(table).tolist() == [9, 4, 4]
    assert row_cells(table.slice(1)).tolist() == [4, 4]
    chunked = pa.table({"l": pa.chunked_array([[[1] * 5], [[2] * 3, None]])})
    assert row_cells(chunked).tolist() == [5, 3, 1]


def test_flat_results_are_cut_by_width() -> None:
    table = pa.table({"a": list(range(10)), "b": list(range(10))})
    released = postcheck(table, _rewritten(Mode.records, result_cells=7))
    assert released.table.num_rows == 3 and released.truncated


def test_max_rows_and_cells_both_hold() -> None:
    rewritten = _rewritten(Mode.records, max_rows=2, result_cells=1_000)
    released = postcheck(_four_cells_a_row(), rewritten)
    assert released.table.num_rows == 2 and released.truncated


# -- the streaming path of the job service ----------------------------------------------

class _Stream:
    """What ``runtime.execute`` returns, as far as the job service reads it."""

    def __init__(self, batches: list[pa.RecordBatch]) -> None:
        self.schema = batches[0].schema
        self._batches = iter(batches)
        self.read = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        batch = next(self._batches)
        self.read += 1
        return batch


def _batches(count: int, rows: int) -> list[pa.RecordBatch]:
    return [pa.RecordBatch.from_pydict({"l": [[1, 2, 3]] * rows, "x": [i] * rows})
            for i in range(count)]


def test_streaming_keeps_the_cell_cap_across_batches() -> None:
    stream = _Stream(_batches(10, 3))  # 12 cells a batch
    rewritten = _rewritten(Mode.records, result_cells=30)
    batches, schema = JobService._checked_stream(stream, rewritten)
    released = pa.Table.from_batches(list(batches), schema=schema)
    assert released.num_rows == 7  # 28 cells; an 8th row would make 32
    assert int(row_cells(released).sum()) <= 30
    assert stream.read == 3  # stopped reading once the cap was reached


def test_streaming_withholds_when_the_first_row_does_not_fit() -> None:
    stream = _Stream([pa.RecordBatch.from_pydict({"l": [list(range(50))]})])
    with pytest.raises(ResultWithheld):
        JobService._checked_stream(stream, _rewritten(Mode.records, result_cells=30))


def test_streaming_keeps_the_row_cap_across_batches() -> None:
    stream = _Stream(_batches(10, 3))
    rewritten = _rewritten(Mode.records, max_rows=5, result_cells=1_000)
    batches, schema = JobService._checked_stream(stream, rewritten)
    assert pa.Table.from_batches(list(batches), schema=schema).num_rows == 5


def test_allowance_spans_calls() -> None:
    rewritten = _rewritten(Mode.records, result_cells=10)
    allowance = Allowance.of(rewritten)
    first = postcheck(_four_cells_a_row(2), rewritten, allowance)
    second = postcheck(_four_cells_a_row(2), rewritten, allowance)
    assert (first.table.num_rows, second.table.num_rows) == (2, 0)
    assert second.truncated and allowance.spent is False and allowance.cells == 2
