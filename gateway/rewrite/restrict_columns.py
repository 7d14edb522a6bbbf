"""Rule: only the scenario's allowed columns are usable, anywhere in the query.

The hard guarantee is structural: ``mount_sources`` replaces each dataset by a view that
selects only allowed (masked) columns, so DuckDB cannot bind any other column, whatever
the syntax (``*``, ``t.*``, ``COLUMNS(...)``, whole-row ``t``, ``#1``). This rule adds the
clear error: a column of a dataset in the query that the scenario does not allow is
refused with ``forbidden_column`` and its position, and names the rewriter reserves
(``__dsb*``) are refused everywhere.

In aggregate mode it is stricter: every column must be an allowed dataset column or an
alias the query defines; whole-row references (a table alias used as a value) are refused.

    >>> from gateway.rewrite.parse_statement import parse
    >>> check_names(parse("SELECT flight FROM flights"), allowed={"carrier"},
    ...             forbidden={"flight"}, strict=False)
    Traceback (most recent call last):
    ...
    gateway.errors.QueryRejected: column flight is not allowed in this scenario (at character 7)
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.context import RESERVED_PREFIX, State, reject


def _names(tree: exp.Expr) -> tuple[set[str], set[str]]:
    """(names the query defines as aliases, names that denote sources), in one walk.

    Defined: select aliases and column aliases of sources. Sources: table, CTE and
    subquery names/aliases — a whole row if used as a value.
    """
    defined: set[str] = set()
    sources: set[str] = set()
    for node in tree.find_all(exp.Alias, exp.TableAlias, exp.Table, exp.Subquery, exp.CTE):
        if isinstance(node, exp.Alias):
            defined.add(node.alias.lower())
        elif isinstance(node, exp.TableAlias):
            defined.update(col.name.lower() for col in node.columns)
        elif isinstance(node, exp.Table):
            sources.add(node.name.lower())
            if node.alias:
                sources.add(node.alias.lower())
        elif node.alias:
            sources.add(node.alias.lower())
    return defined, sources


def check_names(
    tree: exp.Expr,
    *,
    allowed: set[str],
    forbidden: set[str],
    strict: bool,
) -> None:
    defined, sources = _names(tree)
    shadowing = sorted(defined & forbidden)
    if shadowing:
        # A name that looks like a forbidden column would make results (and the
        # post-check, which refuses such names) ambiguous.
        node = next(n for n in tree.find_all(exp.Identifier) if n.name.lower() == shadowing[0])
        raise reject("forbidden_column",
                     f"{shadowing[0]} is a column this scenario does not allow; "
                     "choose another alias", node)
    for join in tree.find_all(exp.Join):
        for ident in join.args.get("using") or []:
            if str(ident.name).lower() in forbidden:
                raise reject("forbidden_column",
                             f"column {ident.name} is not allowed in this scenario", ident)
    for named in tree.find_all(exp.Identifier, exp.Var, exp.Column):
        if str(named.name).lower().startswith(RESERVED_PREFIX):
            raise reject("reserved_name",
                         f"names starting with {RESERVED_PREFIX} are reserved ({named.name})",
                         named)
        if not isinstance(named, exp.Column):
            continue
        column = named
        if isinstance(column.this, exp.Star):
            continue
        name = column.name.lower()
        # ORDER BY <alias> names the select alias (DuckDB binds aliases first there).
        ordering_alias = name in defined and isinstance(column.parent, exp.Ordered)
        if strict and name in sources and name not in allowed and not ordering_alias:
            raise reject("forbidden_column",
                         f"{column.sql(dialect='duckdb')} is a whole-row reference; aggregate "
                         "queries may use only the scenario's columns", column)
        if name in defined:
            continue
        if name in forbidden:
            raise reject("forbidden_column",
                         f"column {column.name} is not allowed in this scenario", column)
        if strict and name not in allowed:
            what = "a whole-row reference" if name in sources else "not an allowed column"
            raise reject("forbidden_column",
                         f"{column.sql(dialect='duckdb')} is {what}; aggregate queries may use "
                         f"only the scenario's columns: {', '.join(sorted(allowed))}", column)


def restrict_columns(state: State) -> None:
    allowed: set[str] = set()
    every: set[str] = set()
    for dataset_id in state.used_datasets:
        allowed.update(state.ctx.scenario.datasets[dataset_id].columns)
        every.update(c.name for c in state.ctx.datasets[dataset_id].columns)
    check_names(state.query, allowed=allowed, forbidden=every - allowed,
                strict=state.ctx.mode is Mode.aggregate)
