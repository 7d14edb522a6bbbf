"""Generated probe of function totality in aggregate mode (run by ``test_totality.py``).

For every function DuckDB knows (``duckdb_functions()``), every signature whose
parameters can be built from a column or a literal, and every operator and special form
of the allow-list, the probe writes a call with data-dependent arguments, asks the
rewriter whether a user may send it under an aggregate scenario, and when it may, runs
the rewritten statement twice: on a table holding ordinary rows and one row of extreme
values per type (zero, limits, NaN, infinities, empty and odd strings, far dates), and on
the same table empty. A statement that binds and runs on the empty table but fails on the
data fails because of a value: an error oracle. It is reported with the statement.

It also checks the classification in ``allowlists``: a function called *total* must not
fail on any of these values even without the rewriter's ``try()``.

Run in a subprocess: a DuckDB crash on a hostile call must fail the test, not the test
run. Prints one JSON object per line (``finding``, ``progress``, ``summary``).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from gateway.errors import DsbError, QueryRejected
from gateway.policy.models import Dataset, Scenario
from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.allowlists import total_function
from gateway.rewrite.parse_statement import parse
from sandbox.engine import DatasetMount, EngineLimits, open_engine

COLUMNS: dict[str, str] = {
    "g": "INTEGER", "i": "BIGINT", "d": "DOUBLE", "n": "DECIMAL(18,3)", "s": "VARCHAR",
    "f": "BOOLEAN", "dt": "DATE", "ts": "TIMESTAMP", "pd": "DOUBLE", "pt": "TIMESTAMP",
}
# Public columns (order statistics may read them), with extreme values too.
PUBLIC = {"g", "pd", "pt"}
# Per column: literals that make functions fail (limits, zero, NaN, odd text, far dates).
EXTREMES: dict[str, list[str]] = {
    "i": ["0", "-1", "1", "9223372036854775807", "-9223372036854775808", "2147483648", "64",
          "-2147483649", "1000000", "NULL"],
    "d": ["0", "-1", "1e300", "-1e300", "'nan'::DOUBLE", "'inf'::DOUBLE", "'-inf'::DOUBLE",
          "1e-300", "0.5", "9.3e18", "-9.3e18", "NULL"],
    "n": ["0", "-1", "999999999999999.999", "-999999999999999.999", "0.001", "NULL"],
    "s": ["''", "'a'", "'('", "'%'", "'\\'", "'[z-a]'", "'2024-13-45'", "'99999999999'",
          "'-1'", "'nan'", "'%Q'", "'year'", "'zzz'", "repeat('x', 5000)", "'é'", "NULL"],
    "f": ["true", "false", "NULL"],
    "dt": ["'infinity'::DATE", "'-infinity'::DATE", "'5877642-06-25'::DATE",
           "'5877641-06-25 (BC)'::DATE", "'1970-01-01'::DATE", "'2024-02-29'::DATE", "NULL"],
    "ts": ["'infinity'::TIMESTAMP", "'-infinity'::TIMESTAMP",
           "'294247-01-10 04:00:54.775806'::TIMESTAMP", "'290309-12-22 (BC) 00:00:00'::TIMESTAMP",
           "'1970-01-01 00:00:00'::TIMESTAMP", "NULL"],
}
EXTREMES["pd"] = EXTREMES["d"]
EXTREMES["pt"] = EXTREMES["ts"]
ORDINARY: dict[str, str] = {"i": "7", "d": "2.5", "n": "3.25", "s": "'abc'", "f": "true",
                            "dt": "'2013-06-01'::DATE", "ts": "'2013-06-01 08:30:00'::TIMESTAMP",
                            "pd": "4.5", "pt": "'2013-06-02 09:00:00'::TIMESTAMP"}
# Constants an attacker would put in the other arguments: the extremes and more.
CONSTANTS: dict[str, list[str]] = {
    "i": ["0", "-1", "9223372036854775807", "170141183460469231731687303715884105727",
          "-9223372036854775808", "100000"],
    "d": ["0", "1e300", "-1e300", "'nan'::DOUBLE", "'inf'::DOUBLE", "1e308"],
    "n": ["99999999999999999999999999999999999999::DECIMAL(38,0)", "0", "-0.001"],
    "s": ["''", "'('", "'%Q'", "'zzz'", "'\\'", "'[z-a]'", "'ab'"],
    "f": ["true"],
    "dt": ["'infinity'::DATE", "'5877642-06-25'::DATE"],
    "ts": ["'infinity'::TIMESTAMP", "'294247-01-10 04:00:54.775806'::TIMESTAMP"],
}
# DuckDB parameter types -> the probe column of that type (None: cannot be built).
TYPE_COLUMN: dict[str, str] = {
    "TINYINT": "i", "SMALLINT": "i", "INTEGER": "i", "BIGINT": "i", "HUGEINT": "i",
    "UTINYINT": "i", "USMALLINT": "i", "UINTEGER": "i", "UBIGINT": "i", "UHUGEINT": "i",
    "FLOAT": "d", "DOUBLE": "d", "DECIMAL": "n", "VARCHAR": "s", "BOOLEAN": "f", "DATE": "dt",
    "TIMESTAMP": "ts", "TIMESTAMP WITH TIME ZONE": "ts", "TIMESTAMP_S": "ts",
    "TIMESTAMP_MS": "ts", "TIMESTAMP_NS": "ts",
}
ANY_COLUMNS = ("i", "d", "s", "dt")
OPERATORS = ("+", "-", "*", "/", "//", "%", "**", "^", "||", "<<", ">>", "&", "|", "#")
CAST_TYPES = ("INTEGER", "BIGINT", "HUGEINT", "SMALLINT", "UBIGINT", "DOUBLE", "FLOAT",
              "DECIMAL(18,3)", "DECIMAL(38,0)", "VARCHAR", "BOOLEAN", "DATE", "TIMESTAMP",
              "INTERVAL", "TIME", "BLOB", "UUID")
K = 2


def policy() -> tuple[Scenario, Dataset]:
    columns = [{"name": "pid", "type": "VARCHAR", "sensitivity": "identifier"},
               {"name": "g", "type": "INTEGER", "sensitivity": "public"}]
    columns += [{"name": c, "type": t, "sensitivity": "public" if c in PUBLIC else "personal"}
                for c, t in COLUMNS.items() if c != "g"]
    dataset = Dataset.model_validate({
        "id": "probe", "title": "probe", "provider": {"id": "probe", "name": "probe"},
        "domain": "test", "summary": "totality probe", "class": "conditional",
        "update_frequency": "never", "version": "1", "entity_key": "pid", "columns": columns})
    scenario = Scenario.model_validate({
        "id": "probe-aggregate", "title": "probe", "mode": "aggregate", "k": K,
        "channels": ["api"], "query_auditing": False,
        "datasets": {"probe": {"columns": list(COLUMNS), "join_keys": ["g"]}}})
    return scenario, dataset


def write_tables(folder: Path) -> tuple[DatasetMount, DatasetMount]:
    """The probe table with data (ordinary rows, then one extreme row per index), and empty."""
    declared = ", ".join(["pid VARCHAR"] + [f"{c} {t}" for c, t in COLUMNS.items()])
    mounts = []
    for name, filled in (("full", True), ("empty", False)):
        path = folder / f"probe-{name}.duckdb"
        con = duckdb.connect(str(path))
        con.execute(f"CREATE TABLE data ({declared})")
        if filled:
            rows = [["'p" + str(e) + "'", "1", *ORDINARY.values()] for e in range(6)]
            depth = max(len(v) for v in EXTREMES.values())
            for j in range(depth):
                rows.append([f"'x{j}'", "2", *(EXTREMES[c][j % len(EXTREMES[c])]
                                             for c in ORDINARY)])
            for row in rows:
                con.execute(f"INSERT INTO data VALUES ({', '.join(row)})")
        con.close()
        mounts.append(DatasetMount("probe", path, None))
    return mounts[0], mounts[1]


def signatures() -> Iterator[tuple[str, str, list[str]]]:
    """(name, 'scalar'|'aggregate', parameter types) of every DuckDB function."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT DISTINCT function_name, function_type, parameter_types FROM duckdb_functions() "
        "WHERE function_type IN ('scalar', 'aggregate') ORDER BY 1, 2").fetchall()
    for name, kind, types in rows:
        yield name, kind, [str(t) for t in types]


def argument_choices(types: list[str]) -> Iterator[list[str]]:
    """Argument lists: all columns, then each position a constant with the others columns."""
    columns: list[list[str]] = []
    for t in types:
        base = t.split("(")[0]
        if base in TYPE_COLUMN:
            columns.append([TYPE_COLUMN[base]])
        elif base in ("ANY", "T", "") or len(base) == 1:
            columns.append(list(ANY_COLUMNS))
        else:
            return
    for combo in itertools.product(*columns):
        yield list(combo)
        # Columns of another type than declared: DuckDB may convert them row by row.
        for other in COLUMNS:
            if other != "g" and other not in combo:
                yield [other if c == combo[0] else c for c in combo]
        for position, column in enumerate(combo):
            for constant in CONSTANTS[column]:
                yield [*combo[:position], constant, *combo[position + 1:]]


def calls() -> Iterator[tuple[str, str, str]]:
    """(function name, kind, SQL of the call) to probe."""
    seen: set[str] = set()
    for name, kind, types in signatures():
        if not types or len(types) > 4:
            continue
        for args in argument_choices(types):
            if not any(a in COLUMNS for a in args):
                continue
            if name in OPERATORS or not name.replace("_", "").isalnum():
                if name in OPERATORS and len(args) == 2:
                    sql = f"({args[0]} {name} {args[1]})"
                elif name == "-" and len(args) == 1:
                    sql = f"(- {args[0]})"
                else:
                    continue
            else:
                sql = f"{name}({', '.join(args)})"
            if sql not in seen:
                seen.add(sql)
                yield name, kind, sql
    for column, (to, way) in itertools.product(ANY_COLUMNS + ("n", "f", "ts"),
                                              itertools.product(CAST_TYPES, ("CAST", "TRY_CAST"))):
        yield way.lower(), "scalar", f"{way}({column} AS {to})"
    for left, right in itertools.product(list(COLUMNS) + ["'x'", "1", "1.5"], list(COLUMNS)):
        for op in ("=", "<", ">=", "<>", "IS DISTINCT FROM"):
            yield op, "scalar", f"({left} {op} {right})"
        yield "in", "scalar", f"({right} IN ({left}, 1))"
        yield "between", "scalar", f"({right} BETWEEN {left} AND {left})"
        yield "coalesce", "scalar", f"coalesce({right}, {left})"
        yield "case", "scalar", f"CASE WHEN f THEN {left} ELSE {right} END"
    # Forms the signatures above do not write: constant texts, intervals, mixed types.
    for call in ("replace(s, 'a', 'bb')", "replace(s, '', 'x')", "replace(s, 'abc', '')",
                 "split_part(s, '-', i)", "split_part(s, s, 2)", "nullif(i, 0)",
                 "nullif(s, i)", "nullif(dt, ts)", "date_add(dt, INTERVAL (i) DAY)",
                 "date_add(ts, INTERVAL 1 DAY)", "date_add(dt, INTERVAL (d) HOUR)",
                 "time_bucket(INTERVAL 1 DAY, ts)", "time_bucket(INTERVAL (i) DAY, ts)"):
        yield call.split("(")[0], "scalar", call
    for column in sorted(PUBLIC):
        for order in ("min", "max", "median", "quantile_cont", "quantile_disc",
                      "approx_quantile", "percentile_cont", "percentile_disc"):
            quantile = order.startswith(("quantile", "approx", "percentile"))
            call = f"{order}({column}, 0.5)" if quantile else f"{order}({column})"
            yield order, "aggregate", call
    for pattern in ("s", "'a%'"):
        for escape in ("s", "''", "'ab'"):
            if "s" in (pattern, escape):
                yield "like", "scalar", f"(s LIKE {pattern} ESCAPE {escape})"
    yield "similar to", "scalar", "(s SIMILAR TO s)"
    yield "similar to", "scalar", "('abc' SIMILAR TO s)"
    for unit in ("DAY", "MONTH", "YEAR", "HOUR", "MICROSECOND"):
        for target in ("dt", "ts"):
            yield "interval", "scalar", f"({target} + INTERVAL (i) {unit})"
            yield "interval", "scalar", f"({target} + INTERVAL (d) {unit})"
    for part in ("s", "'year'", "'epoch'"):
        yield "extract", "scalar", f"date_part({part}, ts)"


def statements(kind: str, call: str) -> list[str]:
    """Aggregate-mode statements that evaluate ``call`` on every row."""
    if kind == "aggregate":
        inner = call[call.index("(") + 1:-1] if call.endswith(")") else ""
        out = [f"SELECT g, {call} AS v FROM probe GROUP BY g"]
        for column in sorted(COLUMNS):
            # The attacker's form: an extreme constant switched on by one row's value.
            for constant in CONSTANTS.get(column, []):
                if f"({column}" in f"({inner}" and inner.count(",") == 0:
                    out.append(f"SELECT g, {call.split('(')[0]}(CASE WHEN s = 'abc' THEN "
                               f"{constant} ELSE 0 END) AS v FROM probe GROUP BY g")
        return out
    return [f"SELECT g, count(*) AS n FROM probe WHERE {call} IS NOT NULL GROUP BY g",
            f"SELECT g, count({call}) AS n FROM probe GROUP BY g",
            f"SELECT g, sum(CASE WHEN {call} IS NULL THEN 1 ELSE 0 END) AS n FROM probe GROUP BY g"]


def outcome(con: duckdb.DuckDBPyConnection, sql: str) -> str | None:
    try:
        con.execute(sql).fetchall()
        return None
    except duckdb.Error as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    scenario, dataset = policy()
    ctx = RewriteContext(scenario, {"probe": dataset}, salt="probe-salt-0123456789abcdef")
    only = set(sys.argv[1:])
    with tempfile.TemporaryDirectory() as folder:
        full_mount, empty_mount = write_tables(Path(folder))
        limits = EngineLimits(timeout_ms=10_000)
        full = open_engine([full_mount], limits)
        empty = open_engine([empty_mount], limits)
        raw = duckdb.connect()
        raw.execute(f"ATTACH '{full_mount.path}' AS p (READ_ONLY)")
        raw.execute("CREATE VIEW probe AS SELECT * FROM p.data")
        raw.execute(f"ATTACH '{empty_mount.path}' AS e (READ_ONLY)")
        raw.execute("CREATE VIEW probe_empty AS SELECT * FROM e.data")
        counts = {"calls": 0, "statements": 0, "findings": 0}
        accepted_names: set[str] = set()
        covered: set[str] = set()  # sqlglot node classes (anonymous: names) accepted
        for name, kind, call in calls():
            if only and name not in only:
                continue
            counts["calls"] += 1
            for sql in statements(kind, call):
                try:
                    rewritten = rewrite(sql, ctx)
                except QueryRejected:
                    continue
                except DsbError as exc:
                    emit(kind="finding", rule="rewriter_error", function=name, sql=sql,
                         error=str(exc))
                    counts["findings"] += 1
                    continue
                counts["statements"] += 1
                accepted_names.add(name)
                node = _function_node(call)
                if node is not None:
                    covered.add(node.name.lower() if type(node).__name__ == "Anonymous"
                                else type(node).__name__)
                emit(kind="progress", sql=rewritten.sql)
                if outcome(empty, rewritten.sql) is not None:
                    continue  # fails on no data at all: a binding error, not an oracle
                error = outcome(full, rewritten.sql)
                if error is not None:
                    counts["findings"] += 1
                    emit(kind="finding", rule="data_dependent_error", function=name, sql=sql,
                         rewritten=rewritten.sql, error=error)
            # The classification: a function called total fails on no value, unwrapped.
            node = _function_node(call)
            if node is not None and total_function(node) and name in accepted_names:
                if outcome(raw, f"SELECT count({call}) FROM probe_empty") is None:
                    error = outcome(raw, f"SELECT count({call}) FROM probe")
                    if error is not None:
                        counts["findings"] += 1
                        emit(kind="finding", rule="total_function_fails", function=name,
                             sql=call, error=error)
        emit(kind="summary", accepted=sorted(accepted_names), covered=sorted(covered), **counts)
    return 0


def _function_node(call: str) -> Any:
    try:
        tree = parse(f"SELECT {call}")
    except DsbError:
        return None
    return tree.expressions[0].unalias() if tree.expressions else None


if __name__ == "__main__":
    sys.exit(main())
