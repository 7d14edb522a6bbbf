"""Round nine of the outside attack (README and API only): 5 hits, 3 root causes.

- *a row count in disguise*: ``sum(hour * 0 + 1)`` (a zero factor: now refused) or
  ``sum(year)`` (a column that is 2013 on every row) next to ``count(*)``: query auditing
  compares releases of one measure, and these are measured apart from row counts;
- *padding with rows of known value*: ``WHERE model = 'G1159B' OR arr_delay = 1`` adds
  rows whose delay the filter fixes, so two such sums solve for one aircraft's total;
- *dominance*: k counts aircraft, not their rows: one aircraft with 462 of 466 rows
  decides a median.

The first is closed for zero factors only; the three classes stay open in exact mode and
are kept as strict xfails (README, "what each mode guarantees"): exact mode is for data
whose entities are not people, and noise (with bounded contributions) is the fix.
"""

from __future__ import annotations

import pytest

from gateway.errors import DifferencingRisk, QueryRejected
from gateway.rewrite import rewrite

FA = "flights-aggregate"
JOINED = "FROM flights f JOIN planes p ON f.tailnum = p.tailnum"


@pytest.mark.parametrize("sql", [
    f"SELECT count(*) AS a, sum(f.month * 0 + 1) FILTER (WHERE p.model <> 'G1159B') AS b {JOINED}",
    f"SELECT sum(f.hour * 0) AS b {JOINED}",
    f"SELECT sum(f.minute * 0.0 + 1) AS b {JOINED}",
    "WITH z AS (SELECT 0 AS zero, hour FROM flights) SELECT sum(hour * zero + 1) AS b FROM z",
])
def test_zero_factors_are_refused(make_ctx, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(QueryRejected) as info:
        rewrite(sql, make_ctx(FA))
    assert info.value.code == "isolating_aggregate"


@pytest.mark.xfail(strict=True, reason="open (issue 14): a sum of a column with a known "
                   "value is a row count that auditing does not compare with count(*)")
def test_a_sum_of_a_constant_column_is_not_a_row_count(audited_sql) -> None:  # type: ignore[no-untyped-def]
    try:
        rows, _ = audited_sql(FA, f"SELECT count(*) AS a, sum(f.year) FILTER (WHERE p.model <> "
                              f"'G1159B') AS b {JOINED}")
    except DifferencingRisk:
        return
    assert round(rows[0]["a"] - rows[0]["b"] / 2013) != 486  # N711MQ's flights


@pytest.mark.xfail(strict=True, reason="open (issue 14): padding with rows whose value the "
                   "filter fixes; two sums solve for one aircraft")
def test_padding_with_known_values_does_not_solve_for_one_aircraft(audited_sql) -> None:  # type: ignore[no-untyped-def]
    answers = []
    try:
        for c in (1, 3):
            rows, _ = audited_sql(FA, f"SELECT sum(f.arr_delay) AS s, count(f.arr_delay) AS n "
                                  f"{JOINED} WHERE p.model = 'G1159B' OR f.arr_delay = {c}")
            answers.append((c, rows[0]["s"], rows[0]["n"]))
    except DifferencingRisk:
        return
    (c1, s1, n1), (c2, s2, n2) = answers
    # s = S + c * (n - n_t) for each: two equations in S and n_t.
    n_t = ((s2 - c2 * n2) - (s1 - c1 * n1)) / (c1 - c2)
    total = s1 - c1 * (n1 - n_t)
    assert round(total) != 2906  # N711MQ's arr_delay total


@pytest.mark.xfail(strict=True, reason="open (issue 14): k counts entities, not their rows; "
                   "one aircraft with most rows decides an order statistic")
def test_one_dominant_aircraft_does_not_decide_a_median(audited_sql) -> None:  # type: ignore[no-untyped-def]
    rows, _ = audited_sql(FA, f"SELECT median(f.arr_delay) AS med {JOINED} WHERE "
                          "p.model = 'G1159B' OR f.arr_delay < -75 OR f.arr_delay > 1000")
    assert not rows or rows[0]["med"] != -5  # N711MQ's own median
