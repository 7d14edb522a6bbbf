"""Rule: every function is on the allow-list for the scenario's mode.

Scalars and aggregates are listed separately (``allowlists``). In aggregate mode,
aggregates that return row-level values (``list``, ``string_agg``, ``first``,
``arg_max``, ``mode``, ...) are refused with ``row_level_aggregate``, and so are
value-returning aggregates (``min``, ``max``, ``median``, quantiles) over any column
that is not public.

    >>> from gateway.rewrite.parse_statement import parse
    >>> try:
    ...     check_calls(parse("SELECT query('x')"), aggregate=False, public=frozenset())
    ... except Exception as exc:
    ...     print(exc.code, exc)
    forbidden_function function query() is not allowed (QUERY('x')) (at character 7)
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode, Sensitivity
from gateway.rewrite.allowlists import (
    AGGREGATES,
    ANONYMOUS_AGGREGATES,
    ANONYMOUS_ROW_LEVEL,
    ANONYMOUS_SCALARS,
    ROW_LEVEL_AGGREGATES,
    SCALARS,
    SYNTAX,
    VALUE_AGGREGATES,
    WINDOW_FUNCTIONS,
    function_name,
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


def check_calls(tree: exp.Expr, *, aggregate: bool, public: frozenset[str]) -> None:
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
        if aggregate and type(node) in VALUE_AGGREGATES:
            columns = list(node.find_all(exp.Column))
            hidden = [c for c in columns if c.name.lower() not in public]
            if hidden or not columns:
                target = hidden[0] if hidden else node
                raise reject("row_level_aggregate",
                             f"{name}() over {snippet(target)} would reveal a single value of a "
                             "column that is not public; use avg or a count instead", target)


def public_columns(state: State) -> frozenset[str]:
    """Names that are public, unmasked columns in every dataset of the query having them."""
    names: dict[str, bool] = {}
    for dataset_id in state.used_datasets:
        dataset = state.ctx.datasets[dataset_id]
        grant = state.ctx.scenario.datasets[dataset_id]
        for column in dataset.columns:
            public = (column.sensitivity is Sensitivity.public and column.name in grant.columns
                      and column.name not in grant.masks and column.name != dataset.entity_key)
            names[column.name] = names.get(column.name, True) and public
    return frozenset(name for name, ok in names.items() if ok)


def check_functions(state: State) -> None:
    check_calls(state.query, aggregate=state.ctx.mode is Mode.aggregate,
                public=public_columns(state))
