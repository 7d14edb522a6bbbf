"""Early-warning rules: a differencing pair is flagged; 200 ordinary queries are not."""

from __future__ import annotations

import datetime as dt
import random

from gateway.governance.warnings import JobView, Thresholds, evaluate, shape

T0 = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


def jobs(sqls: list[str], *, user: str = "acme-analyst", every_s: float = 30.0,
         status: str = "succeeded", code: str = "") -> list[JobView]:
    return [JobView(f"j{i}", user, "agr-a", sql, status, code,
                    T0 + dt.timedelta(seconds=i * every_s)) for i, sql in enumerate(sqls)]


def test_shape_replaces_where_literals_only() -> None:
    text, literals, ranged = shape(
        "SELECT district, avg(income) FROM residents WHERE age >= 41 AND district = 'A' "
        "GROUP BY district HAVING count(*) > 10")  # type: ignore[misc]
    assert text.count("?") == 2 and "> 10" in text
    assert literals == ("41", "A") and ranged == (True, False)


def test_differencing_pair_raises_a_warning() -> None:
    pair = ["SELECT sum(income) FROM residents WHERE age >= 40",
            "SELECT sum(income) FROM residents WHERE age >= 41"]
    found = evaluate(jobs(pair))
    assert [w.rule for w in found] == ["differencing"]
    assert found[0].jobs == ["j0", "j1"] and found[0].user == "acme-analyst"


def test_differencing_found_among_other_queries_and_with_between() -> None:
    sqls = ["SELECT count(*) FROM flights WHERE month = 3",
            "SELECT avg(income) FROM residents WHERE age BETWEEN 30 AND 50",
            "SELECT carrier, count(*) FROM flights GROUP BY carrier",
            "SELECT avg(income) FROM residents WHERE age BETWEEN 30 AND 51"]
    assert [w.rule for w in evaluate(jobs(sqls))] == ["differencing"]


def test_wide_range_changes_and_equality_filters_are_not_differencing() -> None:
    sqls = ["SELECT count(*) FROM flights WHERE dep_delay > 10",
            "SELECT count(*) FROM flights WHERE dep_delay > 60",
            "SELECT count(*) FROM flights WHERE carrier = 'AA'",
            "SELECT count(*) FROM flights WHERE carrier = 'UA'"]
    assert evaluate(jobs(sqls)) == []


def test_pairs_of_different_users_are_not_joined() -> None:
    a = jobs(["SELECT sum(income) FROM residents WHERE age >= 40"], user="lin")
    b = jobs(["SELECT sum(income) FROM residents WHERE age >= 41"], user="acme-analyst")
    assert evaluate(a + b) == []


def varied_workload(n: int, seed: int = 8) -> list[str]:
    """What analysts send: many shapes, filters on categories, widely spaced ranges."""
    rng = random.Random(seed)
    carriers = ["AA", "UA", "DL", "B6", "EV", "MQ", "US", "WN", "VX", "FL"]
    origins = ["JFK", "LGA", "EWR"]
    measures = ["avg(arr_delay)", "avg(dep_delay)", "count(*)", "sum(distance)",
                "max(air_time)", "min(dep_delay)", "avg(distance)"]
    groups = ["carrier", "origin", "month", "dest", "hour", "carrier, month", "origin, month"]
    out: set[str] = set()
    while len(out) < n:
        kind = rng.randrange(5)
        measure, group = rng.choice(measures), rng.choice(groups)
        if kind == 0:
            sql = f"SELECT {group}, {measure} FROM flights GROUP BY {group}"
        elif kind == 1:
            sql = (f"SELECT {group}, {measure} FROM flights WHERE carrier = "
                   f"'{rng.choice(carriers)}' GROUP BY {group}")
        elif kind == 2:
            sql = (f"SELECT {group}, {measure} FROM flights WHERE origin = "
                   f"'{rng.choice(origins)}' AND month = {rng.randint(1, 12)} GROUP BY {group}")
        elif kind == 3:  # ranges exist, but their bounds are far apart
            sql = (f"SELECT {group}, {measure} FROM flights WHERE dep_delay > "
                   f"{rng.choice([0, 15, 30, 60, 120, 240])} GROUP BY {group}")
        else:
            sql = (f"SELECT {measure} FROM weather WHERE origin = '{rng.choice(origins)}' "
                   f"AND temp < {rng.choice([0, 32, 50, 70, 90])}")
        out.add(sql)
    return sorted(out, key=lambda _: rng.random())


def test_two_hundred_varied_queries_raise_no_warning() -> None:
    workload = varied_workload(200)
    assert len(workload) == 200
    # One user, a query every 30 s for 100 minutes, a few of them rejected.
    views = jobs(workload)
    views[5] = JobView("j5", "acme-analyst", "agr-a", workload[5], "rejected",
                       "forbidden_column", views[5].at)
    assert evaluate(views) == []


def test_burst_rejections_and_security_rules() -> None:
    burst = jobs([f"SELECT count(*) FROM flights WHERE month = {i % 12 + 1}"
                  for i in range(70)], every_s=0.5)
    assert [w.rule for w in evaluate(burst)] == ["burst"]
    rejected = jobs(["SELECT * FROM residents"] * 25, status="rejected",
                    code="forbidden_column", every_s=60)
    assert [w.rule for w in evaluate(rejected)] == ["rejections"]
    failing = jobs(["SELECT 1"] * 3, status="failed", code="sandbox_failed", every_s=60)
    assert [w.rule for w in evaluate(failing, Thresholds())] == ["security"]
