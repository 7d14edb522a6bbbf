"""Rule (records mode): one result row holds one record's values, not many.

``max_rows`` caps rows, so a query that folds many records into each row goes around it.
Red team round 7 did it twice, returning the whole JFK table under a 5,000-row cap:

- an aggregate over a window frame copies another row in: ``max(concat_ws('|', ...))
  OVER (w ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING)``, and with a default frame
  ``max(CASE WHEN rn % 23 = j THEN ... END) OVER (ORDER BY rn)`` does the same;
- a pivot: ``max(CASE WHEN rn % 23 = j THEN concat_ws(...) END) ... GROUP BY rn // 23``.

So in records mode a window may only number, rank or count rows (``row_number``,
``rank``, ``ntile``, ``count``...), not aggregate their values, and an aggregate that
returns one row's value (``min``, ``max``, ``any_value``, ``arg_max``, quantiles...)
takes a stored column as it is, renamed at most: ``max(CASE WHEN ... THEN x END)``
picks one row of many per cell.

    >>> from pathlib import Path
    >>> from gateway.policy.loading import load_policies
    >>> from gateway.rewrite import RewriteContext, rewrite
    >>> from gateway.errors import QueryRejected
    >>> p = load_policies(Path("policies"), require_signatures=False)
    >>> s = p.scenario("flights-records")
    >>> ctx = RewriteContext(s, {d: p.dataset(d) for d in s.datasets}, salt="x" * 32)
    >>> try:
    ...     rewrite("SELECT max(dest) OVER (ORDER BY hour) FROM flights", ctx)
    ... except QueryRejected as exc:
    ...     print(exc.code)
    forbidden_function
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, build_scope

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import (
    ANONYMOUS_ROW_LEVEL,
    ROW_LEVEL_AGGREGATES,
    VALUE_AGGREGATES,
    aggregates_here,
    call_arguments,
    function_name,
    is_aggregate_call,
    is_aggregate_function,
)
from gateway.rewrite.bound_sizes import derived_projection
from gateway.rewrite.context import State, reject, snippet


def _picks_a_value(call: exp.Func) -> bool:
    return type(call) in VALUE_AGGREGATES or type(call) in ROW_LEVEL_AGGREGATES or (
        isinstance(call, exp.Anonymous) and call.name.lower() in ANONYMOUS_ROW_LEVEL)


def _stored(node: exp.Expr, scope: Scope) -> bool:
    """A column read as stored, through CTEs and subqueries that only rename it."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.Literal, exp.Columns)):
        return True  # max(x, 1000) (counted per element), max(COLUMNS(*)): no row's data
    if not isinstance(node, exp.Column):
        return False
    if not node.table and len(scope.sources) == 1:
        # Records mode is not qualified: an unqualified column reads the only source.
        node = exp.column(node.name, table=next(iter(scope.sources)))
    found = derived_projection(node, scope)
    if found is None:
        return True
    projection, source = found
    select = source.expression
    if isinstance(select, exp.Select) and aggregates_here(select):
        return True  # a column of an aggregated subquery: one group per row, like a table
    return _stored(projection, source)


def _check_window(window: exp.Window) -> None:
    function = window.this
    # A count copies no value in (count(*) OVER () is the number of rows).
    if is_aggregate_function(function) and not isinstance(function, exp.Count):
        raise reject("forbidden_function",
                     f"{function_name(function)}() over a window ({snippet(window)}) copies "
                     "other rows' values into each row: rows packed that way would pass the "
                     "max_rows cap. In records mode a window may number or rank rows "
                     "(row_number, rank, ntile...); select the rows themselves", window)


def _check_call(call: exp.Func, scope: Scope) -> None:
    for argument in call_arguments(call):
        if not _stored(argument, scope):
            raise reject("row_level_aggregate",
                         f"{function_name(call)}() of a computed value ({snippet(call)}) picks "
                         "one row's value out of many for each cell, which packs several "
                         "records into one row past the max_rows cap; in records mode it "
                         "takes a column as stored", call)


def bound_packing(state: State) -> None:
    if state.ctx.mode is not Mode.records:
        return
    picking = False
    for node in state.query.walk():
        if isinstance(node, exp.Window):
            _check_window(node)
        elif isinstance(node, exp.Func) and is_aggregate_call(node) and _picks_a_value(node):
            picking = True
    if not picking:
        return  # scoping the tree is a third of a records-mode rewrite: only when needed
    root = build_scope(state.query)
    for scope in root.traverse() if root is not None else []:
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        for node in _own_nodes(select):
            if isinstance(node, exp.Func) and not isinstance(node.parent, exp.Window) \
                    and is_aggregate_call(node) and _picks_a_value(node):
                _check_call(node, scope)


def _own_nodes(select: exp.Select) -> list[exp.Expr]:
    """The nodes of ``select`` itself, not of the queries nested in it."""
    return list(select.walk(prune=lambda n: isinstance(n, exp.Query) and n is not select))
