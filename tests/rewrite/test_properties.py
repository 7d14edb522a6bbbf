"""Property-based tests over the demo scenarios (hypothesis).

For generated queries (random columns, allowed or not, aggregates, filters, nesting,
quoting, case and comments): either a rejection with a known code, or rewritten SQL that

- re-parses to itself (what DuckDB runs is what the rewriter analysed), and
- references no forbidden column: outside the source views no column of a dataset
  that the scenario does not allow; inside a source view only allowed columns, the
  row filter's columns, and the entity key inside the hidden keyed hash.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from gateway.errors import QueryRejected
from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.context import RESERVED_PREFIX

SCENARIOS = ["flights-aggregate", "flights-records", "residents-aggregate",
             "residents-aggregate-exact", "residents-sandbox"]
KNOWN_CODES = {
    "parse_error", "not_a_query", "multiple_statements", "unknown_table", "forbidden_column",
    "forbidden_function", "forbidden_syntax", "not_aggregated", "row_level_aggregate",
    "forbidden_grouping", "forbidden_join", "forbidden_subquery", "reserved_name",
    "isolating_aggregate", "not_analyzable", "noise_unsupported", "order_by_not_output",
    "too_complex", "identifying_column",
}
MAIN = {"flights-aggregate": "flights", "flights-records": "flights",
        "residents-aggregate": "residents", "residents-aggregate-exact": "residents",
        "residents-sandbox": "residents"}
COLUMNS = {
    "flights": ["year", "month", "day", "dep_time", "dep_delay", "arr_delay", "carrier",
                "flight", "tailnum", "origin", "dest", "air_time", "distance", "hour"],
    "residents": ["resident_id", "name", "phone", "district", "birth_date", "age", "gender",
                  "occupation", "household_size", "income"],
}


def _ident(draw: st.DrawFn, name: str) -> str:
    style = draw(st.sampled_from(["plain", "upper", "quoted", "mixed"]))
    if style == "upper":
        return name.upper()
    if style == "quoted":
        return f'"{name}"'
    if style == "mixed":
        return f'"{name.capitalize()}"'
    return name


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, str]:
    scenario = draw(st.sampled_from(SCENARIOS))
    table = MAIN[scenario]
    cols = COLUMNS[table]
    alias = draw(st.sampled_from(["", " AS t", " t"]))
    q = "t." if alias and draw(st.booleans()) else ""

    def col() -> str:
        return q + _ident(draw, draw(st.sampled_from(cols)))

    def item() -> str:
        kind = draw(st.sampled_from(["col", "agg", "expr", "case", "count", "star"]))
        if kind == "col":
            return col()
        if kind == "agg":
            fn = draw(st.sampled_from(["sum", "avg", "count", "min", "max", "stddev", "list"]))
            return f"{fn}({col()})"
        if kind == "expr":
            return f"({col()} + 1) AS x{draw(st.integers(0, 9))}"
        if kind == "case":
            return f"sum(CASE WHEN {col()} IS NULL THEN 0 ELSE 1 END)"
        if kind == "count":
            return "count(*)"
        return "*"

    items = draw(st.lists(st.builds(lambda: None), min_size=1, max_size=4))
    select = ", ".join(item() for _ in items)
    sql = f"SELECT {select} FROM {_ident(draw, table)}{alias}"
    if draw(st.booleans()):
        sql += f" WHERE {col()} IS NOT NULL"
    if draw(st.booleans()):
        sql += f" GROUP BY {col()}"
    wrap = draw(st.sampled_from(["none", "cte", "subquery", "union", "comment"]))
    if wrap == "cte":
        sql = (f"WITH {table} AS (SELECT * FROM {table}) "
               f"SELECT {select} FROM {table}{alias}")
    elif wrap == "subquery":
        sql = f"SELECT count(*) FROM ({sql}) AS s"
    elif wrap == "union":
        sql = f"{sql} UNION ALL {sql}"
    elif wrap == "comment":
        sql = sql.replace(" FROM ", " /* c */ FROM ", 1) + " -- end"
    return scenario, sql


def _check_source_view(view: exp.Select, ctx: RewriteContext, dataset_id: str) -> None:
    grant = ctx.scenario.datasets[dataset_id]
    key = ctx.datasets[dataset_id].entity_key
    filter_columns = set()
    if grant.row_filter:
        filter_columns = {c.name for c in sqlglot.parse_one(grant.row_filter).find_all(exp.Column)}
    for projection in view.expressions:
        hidden = projection.alias_or_name.startswith(RESERVED_PREFIX)
        for column in projection.find_all(exp.Column):
            assert column.name in grant.columns or (hidden and column.name == key), column
    where = view.args.get("where")
    for column in where.find_all(exp.Column) if where else []:
        assert column.name in filter_columns


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_rewritten_sql_is_stable_and_clean(
    make_ctx: Callable[[str], RewriteContext], case: tuple[str, str]
) -> None:
    scenario_id, sql = case
    ctx = make_ctx(scenario_id)
    try:
        rewritten = rewrite(sql, ctx)
    except QueryRejected as exc:
        assert exc.code in KNOWN_CODES
        return
    tree = sqlglot.parse_one(rewritten.sql, read="duckdb")
    assert tree.sql(dialect="duckdb", identify=True) == rewritten.sql
    assert ctx.salt not in rewritten.display_sql
    forbidden = {c.name for d in rewritten.datasets for c in ctx.datasets[d].columns
                 if c.name not in ctx.scenario.datasets[d].columns}
    for table in list(tree.find_all(exp.Table)):
        if table.catalog.startswith("ds_"):
            view = table.parent_select
            assert isinstance(view, exp.Select)
            _check_source_view(view, ctx, table.catalog[3:])
            view.replace(exp.select("1"))
    for column in tree.find_all(exp.Column):
        assert column.name.lower() not in forbidden, (column.sql(), sql)
