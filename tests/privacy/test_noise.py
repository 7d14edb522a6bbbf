"""Noise with a budget: calibration, contribution bounds in SQL, refusals, cache, budget."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import pyarrow as pa
import pytest

from gateway.errors import BudgetExhausted, QueryRejected
from gateway.privacy.noise import apply_noise, scale_for
from gateway.privacy.plan import NoisePlan, NoisyOutput, Ordering, Statistic
from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.run import fetch
from sandbox.engine import EngineLimits

NoisyCtx = Callable[..., RewriteContext]


def test_scale_is_what_opendp_certifies_for_the_sensitivity() -> None:
    assert scale_for(integer=True, sensitivity=300, epsilon=0.5) == pytest.approx(600)
    assert scale_for(integer=False, sensitivity=1000.0, epsilon=2.0) == pytest.approx(500)


def plan(*outputs: str | NoisyOutput, epsilon: float = 1.0, rows: int = 10,
         order: tuple[Ordering, ...] = (), limit: int | None = None) -> NoisePlan:
    return NoisePlan(outputs=outputs, epsilon=epsilon, max_rows_per_entity=rows,
                     order_by=order, limit=limit)


STATS = pa.table({"g": ["a", "b", "c"], "__dsb_c": [1000, 0, 5000],
                  "__dsb_s": [50_000.0, 0.0, 9e9], "__dsb_n": [50, 50, 50]})


def test_count_noise_has_the_configured_scale_over_200_draws() -> None:
    p = plan("g", NoisyOutput("n", Statistic.rows, count_column="__dsb_c"))
    errors = [abs(apply_noise(STATS, p)[0].column("n")[0].as_py() - 1000) for _ in range(200)]
    # Mean |Laplace(b)| is b = rows / (epsilon / 2) = 20: half of epsilon goes to the
    # noise on the entity counts that k is checked against.
    assert 16 < statistics.mean(errors) < 24


def test_a_groups_presence_near_k_is_not_an_exact_answer() -> None:
    """Round four of the red team binary-searched one income through whether a group of
    about k residents appeared (its exact count against k). The count k is checked
    against is noisy now; a group below k still never appears."""
    sizes = pa.table({"g": ["at k", "below k"], "__dsb_c": [10, 9], "__dsb_n": [10, 9]})
    p = plan("g", NoisyOutput("n", Statistic.rows, count_column="__dsb_c"), rows=1)
    draws = [apply_noise(sizes, p)[0].column("__dsb_n").to_pylist() for _ in range(200)]
    at_k = [d[0] >= 10 for d in draws]
    assert 0.2 < sum(at_k) / len(at_k) < 0.8  # sometimes in, sometimes out
    assert all(d[1] < 10 for d in draws)  # never a group of fewer than k
    assert all(d[0] <= 10 for d in draws)  # noise never lifts a count above the exact one


def test_released_values_are_post_processed_into_range() -> None:
    p = plan("g", NoisyOutput("n", Statistic.rows, count_column="__dsb_c"),
             NoisyOutput("mean", Statistic.mean, sum_column="__dsb_s", count_column="__dsb_c",
                         bounds=(0.0, 100.0)), rows=1000)
    for _ in range(20):
        table, report = apply_noise(STATS, p)
        assert min(table.column("n").to_pylist()) >= 0  # a count is never negative
        means = [m for m in table.column("mean").to_pylist() if m is not None]
        assert all(0.0 <= m <= 100.0 for m in means)
    assert set(report.columns) == {"n", "mean"} and report.columns["mean"].count_scale


def test_order_and_limit_are_applied_after_the_noise() -> None:
    p = plan("g", NoisyOutput("n", Statistic.rows, count_column="__dsb_c"), rows=1,
             order=(Ordering(1, descending=True),), limit=2)
    table, _ = apply_noise(STATS, p)
    assert table.column("g").to_pylist() == ["c", "a"]
    assert table.column_names == ["g", "n", "__dsb_n"]  # group size kept for the post-check


@pytest.mark.parametrize(("sql", "words"), [
    ("SELECT district, sum(income) FROM residents GROUP BY district HAVING count(*) > 50",
     "HAVING"),
    ("SELECT district, median(household_size) FROM residents GROUP BY district", "median"),
    ("SELECT district, sum(household_size) FROM residents GROUP BY district", "noise.clamp"),
    ("SELECT district, round(avg(income)) FROM residents GROUP BY district", "yourself"),
    ("SELECT district, count(DISTINCT occupation) FROM residents GROUP BY district", "count"),
    ("SELECT gender, count(*) FROM residents GROUP BY gender UNION ALL "
     "SELECT district, count(*) FROM residents GROUP BY district", "set operations"),
])
def test_what_noise_cannot_bound_is_refused_with_advice(noisy_ctx: NoisyCtx, sql: str,
                                                        words: str) -> None:
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, noisy_ctx("residents-aggregate"))
    assert info.value.code == "noise_unsupported" and words in str(info.value)


def test_rows_per_entity_are_capped(noisy_ctx: NoisyCtx, demo_mounts) -> None:  # type: ignore[no-untyped-def]
    # An aircraft flies several times a day: its rows are cut to the cap before counting.
    sql = ("SELECT f.origin, count(*) AS n FROM flights f JOIN planes p ON f.tailnum = "
           "p.tailnum WHERE f.month = 1 AND f.day = 1 GROUP BY f.origin")
    rewritten = rewrite(sql, noisy_ctx("flights-aggregate", max_rows_per_entity=1))
    raw = fetch(rewritten, demo_mounts, EngineLimits(timeout_ms=60_000))
    counts = raw.column(rewritten.noise.noisy[0].count_column).to_pylist()  # type: ignore[union-attr]
    aircraft = raw.column("__dsb_n").to_pylist()
    assert all(n <= a for n, a in zip(counts, aircraft, strict=True))
    assert sum(counts) < 842  # the flights of that day, uncapped


def test_joins_that_multiply_an_entitys_rows_are_refused(noisy_ctx: NoisyCtx) -> None:
    # Each flight of 1 January would meet every weather row of its airport that day.
    sql = ("SELECT f.origin, count(*) AS n FROM flights f JOIN weather w ON f.origin = w.origin "
           "WHERE f.month = 1 AND f.day = 1 AND w.month = 1 AND w.day = 1 GROUP BY f.origin")
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, noisy_ctx("flights-aggregate", max_rows_per_entity=10))
    assert info.value.code == "forbidden_join"


def test_repeat_is_answered_from_the_cache_and_not_charged(noisy_ctx: NoisyCtx,
                                                           audited_sql) -> None:  # type: ignore[no-untyped-def]
    ctx = noisy_ctx("residents-aggregate", epsilon_per_query=1.0, budget_epsilon=2.0)
    sql = "SELECT gender, count(*) AS n, avg(income) AS mean FROM residents GROUP BY gender"
    first, one = audited_sql(ctx, sql)
    again, two = audited_sql(ctx, "select gender, COUNT(*) as n, AVG(income) as mean "
                             "from residents group by gender")  # same once normalised
    assert first == again and not one.privacy["cached"] and two.privacy["cached"]
    assert two.privacy["epsilon_charged"] == 0 and two.privacy["budget"]["spent"] == 1.0
    # 1 row / (1.0 / 3): two noisy columns and the noisy entity counts share epsilon.
    assert one.privacy["columns"]["n"]["scale"] == pytest.approx(3.0)
    audited_sql(ctx, "SELECT count(*) AS n FROM residents")
    with pytest.raises(BudgetExhausted) as info:
        audited_sql(ctx, "SELECT district, count(*) AS n FROM residents GROUP BY district")
    assert "2 of 2 epsilon used" in str(info.value)
    assert audited_sql(ctx, sql)[0] == first  # asked before: still answered, free


def test_budget_is_per_agreement(noisy_ctx: NoisyCtx, audited_sql) -> None:  # type: ignore[no-untyped-def]
    ctx = noisy_ctx("residents-aggregate", epsilon_per_query=1.0, budget_epsilon=1.0)
    audited_sql(ctx, "SELECT count(*) AS n FROM residents", agreement="agr-a")
    audited_sql(ctx, "SELECT count(*) AS n FROM residents", agreement="agr-b")
    with pytest.raises(BudgetExhausted):
        audited_sql(ctx, "SELECT gender, count(*) AS n FROM residents GROUP BY gender",
                    agreement="agr-a")
