"""Rule (records and sandbox mode): no data-dependent errors, as in aggregate mode.

A condition that raises on some values (``chr(<computed>)``, ``CAST(x AS INT)``,
``varchar_column = 5``...) answers a yes/no question by failing or not. Records mode
shows the rows, so one might think that harmless; but DuckDB pushes a WHERE condition
into the scenario's source view and may evaluate it *before* the row filter, on rows the
scenario excludes (measured: with a row filter ``lower(origin) = 'jfk'``, ``WHERE
chr(CASE WHEN origin = 'EWR' THEN -1 ELSE 65 END) = 'A'`` fails although no EWR row is
visible). So every partial call or operator (``function_safety``) is wrapped in
``try()`` here too (``guard_isolation.make_non_failing``); aggregates are left as they
are, since they only see the rows the user may see. Aggregate mode does the same in
``guard_isolation``.

    >>> from pathlib import Path
    >>> from gateway.policy.loading import load_policies
    >>> from gateway.rewrite import RewriteContext
    >>> from gateway.rewrite.context import State
    >>> from gateway.rewrite.parse_statement import parse_statement
    >>> from gateway.rewrite.resolve_tables import resolve_tables
    >>> p = load_policies(Path("policies"), require_signatures=False)
    >>> s = p.scenario("flights-records")
    >>> ctx = RewriteContext(s, {d: p.dataset(d) for d in s.datasets}, salt="x" * 32)
    >>> state = State("SELECT carrier FROM flights WHERE chr(dep_delay) = 'A' "
    ...               "AND carrier = 'AA' AND month = '1'", ctx)
    >>> for rule in (parse_statement, resolve_tables, make_total): rule(state)
    >>> state.query.args["where"].sql(dialect="duckdb")
    "WHERE TRY(CHR(dep_delay) = 'A') AND carrier = 'AA' AND TRY(month = '1')"
"""

from __future__ import annotations

from gateway.policy.models import Mode
from gateway.rewrite.context import State
from gateway.rewrite.function_safety import statement_column_types
from gateway.rewrite.guard_isolation import expand_group_by_all, make_non_failing


def make_total(state: State) -> None:
    if state.ctx.mode is Mode.aggregate:
        return  # guard_isolation did it, with the aggregates' own guards
    tree = state.query
    expand_group_by_all(tree)
    if make_non_failing(tree, statement_column_types(state), aggregates=False):
        state.note("make_total", "functions and operators that can fail on some values "
                   "wrapped in TRY(): such a value gives NULL instead of an error")
