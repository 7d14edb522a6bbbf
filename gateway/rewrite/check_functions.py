"""Rule: every function is on the allow-list for the scenario's mode.

Scalars and aggregates are listed separately (``allowlists``). In aggregate mode,
aggregates that return row-level values (``list``, ``string_agg``, ``first``,
``arg_max``, ``mode``, ...) are refused with ``row_level_aggregate``. Value-returning
aggregates (``min``, ``max``, ``median``, quantiles) are judged by the lineage of their
argument in ``compile_aggregate``, not here by name.

    >>> from gateway.rewrite.parse_statement import parse
    >>> try:
    ...     check_calls(parse("SELECT query('x')"), aggregate=False)
    ... except Exception as exc:
    ...     print(exc.code, exc)
    forbidden_function function query() is not allowed (QUERY('x')) (at character 7)
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import (
    AGGREGATES,
    ANONYMOUS_AGGREGATES,
    ANONYMOUS_ROW_LEVEL,
    ANONYMOUS_SCALARS,
    PACKING_WINDOWS,
    RECORDS_ONLY_AGGREGATES,
    ROW_LEVEL_AGGREGATES,
    SCALARS,
    SYNTAX,
    WINDOW_FUNCTIONS,
    function_name,
    is_packing,
)
from gateway.rewrite.context import State, reject, snippet


def _allowed(node: exp.Func, *, aggregate: bool) -> tuple[bool, bool]:
    """(allowed at all, row-level) for one function node."""
    kind = type(node)
    if isinstance(node, exp.Anonymous):
        name = function_name(node)
        row_level = name in ANONYMOUS_ROW_LEVEL
        return (name in ANONYMOUS_SCALARS or name in ANONYMOUS_AGGREGATES or row_level), row_level
    row_level = kind in ROW_LEVEL_AGGREGATES or kind in WINDOW_FUNCTIONS
    return (kind in SCALARS or kind in AGGREGATES or row_level), row_level


def check_calls(tree: exp.Expr, *, aggregate: bool) -> None:
    for node in tree.find_all(exp.Func):
        if type(node) in SYNTAX:
            continue
        allowed, row_level = _allowed(node, aggregate=aggregate)
        name = function_name(node)
        if not allowed:
            raise reject("forbidden_function",
                         f"function {name}() is not allowed ({snippet(node)})", node)
        if aggregate and row_level:
            raise reject("row_level_aggregate",
                         f"{name}() returns row-level values and is refused in aggregate mode "
                         f"({snippet(node)}); use count, sum, avg or similar", node)
        if aggregate and type(node) in RECORDS_ONLY_AGGREGATES:
            raise reject("forbidden_function",
                         f"{name}() is refused in aggregate mode: it fails on some values, and "
                         f"the failure would say which ({snippet(node)})", node)
        if type(node) in PACKING_WINDOWS:
            raise reject("forbidden_function",
                         f"{name}() copies another row's values into this one "
                         f"({snippet(node)}): rows packed that way would pass the max_rows "
                         "cap; select the rows themselves, or aggregate them", node)
        if is_packing(node):
            # One value holding many rows escapes max_rows, and once cast to text or
            # joined into a string, result_cells too.
            raise reject("row_level_aggregate",
                         f"{name}() packs many rows into one value ({snippet(node)}); select "
                         "the rows themselves (records mode returns up to max_rows of them)",
                         node)


def check_functions(state: State) -> None:
    check_calls(state.query, aggregate=state.ctx.mode is Mode.aggregate)
