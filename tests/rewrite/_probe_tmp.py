from gateway.errors import DsbError
from gateway.rewrite import rewrite
from gateway.rewrite.run import execute
from sandbox.engine import EngineLimits
def test_probe(make_ctx, demo_mounts):
    for e in ["lpad('x', CASE WHEN district = 'Chongming Islet' AND income > 0 THEN 5 ELSE 1 END, '')",
              "abs(CASE WHEN district = 'Chongming Islet' AND income > 0 THEN -9223372036854775807 - 1 ELSE 1 END)",
              "date_part(CASE WHEN district = 'Chongming Islet' AND income > 0 THEN 'bogus' ELSE 'year' END, DATE '2020-01-01')"]:
        r = rewrite(f"SELECT gender, count(*) AS n FROM residents WHERE coalesce(length(CAST(({e}) AS VARCHAR)), 0) >= 0 GROUP BY gender", make_ctx("residents-aggregate"))
        try:
            t, _ = execute(r, demo_mounts, EngineLimits(timeout_ms=20000))
            print("\nPROBE OK", t.to_pylist())
        except DsbError as x:
            print("\nPROBE", type(x).__name__, getattr(x, "detail", "")[:300]); print("SQL", r.display_sql[-700:])
