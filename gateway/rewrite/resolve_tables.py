"""Rule: every table reference names a dataset of the scenario or a CTE in scope.

Qualified names (``catalog.schema.table``), file paths (DuckDB's ``FROM 'x.parquet'``
reads a file), table functions and datasets outside the scenario are refused. Each
dataset reference is recorded; ``mount_sources`` later replaces it by the scenario's
view of the dataset (allowed columns, masks, row filter) so no path reaches the file.

    >>> from gateway.rewrite.parse_statement import parse
    >>> [t.name for t in table_nodes(parse("WITH x AS (SELECT 1) SELECT * FROM x, flights"))]
    ['flights']
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp

from gateway.rewrite.context import DatasetRef, State, reject, snippet


def _visible_ctes(node: exp.Expr) -> set[str]:
    """CTE names a table node may refer to.

    The CTEs of every enclosing WITH; inside the body of a CTE of a non-recursive WITH,
    only the CTEs defined before it (a name used in its own body means the dataset).
    Calling a dataset a CTE by mistake would leave a name DuckDB cannot resolve (an
    error, never a leak); calling a CTE a dataset would read the scenario's view.
    """
    names: set[str] = set()
    child = node
    parent = node.parent
    while parent is not None:
        with_ = parent.args.get("with_") or parent.args.get("with")
        if isinstance(with_, exp.With):
            ctes = list(with_.expressions)
            inside = next((i for i, cte in enumerate(ctes) if cte is child), None)
            if inside is None or with_.args.get("recursive"):
                names.update(cte.alias_or_name.lower() for cte in ctes)
            else:
                names.update(cte.alias_or_name.lower() for cte in ctes[:inside])
        if not isinstance(parent, exp.With):  # keep the CTE as `child` across its WITH
            child = parent
        parent = parent.parent
    return names


def table_nodes(tree: exp.Expr) -> Iterator[exp.Table]:
    """Table references that are not CTE references."""
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier) and not table.args.get("db") \
                and table.name.lower() in _visible_ctes(table):
            continue
        yield table


def resolve_tables(state: State) -> None:
    scenario = state.ctx.scenario
    for table in table_nodes(state.query):
        if not isinstance(table.this, exp.Identifier):
            raise reject("forbidden_function",
                         f"table functions are not allowed ({snippet(table)}); "
                         "read a dataset by its name", table)
        if table.args.get("db") or table.args.get("catalog"):
            raise reject("unknown_table",
                         f"qualified table names are not allowed ({snippet(table)}); "
                         "write the dataset id alone", table)
        name = table.name.lower()
        if name not in scenario.datasets or name not in state.ctx.datasets:
            available = ", ".join(sorted(scenario.datasets))
            raise reject("unknown_table",
                         f"{snippet(table.this)} is not a dataset of scenario {scenario.id!r} "
                         f"(available: {available})", table)
        state.refs.append(DatasetRef(node=table, dataset_id=name, index=len(state.refs) + 1))
