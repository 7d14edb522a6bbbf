"""Attack classes on aggregate mode (SECURITY-NOTES "Known attack classes"), real DuckDB.

Each class in one of two forms: refused with a code a researcher can act on, or run
and its answer no longer reveals the isolated value. Differencing and trackers across
queries are refused by query auditing (more forms, and noise, in tests/privacy).
"""

from __future__ import annotations

import pytest

from gateway.errors import DifferencingRisk, QueryRejected
from gateway.rewrite import rewrite

TINY = "district = 'Chongming Islet'"  # a district with fewer than k residents

REFUSED: list[tuple[str, str, str]] = [
    ("rollup", "SELECT district, count(*) FROM residents GROUP BY ROLLUP (district)",
     "forbidden_grouping"),
    ("cube", "SELECT district, gender, count(*) FROM residents GROUP BY CUBE (district, gender)",
     "forbidden_grouping"),
    ("grouping sets", "SELECT district, count(*) FROM residents "
     "GROUP BY GROUPING SETS ((district), ())", "forbidden_grouping"),
    ("scalar subquery", "SELECT gender, count(*) FROM residents WHERE income > "
     "(SELECT avg(income) FROM residents WHERE " + TINY + ") GROUP BY gender",
     "forbidden_subquery"),
    ("in subquery", "SELECT gender, count(*) FROM residents WHERE district IN "
     "(SELECT district FROM residents WHERE income > 900000) GROUP BY gender",
     "forbidden_subquery"),
    ("order by row-level limit 1", "SELECT gender, count(*) FROM residents GROUP BY gender "
     "ORDER BY income DESC LIMIT 1", "order_by_not_output"),
    ("order by max limit 1", "SELECT gender, count(*) FROM residents GROUP BY gender "
     "ORDER BY max(income) DESC LIMIT 1", "row_level_aggregate"),
    ("nested aggregate", "SELECT avg(s) FROM (SELECT district, sum(income) AS s "
     "FROM residents GROUP BY district) AS t", "not_analyzable"),
    ("self join multiplies rows", "SELECT a.gender, count(*) FROM residents a "
     "JOIN residents b ON a.district = b.district GROUP BY a.gender", "forbidden_join"),
    ("greatest step", "SELECT gender, sum(greatest(income - 900000, 0)) AS s "
     "FROM residents GROUP BY gender", "isolating_aggregate"),
    ("nested case", "SELECT gender, sum(CASE WHEN income > 0 THEN CASE WHEN " + TINY +
     " THEN income ELSE 0 END ELSE 0 END) AS s FROM residents GROUP BY gender",
     "isolating_aggregate"),
    ("nullif isolation", "SELECT gender, avg(nullif(income, 0)) AS s FROM residents "
     "GROUP BY gender", "isolating_aggregate"),
    ("window", "SELECT gender, count(*) OVER () FROM residents", "row_level_aggregate"),
]


@pytest.mark.parametrize(("name", "sql", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_attack_refused(make_ctx, name: str, sql: str, code: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx("residents-aggregate-exact"))
    assert info.value.code == code
    assert len(str(info.value)) > 40  # says what to do, not just a code


@pytest.mark.parametrize("sql", [
    # FILTER isolating the tiny district: the filtered entities are counted.
    "SELECT gender, sum(income) FILTER (WHERE " + TINY + ") AS s FROM residents GROUP BY gender",
    # CASE with padding: each branch is counted.
    "SELECT gender, sum(CASE WHEN " + TINY + " THEN income ELSE 0 END) AS s "
    "FROM residents GROUP BY gender",
    # IF() is a CASE too.
    "SELECT gender, sum(IF(" + TINY + ", income, 0)) AS s FROM residents GROUP BY gender",
    # A comparison cast to 0/1 is an indicator: its branches are counted.
    "SELECT gender, sum(income * CAST(" + TINY + " AS INT)) AS s FROM residents GROUP BY gender",
    # Tiny group directly.
    "SELECT district, sum(income) AS s FROM residents WHERE " + TINY + " GROUP BY district",
])
def test_isolation_suppressed(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    rows, report, _ = run_sql("residents-aggregate-exact", sql)
    assert rows == []
    assert report.suppressed_groups >= 1


@pytest.mark.parametrize("guarded", [
    "ln(CASE WHEN " + TINY + " AND income > {t} THEN 0 ELSE 1 END)",
    "sqrt(CASE WHEN " + TINY + " AND income > {t} THEN -1 ELSE 1 END)",
    "100 / (CASE WHEN " + TINY + " AND income > {t} THEN 0 ELSE 1 END)",
    "9223372036854775807 * (CASE WHEN " + TINY + " AND income > {t} THEN 2 ELSE 1 END)",
])
def test_error_oracle_closed(run_sql, guarded: str) -> None:  # type: ignore[no-untyped-def]
    # Would raise iff the condition holds for some row; now never raises either way.
    for threshold in (0, 10**9):
        sql = ("SELECT gender, count(*) AS n FROM residents WHERE "
               f"{guarded.format(t=threshold)} IS NOT NULL OR TRUE GROUP BY gender")
        rows, _, _ = run_sql("residents-aggregate-exact", sql)
        assert rows


def test_join_multiplication_counts_entities(run_sql) -> None:  # type: ignore[no-untyped-def]
    # Groups of one aircraft each (its model, year and seats are rare) have many flights,
    # so many rows, but one entity: suppressed, while the common models are released.
    rows, report, _ = run_sql(
        "flights-aggregate",
        "SELECT p.manufacturer, p.model, p.year, p.seats, count(*) AS n "
        "FROM flights f JOIN planes p USING (tailnum) GROUP BY ALL")
    assert rows and report.suppressed_groups > 0
    assert all(row["n"] >= 5 for row in rows)


def test_differencing_refused(audited_sql) -> None:  # type: ignore[no-untyped-def]
    total, _ = audited_sql("residents-aggregate-exact", "SELECT sum(income) AS s FROM residents")
    # The second answer minus the first would be the tiny district's income: refused.
    with pytest.raises(DifferencingRisk) as info:
        audited_sql("residents-aggregate-exact",
                    "SELECT sum(income) AS s FROM residents WHERE NOT " + TINY)
    assert total and info.value.code == "differencing_risk"
    assert "fewer than k=10" in str(info.value)


def test_tracker_refused(audited_sql) -> None:  # type: ignore[no-untyped-def]
    a, _ = audited_sql("residents-aggregate-exact", "SELECT sum(income) AS s FROM residents "
                       "WHERE " + TINY + " OR gender = 'F'")
    with pytest.raises(DifferencingRisk) as info:
        audited_sql("residents-aggregate-exact", "SELECT sum(income) AS s FROM residents "
                    "WHERE gender = 'F'")
    assert a and info.value.code == "differencing_risk"
