"""Round seven of the outside attack (README and API only), each hit turned into its class.

- *the bound counted*: sums of computed values ignore values beyond ±1e15, but rows
  pushed past it by ``x + (t - c) * 1e20`` still counted towards k: one flight's delay;
- *absorption*: ``(x + (t - c) * 1e20) - (t - c) * 1e20 + 1`` is ``x + 1`` on one row and
  exactly 1 on every other (x lost to rounding next to 1e20): a selector from arithmetic;
- *many-to-many through a lookup*: ``flights f JOIN planes p ... JOIN flights f2 ON
  f2.tailnum = p.tailnum``: each join was one-sided alone;
- *records packed by window frames* (``max(...) OVER (ROWS 1 FOLLOWING ...)``) and by
  pivots (``max(CASE WHEN rn % 23 = j THEN concat_ws(...) END) GROUP BY rn // 23``): the
  whole JFK table under a 5,000-row cap;
- *presence at exactly k* (five hand-picked flights appear only if five aircraft flew
  them): the threshold itself; documented for exact mode, kept as a strict xfail.
"""

from __future__ import annotations

import pytest

from gateway.errors import QueryRejected
from gateway.rewrite import rewrite

FA, FR = "flights-aggregate", "flights-records"
DAY = "month = 1 AND day = 1"


def _code(make_ctx, scenario: str, sql: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(scenario))
    return info.value.code


BIG_TERMS = [
    f"SELECT sum(arr_delay + (dep_time - 517) * 1e20) AS s FROM flights WHERE {DAY}",
    f"SELECT avg(dep_delay + (dep_time - 542) * 1e20) AS s FROM flights WHERE {DAY}",
    f"SELECT sum((arr_delay + (dep_time - 1230) * 1e20) - (dep_time - 1230) * 1e20 + 1) AS s "
    f"FROM flights WHERE {DAY}",
    f"SELECT sum((arr_delay / 1e20 + dep_time) * 1e20) AS s FROM flights WHERE {DAY}",
    f"SELECT sum(arr_delay * 100 * 100 * 100) AS s FROM flights WHERE {DAY}",
    f"SELECT sum(arr_delay + 1e9) AS s FROM flights WHERE {DAY}",
    f"SELECT sum(arr_delay * (1e3 * 1e3)) AS s FROM flights WHERE {DAY}",
    f"SELECT sum(arr_delay * CAST('1e20' AS DOUBLE)) AS s FROM flights WHERE {DAY}",
    f"SELECT sum(arr_delay * '1e20') AS s FROM flights WHERE {DAY}",
    f"WITH c AS (SELECT 1e20 AS big, arr_delay FROM flights WHERE {DAY}) "
    "SELECT sum(arr_delay * big) AS s FROM c",
    f"WITH c AS (SELECT arr_delay * 1e3 AS a FROM flights WHERE {DAY}) "
    "SELECT sum(a * 1e3) AS s FROM c",
    f"SELECT sum(CASE WHEN dep_delay > 0 THEN arr_delay + (dep_time - 517) * 1e20 ELSE 0 END) "
    f"AS s FROM flights WHERE {DAY}",
    f"SELECT var_pop(arr_delay + (dep_time - 517) * 1e20) AS s FROM flights WHERE {DAY}",
    "SELECT sum(f.arr_delay + (p.year - 1976) * 1e20) AS s FROM flights f JOIN planes p "
    "ON f.tailnum = p.tailnum",
]


@pytest.mark.parametrize("sql", BIG_TERMS)
def test_huge_constants_inside_aggregates_are_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, FA, sql) == "isolating_aggregate"


@pytest.mark.parametrize("sql", [
    f"SELECT sum(distance * 1.609 / 60) AS km_h, avg(air_time / 60.0) AS hours FROM flights "
    f"WHERE {DAY}",
    f"SELECT avg((arr_delay - dep_delay) / 60) AS gained FROM flights WHERE {DAY}",
    f"SELECT sum(CASE WHEN dep_delay > 0 THEN dep_delay * 60 ELSE 0 END) AS s FROM flights "
    f"WHERE {DAY}",
    f"SELECT sum(((arr_delay * 1e-4 + (dep_time - 1230)) - (dep_time - 1230)) * 1e4) AS s "
    f"FROM flights WHERE {DAY}",
])
def test_modest_scales_still_answer(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql(FA, sql)
    assert rows and all(v is not None for v in rows[0].values())


def test_rows_ignored_by_the_bound_do_not_count_towards_k(make_ctx) -> None:  # type: ignore[no-untyped-def]
    # The count of rows that moved a sum is bounded like the sum itself.
    rewritten = rewrite(f"SELECT sum(dep_delay / 60) AS s FROM flights WHERE {DAY}",
                        make_ctx(FA))
    assert "<= 1000000000000000.0" in rewritten.sql.split("__dsb_n")[0].rsplit("LEAST", 1)[1]


MANY_TO_MANY = [
    "SELECT count(*) AS n FROM flights f JOIN planes p ON f.tailnum = p.tailnum "
    "JOIN flights f2 ON f2.tailnum = p.tailnum",
    "SELECT count(*) AS n FROM flights f JOIN airlines a ON f.carrier = a.carrier "
    "JOIN flights f2 ON f2.carrier = a.carrier",
    "SELECT count(*) AS n FROM flights f JOIN airports b ON f.dest = b.faa "
    "JOIN flights f3 ON f3.dest = b.faa",
    "SELECT count(*) AS n FROM flights f JOIN planes p USING (tailnum) "
    "JOIN flights f2 USING (tailnum)",
    "SELECT count(*) AS n FROM airlines a JOIN flights f USING (carrier) "
    "JOIN flights f2 USING (carrier)",
    "SELECT count(*) AS n FROM flights f JOIN airlines a ON f.carrier = a.carrier "
    "JOIN flights f2 ON f2.carrier = a.carrier JOIN airports b ON f2.dest = b.faa "
    "JOIN flights f3 ON f3.dest = b.faa",
    "SELECT count(*) AS n FROM planes p JOIN flights f ON f.tailnum = p.tailnum "
    "JOIN flights f2 ON f2.tailnum = p.tailnum",
    "SELECT count(*) AS n FROM flights f JOIN weather w ON w.origin = f.origin "
    "AND w.time_hour = f.time_hour JOIN flights f2 ON f2.origin = w.origin "
    "AND f2.time_hour = w.time_hour",
]


@pytest.mark.parametrize("sql", MANY_TO_MANY)
def test_many_to_many_through_a_lookup_is_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, FA, sql) == "forbidden_join"


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM planes p JOIN flights f ON f.tailnum = p.tailnum "
    "JOIN airlines a ON a.carrier = f.carrier",
    "SELECT count(*) AS n FROM flights f JOIN planes p ON f.tailnum = p.tailnum "
    "JOIN weather w ON w.origin = f.origin AND w.time_hour = f.time_hour "
    "JOIN airports a ON a.faa = f.dest",
])
def test_chains_of_lookups_still_answer(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql(FA, sql)
    assert rows and rows[0]["n"] > 0


FIELDS = "concat_ws('|', month, day, sched_dep_time, carrier, dest, tailnum, dep_delay)"
ORDERED = "(SELECT row_number() OVER (ORDER BY month, day, sched_dep_time) AS rn, * FROM flights)"
PACKED = [
    f"SELECT rn, max({FIELDS}) OVER (w ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING) AS p "
    f"FROM {ORDERED} AS t WINDOW w AS (ORDER BY rn)",
    f"SELECT rn, min({FIELDS}) OVER (ORDER BY rn ROWS BETWEEN 2 FOLLOWING AND 2 FOLLOWING) AS p "
    f"FROM {ORDERED} AS t",
    f"SELECT rn, any_value({FIELDS}) OVER (ORDER BY rn ROWS 1 PRECEDING) AS p FROM {ORDERED} AS t",
    f"SELECT rn, first({FIELDS}) OVER (ORDER BY rn ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING) "
    f"AS p FROM {ORDERED} AS t",
    f"SELECT rn, max(CASE WHEN rn % 2 = 0 THEN {FIELDS} END) OVER (ORDER BY rn) AS p "
    f"FROM {ORDERED} AS t",
    f"SELECT rn, sum(dep_delay) OVER (ORDER BY rn ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING) "
    f"AS p FROM {ORDERED} AS t",
    f"SELECT rn // 3 AS g, max(CASE WHEN rn % 3 = 0 THEN {FIELDS} END) AS r0, "
    f"max(CASE WHEN rn % 3 = 1 THEN {FIELDS} END) AS r1 FROM {ORDERED} AS t GROUP BY g",
    f"SELECT rn // 3 AS g, arg_max({FIELDS}, rn) AS r0 FROM {ORDERED} AS t GROUP BY g",
    f"SELECT rn // 3 AS g, min(dest || tailnum) AS r0 FROM {ORDERED} AS t GROUP BY g",
    f"WITH p AS (SELECT rn, {FIELDS} AS rec FROM {ORDERED} AS t) "
    "SELECT rn // 3 AS g, max(rec) AS r FROM p GROUP BY g",
    f"SELECT rn // 3 AS g, arg_min(dest, CASE WHEN rn % 3 = 1 THEN 0 ELSE 1 END) AS r "
    f"FROM {ORDERED} AS t GROUP BY g",
]


@pytest.mark.parametrize("sql", PACKED)
def test_records_are_not_packed_by_windows_or_pivots(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, FR, sql) in {"forbidden_function", "row_level_aggregate"}


@pytest.mark.parametrize("sql", [
    "SELECT row_number() OVER (PARTITION BY carrier ORDER BY dep_delay) AS r, carrier, "
    "dep_delay FROM flights LIMIT 10",
    "SELECT rank() OVER (ORDER BY dep_delay) AS r, count(*) OVER () AS n FROM flights LIMIT 10",
    "SELECT carrier, max(dep_delay) AS m, min(dest) AS d, arg_max(dest, dep_delay) AS worst "
    "FROM flights GROUP BY carrier",
    "WITH r AS (SELECT carrier, sum(distance) AS miles FROM flights GROUP BY carrier) "
    "SELECT max(miles) AS most FROM r",
])
def test_ordinary_records_queries_still_answer(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql(FR, sql)
    assert rows


@pytest.mark.xfail(strict=True, reason="open (issue 14): whether a group appears is the "
                   "k threshold itself; exact mode documents it (README, guarantees)")
def test_presence_of_hand_picked_rows_says_nothing(run_sql) -> None:  # type: ignore[no-untyped-def]
    # 809 and 1234 on 2 Jan are one aircraft (N304JB); 42 and 126 are not.
    same = "dep_time IN (809, 1234, 458, 535, 536)"
    apart = "dep_time IN (42, 126, 458, 535, 536)"
    answers = []
    for picked in (same, apart):
        rows, _, _ = run_sql(FA, f"SELECT count(*) AS n FROM flights WHERE month = 1 AND "
                             f"day = 2 AND {picked}")
        answers.append(bool(rows))
    assert answers[0] == answers[1]
