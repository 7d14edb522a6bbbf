"""Round six of the outside attack (README and API only), each hit turned into its class.

Both hits used the masked entity key of ``flights-aggregate`` as a value, while every
release still covered at least k aircraft:

- *linkage*: next to ``count(*)``, ``count(DISTINCT tailnum)`` over eight hand-picked
  flights answered 7: two of them were flown by one aircraft;
- *the hash itself*: half-splits on ``tailnum < 'X'`` against a known flight read its
  masked hash out bit by bit (16 bits in about 10 queries).

The class: in aggregate mode an identifying column (entity key, hash-masked, declared
``identifier``), wherever it is renamed, only joins tables, is tested for NULL, or is
counted without DISTINCT (``gateway/rewrite/identifying_columns.py``).
"""

from __future__ import annotations

import pytest

from gateway.errors import QueryRejected
from gateway.rewrite import rewrite

FA = "flights-aggregate"
PICKED = ("(month = 1 AND day = 1 AND origin = 'JFK' AND sched_dep_time BETWEEN 540 AND 600) "
          "OR (month = 1 AND day = 2 AND origin = 'JFK' AND sched_dep_time BETWEEN 540 AND 600)")

LINKAGE = [
    f"SELECT count(*) AS n, count(DISTINCT tailnum) AS planes FROM flights WHERE {PICKED}",
    f"SELECT count(*) AS n, approx_count_distinct(tailnum) AS planes FROM flights WHERE {PICKED}",
    f"SELECT entropy(tailnum) AS e FROM flights WHERE {PICKED}",
    f"SELECT count(DISTINCT tailnum || '') AS planes FROM flights WHERE {PICKED}",
    f"SELECT count(DISTINCT upper(tailnum)) AS planes FROM flights WHERE {PICKED}",
    f"SELECT count(DISTINCT (tailnum, carrier)) AS planes FROM flights WHERE {PICKED}",
    f"WITH t AS (SELECT tailnum AS plane, origin FROM flights WHERE {PICKED}) "
    "SELECT origin, count(DISTINCT plane) AS planes FROM t GROUP BY origin",
    f"SELECT p.model, count(DISTINCT f.tailnum) AS planes FROM flights AS f JOIN planes AS p "
    f"ON f.tailnum = p.tailnum WHERE {PICKED.replace('origin', 'f.origin')} GROUP BY p.model",
    f"WITH d AS (SELECT DISTINCT tailnum, origin FROM flights WHERE {PICKED}) "
    "SELECT origin, count(*) AS planes FROM d GROUP BY origin",
    f"SELECT origin, count(*) AS n FROM flights WHERE {PICKED} GROUP BY origin "
    "HAVING count(DISTINCT tailnum) > 5",
    f"WITH per AS (SELECT tailnum, count(*) AS n FROM flights WHERE {PICKED} GROUP BY tailnum) "
    "SELECT max(n) AS most FROM per",
    f"SELECT tailnum, count(*) AS n FROM flights WHERE {PICKED} GROUP BY tailnum",
    f"SELECT count(*) AS n FROM flights WHERE {PICKED} GROUP BY ALL HAVING count(tailnum) > 0 "
    "ORDER BY count(DISTINCT tailnum)",
]

HASH_BITS = [
    "SELECT origin, count(*) AS n FROM flights WHERE tailnum < '8' GROUP BY origin",
    "SELECT tailnum < '8' AS half, count(*) AS n FROM flights GROUP BY 1",
    "SELECT origin, count(*) FILTER (WHERE tailnum >= '8') AS n FROM flights GROUP BY origin",
    "SELECT origin, sum(CASE WHEN tailnum < '8' THEN 1 ELSE 0 END) AS n FROM flights "
    "GROUP BY origin",
    "SELECT origin, sum(CAST(tailnum < '8' AS INT)) AS n FROM flights GROUP BY origin",
    "SELECT origin, avg((tailnum LIKE 'a%')::INT) AS n FROM flights GROUP BY origin",
    "SELECT left(tailnum, 1) AS first, count(*) AS n FROM flights GROUP BY 1",
    "SELECT origin, count(*) AS n FROM flights WHERE ascii(tailnum) % 2 = 0 GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE hash(tailnum) % 2 = 0 GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE tailnum IN ('0a', '0b') GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE tailnum = '0123456789abcdef' "
    "OR carrier = 'UA' GROUP BY origin",
    "WITH t AS (SELECT tailnum AS x, origin FROM flights) "
    "SELECT origin, count(*) AS n FROM t WHERE x < '8' GROUP BY origin",
    "WITH t AS (SELECT tailnum AS x, origin FROM flights), u AS (SELECT x AS y, origin FROM t) "
    "SELECT origin, count(*) FILTER (WHERE y BETWEEN '0' AND '8') AS n FROM u GROUP BY origin",
    "SELECT origin, count(*) AS n FROM flights WHERE tailnum IS DISTINCT FROM '0a' "
    "GROUP BY origin",
    "SELECT f.origin, count(*) AS n FROM flights AS f JOIN planes AS p "
    "ON f.tailnum = p.tailnum AND p.tailnum < '8' GROUP BY f.origin",
    "SELECT f.origin, count(*) AS n FROM flights AS f JOIN planes AS p "
    "ON f.tailnum = p.model GROUP BY f.origin",
    "SELECT manufacturer, count(*) AS n FROM planes WHERE tailnum < '8' GROUP BY manufacturer",
    "SELECT origin, sum(TRY_CAST(tailnum AS DOUBLE)) AS s FROM flights GROUP BY origin",
    "SELECT origin, sum(length(tailnum)) AS s FROM flights GROUP BY origin",
    "SELECT origin, sum(CAST(f.tailnum = p.tailnum AS INT)) AS s FROM flights AS f "
    "JOIN planes AS p ON f.tailnum = p.tailnum GROUP BY origin",
]


def _code(make_ctx, sql: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(FA))
    return info.value.code


# Some are caught earlier, by the rule for values inside aggregates or the allow-list.
REFUSED = {"identifying_column", "isolating_aggregate", "forbidden_function"}


def test_the_reported_linkage_is_refused_as_identifying(make_ctx) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, LINKAGE[0]) == "identifying_column"
    assert _code(make_ctx, HASH_BITS[0]) == "identifying_column"


@pytest.mark.parametrize("sql", LINKAGE)
def test_distinct_counts_of_the_entity_key_are_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, sql) in REFUSED


@pytest.mark.parametrize("sql", HASH_BITS)
def test_conditions_on_the_masked_key_are_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    assert _code(make_ctx, sql) in REFUSED


@pytest.mark.parametrize("sql", [
    "SELECT min(tailnum) AS m FROM flights",
    "SELECT mode(tailnum) AS m FROM flights",
    "SELECT arg_max(tailnum, dep_delay) AS m FROM flights",
    "SELECT string_agg(tailnum, ',') AS m FROM flights",
    "SELECT list(tailnum) AS m FROM flights",
])
def test_values_of_the_key_are_never_released(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected):
        rewrite(sql, make_ctx(FA))


@pytest.mark.parametrize("sql", [
    "SELECT p.manufacturer, count(*) AS n, avg(f.arr_delay) AS d FROM flights AS f "
    "JOIN planes AS p ON f.tailnum = p.tailnum GROUP BY p.manufacturer",
    "SELECT p.engines, count(*) AS n FROM flights AS f JOIN planes AS p USING (tailnum) "
    "GROUP BY p.engines",
    "SELECT origin, count(tailnum) AS n, count(*) FILTER (WHERE tailnum IS NOT NULL) AS known "
    "FROM flights GROUP BY origin",
    "WITH f AS (SELECT tailnum, origin FROM flights), p AS (SELECT tailnum, seats "
    "FROM planes) SELECT f.origin, avg(p.seats) AS seats FROM f JOIN p ON f.tailnum = p.tailnum "
    "GROUP BY f.origin",
    "SELECT origin, count(*) AS n FROM flights WHERE tailnum IS NOT NULL GROUP BY origin",
])
def test_joins_and_null_tests_on_the_key_still_answer(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql(FA, sql)
    assert rows


@pytest.mark.parametrize("sql", [
    "SELECT 'x' || carrier AS c, count(*) AS n FROM flights GROUP BY carrier",
    "SELECT CAST(carrier AS INT) AS c, count(*) AS n FROM flights GROUP BY carrier",
    "SELECT CAST(dest AS INT) + count(*) AS c FROM flights GROUP BY dest",
    "SELECT upper(carrier) AS c, count(*) AS n FROM flights GROUP BY upper(carrier)",
    "SELECT origin, count(*) AS n FROM flights GROUP BY origin "
    "HAVING TRY_CAST(origin AS INT) IS NULL ORDER BY 1",
    "SELECT CAST(hour AS VARCHAR) || 'h' AS h, avg(dep_delay) AS d FROM flights GROUP BY hour "
    "ORDER BY CAST(hour AS VARCHAR) || 'h'",
    "SELECT CASE WHEN carrier = 'UA' THEN 'united' ELSE CAST(carrier AS INT) END AS c, "
    "count(*) AS n FROM flights GROUP BY carrier",
    "SELECT CAST(carrier AS INT) AS c, count(*) AS n FROM flights GROUP BY carrier "
    "HAVING CAST(carrier AS INT) IS NULL ORDER BY CAST(carrier AS INT)",
])
def test_expressions_of_group_keys_run(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    # Round 6 oddity: TRY() around a group key failed to bind in DuckDB (an internal
    # error, execution_failed); the same value is now computed under ANY_VALUE.
    rows, _, _ = run_sql(FA, sql)
    assert rows


@pytest.mark.parametrize("sql", [
    "SELECT carrier, count(*) AS n FROM flights GROUP BY carrier HAVING CAST(dest AS INT) IS NULL",
    "SELECT carrier, count(*) AS n FROM flights GROUP BY carrier HAVING 'x' || dest = 'xIAH'",
])
def test_having_never_reads_a_column_outside_the_group_keys(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    # ANY_VALUE() is added around group keys in the select list only: in HAVING it would
    # turn one row's value of a non-grouped column into a condition on the group.
    with pytest.raises(QueryRejected) as info:
        run_sql(FA, sql)
    assert info.value.code == "not_aggregated"
