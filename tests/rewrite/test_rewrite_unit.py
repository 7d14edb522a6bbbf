"""Unit tests: the contract of rewrite(), explanations, the post-check, the engine lock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from rewrite_support import SALT

from gateway.errors import DsbError, QueryRejected, ResultWithheld
from gateway.policy.models import Mode
from gateway.rewrite import RULES, Change, RewriteContext, Rewritten, rewrite
from gateway.rewrite.postcheck import postcheck
from gateway.rewrite.run import execute
from sandbox.engine import DatasetMount, EngineLimits, open_engine

Ctx = Callable[[str], RewriteContext]


def test_public_api_is_pinned() -> None:
    import gateway.rewrite as module

    assert set(module.__all__) == {"RULES", "Change", "RewriteContext", "Rewritten", "rewrite"}
    assert [r.__name__ for r in RULES][0] == "parse_statement"


def test_explanation_lists_every_change(make_ctx: Ctx) -> None:
    out = rewrite("SELECT * FROM flights", make_ctx("flights-records"))
    rules = [c.rule for c in out.explanation]
    assert rules == ["apply_masks", "inject_row_filters", "restrict_columns", "cap_rows"]
    assert all(isinstance(c, Change) and c.message for c in out.explanation)
    assert "origin = 'JFK'" in out.explanation[1].message
    assert "5000" in out.explanation[-1].message
    assert out.datasets == ("flights",) and out.mode is Mode.records and out.max_rows == 5000


def test_aggregate_explanation_and_hidden_columns(make_ctx: Ctx) -> None:
    out = rewrite("SELECT district, avg(income) FROM residents GROUP BY district",
                  make_ctx("residents-aggregate-exact"))
    assert out.k == 10 and out.hidden_columns == ("__dsb_n", "__dsb_sets")
    # make_total: income is a DOUBLE, so its average leaves out infinities and NaN (and
    # the CASE that does so is guarded like any other).
    assert [c.rule for c in out.explanation] == ["enforce_min_group", "enforce_min_group",
                                                 "make_total", "make_total", "apply_masks"]
    assert "query auditing" in out.explanation[1].message
    assert "fewer than 10 distinct resident_id" in out.explanation[0].message


def test_casts_made_non_failing_in_aggregate_mode(make_ctx: Ctx) -> None:
    out = rewrite("SELECT count(*) FROM residents WHERE CAST(occupation AS INT) = 1",
                  make_ctx("residents-aggregate-exact"))
    assert "TRY_CAST" in out.sql and any(c.rule == "soften_errors" for c in out.explanation)


def test_salt_never_shown(make_ctx: Ctx) -> None:
    out = rewrite("SELECT tailnum FROM flights", make_ctx("flights-records"))
    assert SALT in out.sql
    assert SALT not in out.display_sql and "<salt>" in out.display_sql
    assert all(SALT not in c.message for c in out.explanation)


def test_short_salt_refused(make_ctx: Ctx) -> None:
    ctx = make_ctx("flights-records")
    with pytest.raises(ValueError):
        RewriteContext(ctx.scenario, ctx.datasets, salt="short")


def test_rejection_names_the_expression_and_position(make_ctx: Ctx) -> None:
    sql = "SELECT carrier, flight FROM flights"
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx("flights-records"))
    assert info.value.code == "forbidden_column"
    assert "flight" in info.value.message
    assert info.value.position == sql.index("flight")


def test_rewrite_is_pure(make_ctx: Ctx) -> None:
    ctx = make_ctx("flights-aggregate")
    sql = "SELECT carrier, count(*) FROM flights GROUP BY carrier"
    assert rewrite(sql, ctx) == rewrite(sql, ctx)


def _rewritten(mode: Mode, **kw: object) -> Rewritten:
    base = Rewritten(sql="", display_sql="", explanation=[], datasets=("residents",), mode=mode,
                     k=10, max_rows=2, hidden_columns=("__dsb_n",),
                     forbidden_columns=frozenset({"name"}))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_postcheck_suppresses_small_groups_and_strips_hidden() -> None:
    table = pa.table({"d": ["a", "b", "c"], "n": [50, 3, 20], "__dsb_n": [50, 3, None]})
    released = postcheck(table, _rewritten(Mode.aggregate))
    assert released.table.to_pylist() == [{"d": "a", "n": 50}]
    assert released.suppressed_groups == 2


def test_postcheck_fails_closed() -> None:
    with pytest.raises(ResultWithheld, match="group sizes"):
        postcheck(pa.table({"d": ["a"]}), _rewritten(Mode.aggregate))
    with pytest.raises(ResultWithheld, match="not allowed"):
        postcheck(pa.table({"NAME": ["x"]}), _rewritten(Mode.records))
    with pytest.raises(ResultWithheld, match="internal") as caught:
        postcheck(pa.table({"__dsb_e1": [1]}), _rewritten(Mode.records))
    # A refusal with a stable code, not a server error.
    assert (caught.value.code, caught.value.http_status) == ("postcheck_failed", 403)


def test_postcheck_caps_rows() -> None:
    released = postcheck(pa.table({"d": [1, 2, 3]}), _rewritten(Mode.records))
    assert released.table.num_rows == 2 and released.truncated


def test_engine_errors_are_generic(make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    # A failed cast prints the value; the user sees only a code.
    out = rewrite("SELECT CAST(carrier AS INTEGER) FROM flights", make_ctx("flights-records"))
    with pytest.raises(DsbError) as info:
        execute(out, demo_mounts, EngineLimits())
    assert info.value.code == "execution_failed"
    assert "AA" not in info.value.message and "Conversion" not in info.value.message
    assert "Conversion" in getattr(info.value, "detail", "")


def test_only_used_datasets_are_attached(make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    out = rewrite("SELECT count(*) FROM airlines", make_ctx("flights-records"))
    table, _ = execute(out, demo_mounts, EngineLimits())
    assert table.num_rows == 1
    with pytest.raises(DsbError, match="not mounted"):
        execute(out, [], EngineLimits())


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "COPY (SELECT 1) TO '/tmp/dsb-escape.csv'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "INSTALL httpfs",
    "LOAD httpfs",
    "ATTACH '/tmp/dsb-other.duckdb' AS other",
    "CREATE TABLE ds_flights.main.x AS SELECT 1",
])
def test_engine_is_locked_down(statement: str, demo_mounts: list[DatasetMount],
                               tmp_path: Path) -> None:
    """The engine refuses what the rewriter would never send (defence in depth)."""
    con = open_engine([m for m in demo_mounts if m.dataset_id == "flights"], EngineLimits())
    try:
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    finally:
        con.close()
    assert not Path("/tmp/dsb-escape.csv").exists()


# -- known holes, pinned so that closing one is noticed ------------------------------


def test_padded_isolation_suppressed(run_sql) -> None:  # type: ignore[no-untyped-def]
    # ELSE 0 makes every row feed the sum; the CASE branch is counted on its own
    # (guard_isolation.branch_conditions), so the one-district branch suppresses the row.
    rows, report, _ = run_sql("residents-aggregate-exact",
                              "SELECT gender, sum(CASE WHEN district = 'Chongming Islet' "
                              "THEN income ELSE 0 END) AS s FROM residents GROUP BY gender")
    assert all(r["s"] == 0 or r["s"] < 900_000 for r in rows)
    assert rows == [] and report.suppressed_groups >= 1


def test_error_oracle_gives_no_bit(run_sql) -> None:  # type: ignore[no-untyped-def]
    # ln(0) would raise iff a resident of the tiny district earns > 987654; wrapped in
    # TRY() it is NULL, so the answer is the same whichever branch the data takes.
    probe = ("SELECT count(*) AS n FROM residents WHERE ln(CASE WHEN district = "
             "'Chongming Islet' AND income > {} THEN 0 ELSE 1 END) < 100")
    high, _, rewritten = run_sql("residents-aggregate-exact", probe.format(987654))
    low, _, _ = run_sql("residents-aggregate-exact", probe.format(0))
    assert "TRY(" in rewritten.sql
    assert len(high) == len(low) == 1
