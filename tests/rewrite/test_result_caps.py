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
from gateway.rewrite.run import execute
from sandbox.engine import DatasetMount, EngineLimits, source_table

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


# -- the post-check on the engine's own nested results ---------------------------------
# The rewriter refuses most packing aggregates outright (``row_level_aggregate``); these
# statements go straight to the engine's table so the post-check is tested on its own, as
# the defence that holds should a rule let one through.

FLIGHTS = source_table("flights")


def _direct(sql: str, mounts: list[DatasetMount], mode: Mode = Mode.records,
            **caps: int) -> tuple[pa.Table, bool]:
    limits = {"max_rows": 5_000, "result_cells": 100_000, **caps}
    rewritten = _rewritten(mode, sql=sql.format(flights=FLIGHTS), datasets=("flights",),
                           **limits)
    table, report = execute(rewritten, mounts, LIMITS)
    assert int(row_cells(table).sum()) <= limits["result_cells"]
    assert table.num_rows <= limits["max_rows"]
    return table, report.truncated


def test_list_of_whole_rows_is_withheld(demo_mounts: list[DatasetMount]) -> None:
    with pytest.raises(ResultWithheld, match="result_cells") as info:
        _direct("SELECT list(f) FROM {flights} AS f", demo_mounts)
    assert info.value.code == "postcheck_failed"


def test_array_agg_of_a_column_is_withheld(demo_mounts: list[DatasetMount]) -> None:
    # 336,776 delays in one value: more than 100,000 cells.
    with pytest.raises(ResultWithheld, match="first row alone holds 336776 cells"):
        _direct("SELECT array_agg(dep_delay) FROM {flights}", demo_mounts)


def test_array_agg_per_group_is_cut_to_the_rows_that_fit(
        demo_mounts: list[DatasetMount]) -> None:
    sql = "SELECT carrier, array_agg(dep_delay) AS d FROM {flights} GROUP BY carrier " \
          "ORDER BY carrier"
    # max_rows out of the way: a list of n values also counts as n rows (see below).
    raw, _ = _direct(sql, demo_mounts, result_cells=10**9, max_rows=10**9)
    table, truncated = _direct(sql, demo_mounts, result_cells=100_000, max_rows=10**9)
    assert truncated and 0 < table.num_rows < raw.num_rows
    cells = row_cells(raw)  # the largest prefix: one row more would not fit
    assert cells[:table.num_rows + 1].sum() > 100_000 >= cells[:table.num_rows].sum()


def test_string_agg_is_one_cell(demo_mounts: list[DatasetMount]) -> None:
    """A huge string is one (scalar) cell: counted once, not per character."""
    table, truncated = _direct("SELECT string_agg(tailnum, ',') AS t FROM {flights}",
                               demo_mounts)
    assert table.num_rows == 1 and not truncated
    assert len(table.column("t")[0].as_py()) > 1_000_000
    with pytest.raises(ResultWithheld):  # two cells do not fit in one
        _direct("SELECT string_agg(tailnum, ','), count(*) FROM {flights}", demo_mounts,
                result_cells=1)


def test_struct_of_many_columns_counts_each_field(demo_mounts: list[DatasetMount]) -> None:
    table, truncated = _direct("SELECT struct_pack(year, month, day, dep_delay, carrier, "
                               "tailnum, origin, dest, distance, hour) AS s FROM {flights}",
                               demo_mounts, result_cells=20_000)
    assert truncated and table.num_rows == 2_000  # 10 cells a row


def test_map_counts_keys_and_values(demo_mounts: list[DatasetMount]) -> None:
    # histogram() returns a MAP (carrier -> flights): each entry is a key and a value.
    sql = "SELECT histogram(carrier) AS h FROM {flights}"
    table, _ = _direct(sql, demo_mounts)
    entries = len(table.column("h")[0].as_py())
    assert entries == 16 and int(row_cells(table)[0]) == 2 * entries
    with pytest.raises(ResultWithheld):
        _direct(sql, demo_mounts, result_cells=2 * entries - 1)
    table, _ = _direct("SELECT map([carrier, origin], [dep_delay, arr_delay]) AS m "
                       "FROM {flights}", demo_mounts, result_cells=4 * 100)
    assert table.num_rows == 100


def test_nested_lists_count_every_leaf(demo_mounts: list[DatasetMount]) -> None:
    table, truncated = _direct("SELECT [[dep_delay, dep_delay], [dep_delay]] AS l "
                               "FROM {flights}", demo_mounts, result_cells=3_000)
    assert truncated and table.num_rows == 1_000  # 3 cells a row


def test_list_distinct_exactly_at_the_boundary(demo_mounts: list[DatasetMount]) -> None:
    sql = "SELECT list(DISTINCT tailnum) AS t FROM {flights}"
    table, truncated = _direct(sql, demo_mounts, result_cells=10**9)
    distinct = len(table.column("t")[0].as_py())
    assert distinct > 4_000
    table, truncated = _direct(sql, demo_mounts, result_cells=distinct)  # exactly fits
    assert table.num_rows == 1 and not truncated
    with pytest.raises(ResultWithheld):
        _direct(sql, demo_mounts, result_cells=distinct - 1)


def test_unnest_back_is_capped(demo_mounts: list[DatasetMount]) -> None:
    """Unpacked again, the rows are rows: max_rows and the cells of each struct hold."""
    sql = "SELECT unnest(l) AS r FROM (SELECT list(f) AS l FROM {flights} AS f)"
    table, truncated = _direct(sql, demo_mounts)
    assert truncated and table.num_rows == 5_000  # 5,000 rows of 19 fields fit
    table, truncated = _direct(sql, demo_mounts, result_cells=19 * 100)
    assert truncated and table.num_rows == 100


# -- through the rewriter: refused, or released within the caps --------------------------

THROUGH_THE_REWRITER = [
    (RECORDS, "SELECT list(f) FROM flights AS f"),
    (RECORDS, "SELECT array_agg(dep_delay) FROM flights"),
    (RECORDS, "SELECT carrier, array_agg(dep_delay) FROM flights GROUP BY carrier"),
    (RECORDS, "SELECT string_agg(tailnum, ',') FROM flights"),
    (RECORDS, "SELECT struct_pack(year, month, day, dep_delay, carrier, tailnum, origin, "
              "dest, distance, hour) AS s FROM flights"),
    (RECORDS, "SELECT histogram(carrier) FROM flights"),
    (RECORDS, "SELECT [[dep_delay, dep_delay], [dep_delay]] FROM flights"),
    (RECORDS, "SELECT list(DISTINCT tailnum) FROM flights"),
    (RECORDS, "SELECT unnest(l) FROM (SELECT list(f) AS l FROM flights AS f)"),
    (RECORDS, "SELECT l[1] FROM (SELECT list(f) AS l FROM flights AS f)"),
    ("residents-sandbox", "SELECT list(r) FROM residents AS r"),
    ("residents-sandbox", "SELECT [income, income, income] FROM residents"),
]


@pytest.mark.parametrize(("scenario", "sql"), THROUGH_THE_REWRITER,
                         ids=[q[:60] for _, q in THROUGH_THE_REWRITER])
def test_refused_or_within_the_caps(scenario: str, sql: str, make_ctx: Ctx,
                                    demo_mounts: list[DatasetMount]) -> None:
    for cells in (None, 2_000):
        ctx = make_ctx(scenario) if cells is None else _capped(make_ctx(scenario),
                                                               result_cells=cells)
        try:
            _run(ctx, sql, demo_mounts)
        except (QueryRejected, ResultWithheld):
            pass


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
    # Each row holds a list of three values: it counts as three rows.
    rewritten = _rewritten(Mode.records, max_rows=7, result_cells=1_000)
    released = postcheck(_four_cells_a_row(), rewritten)
    assert released.table.num_rows == 2 and released.truncated


def test_a_list_of_n_values_counts_as_n_rows() -> None:
    """``max(x, 1000)`` or a list of quantiles held a thousand records in one row."""
    with pytest.raises(ResultWithheld, match="counts for 3 rows"):
        postcheck(_four_cells_a_row(), _rewritten(Mode.records, max_rows=2, result_cells=1_000))
    released = postcheck(_four_cells_a_row(), _rewritten(Mode.records, max_rows=15,
                                                           result_cells=1_000))
    assert released.table.num_rows == 5 and not released.truncated


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
    rewritten = _rewritten(Mode.records, max_rows=15, result_cells=1_000)  # 3 a row
    batches, schema = JobService._checked_stream(stream, rewritten)
    assert pa.Table.from_batches(list(batches), schema=schema).num_rows == 5


def test_allowance_spans_calls() -> None:
    rewritten = _rewritten(Mode.records, result_cells=10)
    allowance = Allowance.of(rewritten)
    first = postcheck(_four_cells_a_row(2), rewritten, allowance)
    second = postcheck(_four_cells_a_row(2), rewritten, allowance)
    assert (first.table.num_rows, second.table.num_rows) == (2, 0)
    assert second.truncated and allowance.spent is False and allowance.cells == 2
