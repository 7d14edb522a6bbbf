"""Statements nested too deep are refused with ``too_complex``, never a RecursionError
(issue "Enforcement by meaning"); long but shallow statements still work."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import gateway.rewrite as rewriter
from gateway.errors import QueryRejected
from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.context import MAX_NESTING_DEPTH, State
from gateway.rewrite.parse_statement import parse_statement, tree_depth
from gateway.rewrite.run import execute
from gateway.settings import Settings
from sandbox.engine import DatasetMount, EngineLimits

Ctx = Callable[[str], RewriteContext]

DEEP: dict[str, Callable[[int], str]] = {
    "parentheses": lambda n: "SELECT " + "(" * n + "dep_delay" + ")" * n + " FROM flights",
    "case": lambda n: "SELECT " + "CASE WHEN dep_delay > 0 THEN " * n + "1" + " END" * n
                      + " FROM flights",
    "functions": lambda n: "SELECT " + "abs(" * n + "dep_delay" + ")" * n + " FROM flights",
    "subqueries": lambda n: "SELECT * FROM " + "(SELECT * FROM " * n + "flights" + ")" * n,
    "brackets": lambda n: "SELECT " + "[" * n + "dep_delay" + "]" * n + " FROM flights",
    "structs": lambda n: "SELECT " + "{'a': " * n + "1" + "}" * n + " FROM flights",
    "in-subqueries": lambda n: "SELECT carrier FROM flights WHERE carrier IN "
                               + "(SELECT carrier FROM flights WHERE carrier IN " * n
                               + "(SELECT 'AA')" + ")" * n,
    "not": lambda n: "SELECT dep_delay FROM flights WHERE " + "NOT " * (4 * n)
                     + "dep_delay > 0",
    "minus": lambda n: "SELECT " + "- " * (4 * n) + "dep_delay FROM flights",
}
SIZES = (MAX_NESTING_DEPTH + 1, 500, 5_000)


def _refused(sql: str, ctx: RewriteContext) -> QueryRejected:
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, ctx)
    return info.value


@pytest.mark.parametrize("form", DEEP)
@pytest.mark.parametrize("scenario", ["flights-records", "flights-aggregate"])
def test_deep_statements_are_too_complex(form: str, scenario: str, make_ctx: Ctx) -> None:
    for size in SIZES:
        sql = DEEP[form](size)
        if len(sql) > 100_000:
            continue
        refusal = _refused(sql, make_ctx(scenario))
        assert refusal.code == "too_complex", (size, refusal.message)
        assert refusal.http_status == 400
        assert "flatten" in refusal.message


@pytest.mark.parametrize("form", ["parentheses", "case", "functions", "subqueries",
                                  "in-subqueries"])
def test_nesting_up_to_the_limit_runs(form: str, make_ctx: Ctx,
                                      demo_mounts: list[DatasetMount]) -> None:
    # the statement's own levels, with room for the rewriter's views around them
    rewritten = rewrite(DEEP[form](MAX_NESTING_DEPTH - 2), make_ctx("flights-records"))
    table, _ = execute(rewritten, demo_mounts, EngineLimits(timeout_ms=30_000))
    assert table.num_rows > 0


def test_the_limit_is_a_setting(make_ctx: Ctx) -> None:
    assert Settings().max_nesting_depth == MAX_NESTING_DEPTH
    base = make_ctx("flights-records")
    strict = RewriteContext(base.scenario, base.datasets, salt=base.salt, max_nesting_depth=8)
    rewrite(DEEP["parentheses"](8), strict)
    assert _refused(DEEP["parentheses"](9), strict).code == "too_complex"
    assert "8 levels" in _refused(DEEP["case"](9), strict).message


@pytest.mark.parametrize("joiner", [" AND ", " OR "])
def test_long_and_or_chains_still_work(joiner: str, make_ctx: Ctx,
                                       demo_mounts: list[DatasetMount]) -> None:
    """Long, not deep: DuckDB flattens AND/OR chains, so they are one level."""
    term = "dep_delay <> {}" if joiner == " AND " else "dep_delay = {}"
    sql = ("SELECT carrier, dep_delay FROM flights WHERE "
           + joiner.join(term.format(i) for i in range(3_000)))
    assert len(sql) < 100_000
    started = time.monotonic()
    rewritten = rewrite(sql, make_ctx("flights-records"))
    assert time.monotonic() - started < 10
    table, _ = execute(rewritten, demo_mounts, EngineLimits(timeout_ms=30_000))
    assert table.num_rows > 0


def test_long_chains_in_aggregate_mode(make_ctx: Ctx, demo_mounts: list[DatasetMount]) -> None:
    sql = ("SELECT carrier, count(*) FROM flights WHERE "
           + " AND ".join(f"dep_delay <> {i}" for i in range(500)) + " GROUP BY carrier")
    table, _ = execute(rewrite(sql, make_ctx("flights-aggregate")), demo_mounts,
                       EngineLimits(timeout_ms=30_000))
    assert table.num_rows > 0


def test_long_arithmetic_chains_are_refused_cleanly(make_ctx: Ctx) -> None:
    """``a + b + ...`` is as deep as it is long, for DuckDB too (past 1000 it refuses)."""
    for op in (" + ", " || "):
        sql = "SELECT " + op.join("dep_delay" for _ in range(5_000)) + " FROM flights"
        assert _refused(sql, make_ctx("flights-records")).code == "too_complex"
    shallow = "SELECT " + " + ".join("dep_delay" for _ in range(100)) + " AS s FROM flights"
    rewrite(shallow, make_ctx("flights-records"))


def test_a_recursion_error_in_any_rule_is_too_complex(make_ctx: Ctx,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def recurses(state: State) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rewriter, "RULES", (parse_statement, recurses))
    refusal = _refused("SELECT carrier FROM flights", make_ctx("flights-records"))
    assert refusal.code == "too_complex"


def test_tree_depth_counts_chains_of_and_as_one_level() -> None:
    from sqlglot import parse_one

    flat = parse_one("SELECT 1 WHERE " + " AND ".join(f"a = {i}" for i in range(300)))
    deep = parse_one("SELECT 1 WHERE " + "NOT " * 300 + "a")
    assert tree_depth(flat) < 10 < 300 < tree_depth(deep)


def test_governance_shapes_survive_deep_statements() -> None:
    from gateway.governance.warnings import shape

    for form in ("parentheses", "functions", "not"):
        assert shape(DEEP[form](2_000)) is None  # no shape, and no RecursionError


@pytest.mark.parametrize("scenario", ["flights-aggregate", "flights-records"])
def test_thousands_of_chained_ctes_are_refused_at_once(scenario: str, make_ctx: Ctx) -> None:
    """2,000 chained CTEs (72 KB) once took 4 s of analysis before a refusal."""
    ctes = ", ".join(["c0 AS (SELECT origin FROM flights)"]
                     + [f"c{i} AS (SELECT origin FROM c{i - 1})" for i in range(1, 2000)])
    started = time.monotonic()
    with pytest.raises(QueryRejected) as info:
        rewrite(f"WITH {ctes} SELECT origin, count(*) AS n FROM c1999 GROUP BY origin",
                make_ctx(scenario))
    assert info.value.code == "too_complex"
    assert "SELECT" in info.value.message
    assert time.monotonic() - started < 1.0


def test_a_few_dozen_ctes_still_answer(make_ctx: Ctx) -> None:
    ctes = ", ".join(["c0 AS (SELECT origin FROM flights)"]
                     + [f"c{i} AS (SELECT origin FROM c{i - 1})" for i in range(1, 40)])
    rewrite(f"WITH {ctes} SELECT origin, count(*) AS n FROM c39 GROUP BY origin",
            make_ctx("flights-aggregate"))
