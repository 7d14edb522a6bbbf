"""Round three of the outside attack (README and API only), each hit turned into its class.

- *computed divisors through lineage*: a divisor computed in a CTE (``... + 1e-9``) that
  is near zero for one flight weights it by a billion inside a group that passes k;
- *aggregates that fail*: a variance of ``1e300`` for one row, a HUGEINT or DECIMAL(38)
  sum that overflows when one more row adds up: the job fails or not with a hidden value;
- *values that exhaust memory or time*: ``lpad('a', CASE WHEN <row> THEN 2e9 ELSE 1
  END)``, which ``try()`` cannot catch;
- *conversions row by row*: a CASE mixing text and numbers, a text compared with a
  number: DuckDB converts when a row gets there;
- *packing windows*: ``lag(x, 1) ... lag(x, 22)`` put 23 records in each row of a
  records-mode result.

(The count of suppressed groups, also an answer, is no longer in the API: see
``tests/api/test_jobs.py``.)
"""

from __future__ import annotations

import pytest

from gateway.errors import QueryRejected
from gateway.rewrite import rewrite

# One flight (EWR, UA, 1 January, 05:15; its dep_delay is 2).
ONE = "month = 1 AND day = 1 AND sched_dep_time = 515 AND origin = 'EWR' AND carrier = 'UA'"
BELOW, AT = 1.99, 2


def _refused(make_ctx, scenario: str, sql: str, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(scenario))
    assert info.value.code == code, info.value.message


DIVISORS = [
    ("CTE", "WITH c AS (SELECT origin, dep_delay, (distance * 100000000.0 + month * 1000000.0 "
     "+ day * 10000.0 + sched_dep_time) - 140001010515 + 0.000000001 AS w FROM flights) "
     "SELECT origin, sum(dep_delay / w) AS a FROM c GROUP BY origin"),
    ("derived table", "SELECT origin, sum(dep_delay / w) AS a FROM (SELECT origin, dep_delay, "
     "sched_dep_time - 514.999999 AS w FROM flights) AS t GROUP BY origin"),
    ("two CTEs deep", "WITH a AS (SELECT origin, dep_delay, sched_dep_time - 515 AS z FROM "
     "flights), b AS (SELECT origin, dep_delay, z + 0.000001 AS w FROM a) "
     "SELECT origin, avg(dep_delay / w) AS m FROM b GROUP BY origin"),
    ("renamed then moved", "WITH a AS (SELECT origin, dep_delay, sched_dep_time AS s FROM "
     "flights) SELECT origin, sum(dep_delay / (s - 514.999999)) AS x FROM a GROUP BY origin"),
    ("inline offset", "SELECT origin, sum(dep_delay / (sched_dep_time - 514.999999)) AS x "
     "FROM flights GROUP BY origin"),
    ("inline plus", "SELECT origin, sum(arr_delay / (air_time + -226.9999999)) AS x "
     "FROM flights GROUP BY origin"),
    ("reciprocal", "WITH c AS (SELECT origin, day - 0.9999999 AS w FROM flights) "
     "SELECT origin, sum(1 / w) AS x FROM c GROUP BY origin"),
    ("cast in the CTE", "WITH c AS (SELECT origin, dep_delay, CAST(sched_dep_time - "
     "514.9999 AS DOUBLE) AS w FROM flights) SELECT origin, sum(dep_delay / w) FROM c "
     "GROUP BY origin"),
    ("scaled column", "SELECT origin, sum(dep_delay / (distance * 0.000000001)) AS x "
     "FROM flights GROUP BY origin"),
    ("residents: income offset", "WITH c AS (SELECT district, income - 987654.2 AS w FROM "
     "residents) SELECT district, sum(1 / w) AS x FROM c GROUP BY district"),
]


@pytest.mark.parametrize(("name", "sql"), DIVISORS, ids=[d[0] for d in DIVISORS])
def test_computed_divisors_are_refused_through_ctes(make_ctx, name: str, sql: str) -> None:  # type: ignore[no-untyped-def]
    scenario = "residents-aggregate-exact" if "residents" in sql else "flights-aggregate"
    _refused(make_ctx, scenario, sql, "isolating_aggregate")


@pytest.mark.parametrize("sql", [
    "SELECT origin, avg(distance / air_time * 60) AS mph FROM flights GROUP BY origin",
    "WITH c AS (SELECT origin, distance, air_time AS t FROM flights) "
    "SELECT origin, avg(distance / t) AS speed FROM c GROUP BY origin",
    "SELECT origin, sum(dep_delay / 60.0) AS hours FROM flights GROUP BY origin",
])
def test_stored_divisors_still_answer(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql("flights-aggregate", sql)
    assert rows


def _same_outcome(run_sql, template: str) -> None:  # type: ignore[no-untyped-def]
    """Both constants answer (the hidden value is between them), or both are refused
    alike before running: no oracle."""
    outcomes = set()
    for constant in (BELOW, AT):
        try:
            run_sql("flights-aggregate", template.format(c=constant))
            outcomes.add("answered")
        except QueryRejected as exc:
            outcomes.add(exc.code)
    assert len(outcomes) == 1, outcomes


HUGE = "1e300"
OVERFLOWS = [
    f"SELECT year, var_samp(CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE 0 END) AS v "
    "FROM flights GROUP BY year",
    f"SELECT year, var_pop(CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE 0 END) AS v "
    "FROM flights GROUP BY year",
    f"SELECT year, stddev(CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE 0 END) AS v "
    "FROM flights GROUP BY year",
    f"SELECT year, stddev_pop(CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE 0 END) "
    "AS v FROM flights GROUP BY year",
    f"SELECT year, corr(dep_delay, CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE 0 "
    "END) AS v FROM flights GROUP BY year",
    f"SELECT year, regr_r2(arr_delay, CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} ELSE "
    "0 END) AS v FROM flights GROUP BY year",
    f"SELECT year, regr_slope(arr_delay, CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} "
    "ELSE 0 END) AS v FROM flights GROUP BY year",
    f"SELECT year, covar_pop(arr_delay, CASE WHEN {ONE} AND dep_delay > {{c}} THEN {HUGE} "
    "ELSE 0 END) AS v FROM flights GROUP BY year",
    # Two rows of the largest DECIMAL(38) overflow when both add up: the target and one
    # known other flight.
    f"SELECT year, sum(CASE WHEN ({ONE} AND dep_delay > {{c}}) OR (month = 1 AND day = 1 "
    "AND sched_dep_time = 529 AND origin = 'LGA') THEN "
    "90000000000000000000000000000000000000 ELSE 0 END) AS v FROM flights GROUP BY year",
    f"SELECT year, avg(CASE WHEN ({ONE} AND dep_delay > {{c}}) OR (month = 1 AND day = 1 "
    "AND sched_dep_time = 529 AND origin = 'LGA') THEN "
    "170141183460469231731687303715884105727 ELSE 0 END) AS v FROM flights GROUP BY year",
    f"SELECT year, sum(CASE WHEN ({ONE} AND dep_delay > {{c}}) OR (month = 1 AND day = 1 "
    "AND sched_dep_time = 529 AND origin = 'LGA') THEN CAST(dep_delay AS HUGEINT) * "
    "85070591730234615865843651857942052864 ELSE 0 END) AS v FROM flights GROUP BY year",
    # Above the aggregate: an overflow on the count of a group that is then suppressed.
    f"SELECT origin, count(*) * 9223372036854775807 AS n FROM flights WHERE {ONE} AND "
    "dep_delay > {c} GROUP BY origin",
    f"SELECT origin, sum(CAST(month AS BIGINT)) * 4611686018427387904 AS n FROM flights "
    f"WHERE {ONE} AND dep_delay > {{c}} GROUP BY origin",
]


@pytest.mark.parametrize("template", OVERFLOWS)
def test_aggregates_cannot_fail_on_a_hidden_value(run_sql, template: str) -> None:  # type: ignore[no-untyped-def]
    _same_outcome(run_sql, template)


@pytest.mark.parametrize(("sql", "code"), [
    ("SELECT origin, skewness(dep_delay) AS s FROM flights GROUP BY origin", "forbidden_function"),
    ("SELECT origin, kurtosis(dep_delay) AS s FROM flights GROUP BY origin", "forbidden_function"),
    ("SELECT origin, ln(count(*) - 1) AS s FROM flights GROUP BY origin", "not_analyzable"),
    ("SELECT origin, sqrt(sum(dep_delay)) AS s FROM flights GROUP BY origin", "not_analyzable"),
    ("SELECT origin, CASE WHEN count(*) > 1 THEN 'many' ELSE count(*) END AS s FROM flights "
     "GROUP BY origin", "not_analyzable"),
])
def test_aggregates_that_fail_on_values_are_refused(make_ctx, sql: str, code: str) -> None:  # type: ignore[no-untyped-def]
    _refused(make_ctx, "flights-aggregate", sql, code)


CONVERSIONS = [
    f"SELECT origin, count(CASE WHEN {ONE} AND dep_delay > {{c}} THEN 'x' ELSE 0 END) AS n "
    "FROM flights GROUP BY origin",
    f"SELECT origin, sum(CASE WHEN {ONE} AND dep_delay > {{c}} THEN 'x' ELSE 1 END) AS n "
    "FROM flights GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "month = 'x' GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "carrier IN (month, 1) GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "CAST(time_hour AS DATE) = carrier GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "coalesce(time_hour, 'x') IS NOT NULL GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "ln(dep_delay - 2) > -1000 GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "carrier SIMILAR TO CASE WHEN dep_delay > 0 THEN '(' ELSE 'U.' END GROUP BY origin",
    f"SELECT origin, bool_and(CASE WHEN {ONE} AND dep_delay > {{c}} THEN 'maybe' ELSE 'true' "
    "END) AS b FROM flights GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {ONE} AND dep_delay > {{c}} AND "
    "sin(CASE WHEN dep_delay > 0 THEN 'inf'::DOUBLE ELSE 0 END) < 2 GROUP BY origin",
]


@pytest.mark.parametrize("template", CONVERSIONS)
def test_conversions_cannot_fail_on_a_hidden_value(run_sql, template: str) -> None:  # type: ignore[no-untyped-def]
    _same_outcome(run_sql, template)


def test_escape_takes_one_character(make_ctx) -> None:  # type: ignore[no-untyped-def]
    _refused(make_ctx, "flights-aggregate", "SELECT origin, count(*) AS n FROM flights WHERE "
             "carrier LIKE 'U%' ESCAPE 'ab' GROUP BY origin", "not_analyzable")


GROWTH = [
    f"SELECT origin, count(*) AS n FROM flights WHERE lpad('a', CASE WHEN {ONE} AND "
    "dep_delay > 2 THEN 2000000000 ELSE 1 END, 'b') <> '' GROUP BY origin",
    f"SELECT rpad('a', CASE WHEN {ONE} THEN 2000000000 ELSE 1 END, 'b') AS k, count(*) AS n "
    "FROM flights GROUP BY 1",
    "WITH c AS (SELECT origin, lpad('a', CAST(dep_delay AS INT) * 100000, 'b') AS p FROM "
    "flights) SELECT origin, count(*) AS n FROM c WHERE p <> '' GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE lpad('a', 200000, 'b') <> '' "
    "GROUP BY origin",
    "WITH a AS (SELECT origin, carrier || carrier AS x FROM flights), b AS (SELECT origin, "
    "x || x AS x FROM a), c AS (SELECT origin, x || x AS x FROM b), d AS (SELECT origin, "
    "x || x AS x FROM c), e AS (SELECT origin, x || x AS x FROM d), f AS (SELECT origin, "
    "x || x AS x FROM e), g AS (SELECT origin, x || x AS x FROM f) "
    "SELECT origin, count(*) AS n FROM g WHERE length(x) > 3 GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE length(replace(replace(replace(carrier, "
    "'U', 'UUUUUUUUUU'), 'U', 'UUUUUUUUUU'), 'U', 'UUUUUUUUUU')) > 1 GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE length(replace(carrier, carrier, "
    "'x')) > 1 GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE length(concat(carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, carrier, "
    "carrier, carrier)) > 1 GROUP BY origin",
]


@pytest.mark.parametrize("sql", GROWTH)
def test_values_that_could_exhaust_memory_are_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx("flights-aggregate"))
    assert info.value.code in ("too_complex", "not_analyzable"), info.value.message


def test_regexp_replace_is_not_in_aggregate_mode(make_ctx) -> None:  # type: ignore[no-untyped-def]
    _refused(make_ctx, "flights-aggregate", "SELECT origin, count(*) AS n FROM flights WHERE "
             "length(regexp_replace(carrier, '', 'xx', 'g')) > 1 GROUP BY origin",
             "not_analyzable")


def test_constant_padding_still_answers(run_sql) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql("flights-aggregate", "SELECT lpad(CAST(month AS VARCHAR), 2, '0') AS m, "
                         "count(*) AS n FROM flights GROUP BY 1 ORDER BY 1")
    assert [r["m"] for r in rows][:3] == ["01", "02", "03"]


@pytest.mark.parametrize("window", [
    "lag(x, 1) OVER (ORDER BY rn)", "lead(x, 3) OVER (ORDER BY rn)",
    "first_value(x) OVER (ORDER BY rn ROWS BETWEEN 5 PRECEDING AND CURRENT ROW)",
    "last_value(x) OVER (ORDER BY rn ROWS BETWEEN CURRENT ROW AND 5 FOLLOWING)",
    "nth_value(x, 2) OVER (ORDER BY rn ROWS BETWEEN 5 PRECEDING AND CURRENT ROW)",
])
def test_windows_that_pack_other_rows_are_refused(make_ctx, window: str) -> None:  # type: ignore[no-untyped-def]
    sql = ("WITH r AS (SELECT concat_ws('|', month, day, carrier, tailnum, dep_delay) AS x, "
           "row_number() OVER (ORDER BY month, day, sched_dep_time) AS rn FROM flights) "
           f"SELECT rn, concat_ws(';', x, {window}) AS packed FROM r")
    _refused(make_ctx, "flights-records", sql, "forbidden_function")
