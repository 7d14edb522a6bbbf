"""Rule (aggregate mode): no isolation inside an aggregate, no data-dependent errors.

Two attack classes that a per-group entity count alone does not see:

- *padded isolation*: ``sum(CASE WHEN <one person> THEN income ELSE 0 END)`` feeds every
  row of a big group into the sum, but only one person's value is in it. What may stand
  inside an aggregate is decided by ``compile_aggregate`` (by lineage, not by name);
  every branch of a flat CASE/IF and every indicator it marks (a condition used as a
  number) is counted by ``enforce_min_group``: each must be taken by at least ``k``
  distinct entities of the group, or the row is suppressed (``branch_conditions``).
  The outer ORDER BY may name output columns only.
- *error oracles*: a function that raises on some values (``ln(0)``, ``sqrt(-1)``,
  ``strptime``, ``make_date``, integer overflow...) behind a condition on one person
  answers a yes/no question by failing or not. Such expressions (when no aggregate is
  inside them) are wrapped in DuckDB's ``try()``, which gives NULL instead of raising;
  every divisor is wrapped in ``nullif(<divisor>, 0)`` so division by zero gives NULL.

    >>> from gateway.rewrite.parse_statement import parse
    >>> guard_divisors(parse("SELECT a / b FROM t")).sql()
    'SELECT a / NULLIF(b, 0) FROM t'
"""

from __future__ import annotations

import itertools

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import is_aggregate_call
from gateway.rewrite.compile_aggregate import CATEGORIES, INDICATOR
from gateway.rewrite.context import State, reject, snippet
from gateway.rewrite.function_safety import (
    NO_TYPES,
    PARTIAL,
    PARTIAL_ANONYMOUS,
    UNIFYING,
    ColumnTypes,
    cap_pad_lengths,
    condition_operands,
    guard_aggregate,
    has_unwrappable,
    is_boolean,
    is_partial,
    statement_column_types,
)

# Functions that raise on some input values (the error itself would be the answer): see
# gateway.rewrite.function_safety, which classifies every allowed function and operator.
ERROR_RAISING: frozenset[type[exp.Expr]] = PARTIAL
ERROR_RAISING_ANONYMOUS: frozenset[str] = PARTIAL_ANONYMOUS

# Cases of several conditions inside one aggregate that are counted, at most.
MAX_CELLS = 16
DIVISIONS: tuple[type[exp.Expr], ...] = (exp.Div, exp.IntDiv, exp.Mod)
# Node types some instance of which can raise (``function_safety.is_partial`` decides).
FAILING: tuple[type[exp.Expr], ...] = (*PARTIAL, *UNIFYING, exp.Anonymous)


def guard_divisors(tree: exp.Expr) -> exp.Expr:
    """Wrap each divisor in ``nullif(d, 0)``: x / 0 becomes NULL, not an error."""
    for node in list(tree.find_all(*DIVISIONS)):
        divisor = node.expression
        if isinstance(divisor, exp.Nullif) and divisor.meta.get("dsb_guard"):
            continue
        guard = exp.Nullif(this=divisor.copy(), expression=exp.Literal.number(0))
        guard.meta["dsb_guard"] = True
        node.set("expression", guard)
    return tree


def _ancestors(node: exp.Expr) -> list[exp.Expr]:
    out: list[exp.Expr] = []
    parent = node.parent
    while parent is not None:
        out.append(parent)
        parent = parent.parent
    return out


def _is_passthrough(node: exp.Expr, columns: ColumnTypes = NO_TYPES) -> bool:
    """A node that will not be wrapped itself: it cannot raise, or it holds an aggregate,
    a window or a subquery (DuckDB refuses those inside try()), or it is a window's
    function, or a constant clause (LIMIT, OFFSET, VALUES: evaluated once, on no row)."""
    if not is_partial(node, columns) or has_unwrappable(node):
        return True
    child, parent = node, node.parent
    while isinstance(parent, (exp.IgnoreNulls, exp.RespectNulls)):
        child, parent = parent, parent.parent
    if isinstance(parent, exp.Window) and child.arg_key == "this":
        return True
    return any(isinstance(a, (exp.Limit, exp.Offset, exp.Fetch, exp.Values))
               for a in _ancestors(node))


def _is_try(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == "try"


def _has_aggregate(node: exp.Expr) -> bool:
    return any(isinstance(n, (exp.Func, exp.Window)) and (is_aggregate_call(n)
               or isinstance(n, exp.Window)) for n in node.walk())


def expand_group_by_all(tree: exp.Expr) -> None:
    """``GROUP BY ALL`` -> ``GROUP BY <each select expression without an aggregate>``.

    DuckDB fails to bind ``try()`` under GROUP BY ALL (an internal error), so the keys
    are spelled out before ``make_non_failing`` wraps them.
    """
    for select in list(tree.find_all(exp.Select)):
        group = select.args.get("group")
        if not isinstance(group, exp.Group) or not group.args.get("all"):
            continue
        keys = [e.unalias().copy() for e in select.expressions
                if not _has_aggregate(e) and not isinstance(e.unalias(), exp.Literal)]
        if not keys:
            select.set("group", None)
            continue
        select.set("group", exp.Group(expressions=keys))


def make_non_failing(tree: exp.Expr, columns: ColumnTypes = NO_TYPES, *,
                     aggregates: bool = True) -> bool:
    """Wrap each partial call or operator (``function_safety.is_partial``; the outermost
    one, no aggregate inside) in DuckDB's ``try()``.

    ``try(ln(0))`` and ``try(9223372036854775807 * 2)`` are NULL instead of an error, so
    "did it fail" says nothing about the rows. Before that, operands used as conditions
    that are not known to be BOOLEAN get an explicit (partial) cast, partial aggregates
    get arguments they cannot fail on (``guard_aggregate``; not with ``aggregates=False``,
    for records mode, where an aggregate only sees rows the user may see), and pad
    lengths are capped.
    A wrapped expression that a grouped SELECT computes from its keys is added to its
    GROUP BY (DuckDB cannot bind ``try(f(key))`` over a group otherwise).

        >>> from gateway.rewrite.parse_statement import parse
        >>> t = parse("SELECT ln(x + 1) FROM t"); _ = make_non_failing(t); t.sql()
        'SELECT TRY(LN(x + 1)) FROM t'
    """
    changed = cap_pad_lengths(tree)
    for node in list(tree.walk()):
        if aggregates and isinstance(node, exp.Func) and is_aggregate_call(node):
            changed = guard_aggregate(node, columns) or changed
        for operand in condition_operands(node):
            if operand is None or is_boolean(operand, columns):
                continue
            cast = exp.Cast(to=exp.DataType.build("BOOLEAN"))
            operand.replace(cast)
            cast.set("this", operand)
            changed = True
    wrapped: list[exp.Expr] = []
    for node in list(tree.walk()):  # parents before children: the outermost is wrapped
        if any(_is_try(a) for a in _ancestors(node)) or _is_passthrough(node, columns):
            continue  # the outer try() already catches it; nested try() trips DuckDB
        wrapper = exp.Anonymous(this="try", expressions=[])
        node.replace(wrapper)
        wrapper.set("expressions", [node])
        wrapped.append(wrapper)
        changed = True
    for done in wrapped:
        _group_by_wrapped(done)
    return changed


def _group_keys(select: exp.Select) -> list[exp.Expr] | None:
    """The plain GROUP BY keys of ``select`` (positions and output aliases resolved)."""
    group = select.args.get("group")
    if not isinstance(group, exp.Group) or not group.expressions:
        return None
    outputs = {e.alias.lower(): e.this for e in select.expressions if isinstance(e, exp.Alias)}
    keys = []
    for key in group.expressions:
        if isinstance(key, exp.Literal) and key.is_int \
                and 0 < int(key.name) <= len(select.expressions):
            keys.append(select.expressions[int(key.name) - 1].unalias())
        elif isinstance(key, exp.Column) and not key.table and key.name.lower() in outputs:
            keys.append(outputs[key.name.lower()])
        keys.append(key)
    return keys


def _group_by_wrapped(wrapper: exp.Expr) -> None:
    """Add ``wrapper`` to its SELECT's GROUP BY if it is computed there from the keys."""
    node, select = wrapper, wrapper.parent
    while select is not None and not isinstance(select, exp.Select):
        if isinstance(select, exp.Func) and is_aggregate_call(select):
            return  # an aggregate's argument: evaluated per row, before grouping
        node, select = select, select.parent
    if select is None or node.arg_key in ("where", "joins", "from", "group", "with"):
        return
    keys = _group_keys(select)
    if keys is None:
        return
    texts = {k.sql(dialect="duckdb") for k in keys}

    def covered(n: exp.Expr) -> bool:
        if n.sql(dialect="duckdb") in texts or (isinstance(n, exp.Func)
                                                 and is_aggregate_call(n)):
            return True
        if isinstance(n, (exp.Column, exp.Query, exp.Window)):
            return False
        return all(covered(c) for c in n.iter_expressions())

    if wrapper.sql(dialect="duckdb") not in texts and covered(wrapper.expressions[0]):
        select.args["group"].append("expressions", wrapper.copy())


def _case_conditions(node: exp.Expr) -> list[exp.Expr]:
    """Conditions of a CASE/IF node, in the order they are tested."""
    if isinstance(node, exp.Case):
        return [branch.this for branch in node.args.get("ifs") or []]
    return [node.this]


def _taken(condition: exp.Expr) -> exp.Expr:
    # NULL conditions fall through, as CASE itself does.
    return exp.Coalesce(this=condition.copy(), expressions=[exp.false()])


def _indicator_branches(node: exp.Expr) -> list[exp.Expr]:
    """Rows taking each value of a condition or category used as a number."""
    categories = node.meta.get(CATEGORIES)
    if categories:
        seen: dict[str, exp.Expr] = {}
        for value in categories:
            seen.setdefault(value.sql(dialect="duckdb"), value)
        return [exp.NullSafeEQ(this=node.copy(), expression=v.copy()) for v in seen.values()]
    condition = exp.Paren(this=node.copy()) if not isinstance(node, exp.Column) \
        else exp.TryCast(this=node.copy(), to=exp.DataType.build("BOOLEAN"))
    taken = _taken(condition)
    return [taken, exp.Not(this=taken.copy())]


def branch_conditions(call: exp.Expr) -> list[exp.Expr]:
    """For each CASE/IF and each indicator inside ``call``, the condition under which
    each of its branches is taken.

    ``enforce_min_group`` counts the distinct entities behind every branch: a branch
    taken by fewer than ``k`` entities would isolate them however the rest is padded.
    An indicator is a condition used as a number (``CAST(a = 1 AS INT)``, ``a = 1``, a
    column computed as a condition or as a CASE of constants; ``compile_aggregate``
    marks them): its values are branches too.

        >>> from sqlglot import parse_one
        >>> call = parse_one("sum(CASE WHEN a = 1 THEN x ELSE 0 END)")
        >>> [c.sql() for c in branch_conditions(call)]
        ['COALESCE(a = 1, FALSE)', 'NOT COALESCE(a = 1, FALSE)']
    """
    switches: list[list[exp.Expr]] = []
    for node in call.walk():
        if node.meta.get(INDICATOR):
            switches.append(_indicator_branches(node))
            continue
        if not isinstance(node, (exp.Case, exp.If)) or isinstance(node.parent, exp.Case):
            continue
        branches: list[exp.Expr] = []
        earlier: list[exp.Expr] = []
        for condition in _case_conditions(node):
            taken = _taken(condition)
            branches.append(exp.and_(*earlier, taken) if earlier else taken)
            earlier.append(exp.Not(this=taken.copy()))
        branches.append(exp.and_(*earlier) if len(earlier) > 1 else earlier[0])
        switches.append(branches)
    if len(switches) <= 1:
        return switches[0] if switches else []
    # Several switches: each cell of their joint partition must cover k entities, or a
    # conjunction of conditions that each cover many would isolate a few.
    cells = 1
    for branches in switches:
        cells *= len(branches)
    if cells > MAX_CELLS:
        raise reject("not_analyzable",
                     f"{snippet(call)} combines conditions into {cells} cases; at most "
                     f"{MAX_CELLS} are counted per aggregate: use fewer conditions, or GROUP BY",
                     call)
    return [exp.and_(*(c.copy() for c in combo)) for combo in itertools.product(*switches)]


def _check_order(query: exp.Expr) -> None:
    """ORDER BY of the outer query names output columns only (not row-level values)."""
    while isinstance(query, exp.Subquery) and not query.alias:
        query = query.this
    order = query.args.get("order")
    selects = [query] if isinstance(query, exp.Select) else list(query.find_all(exp.Select))
    outputs: set[str] = set()
    for select in selects:
        for e in select.expressions:
            outputs.add(e.alias_or_name.lower())
            outputs.add(e.unalias().sql(dialect="duckdb").lower())
    for ordered in (order.expressions if order else []):
        key = ordered.this
        if isinstance(key, exp.Literal) and not key.is_string:
            continue  # ORDER BY 2: a position in the output
        if isinstance(key, exp.Var) and key.name.upper() == "ALL":
            continue  # ORDER BY ALL: every output column
        if isinstance(key, exp.Column) and key.name.lower() in outputs:
            continue
        if key.sql(dialect="duckdb").lower() in outputs:
            continue
        raise reject("order_by_not_output",
                     f"ORDER BY {snippet(key)} sorts by something that is not an output "
                     "column; in aggregate mode sort only by the columns you select "
                     "(add it to the SELECT list, or sort by its alias)", key)


def guard_isolation(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    tree = state.query
    _check_order(tree)
    if any(True for _ in tree.find_all(*DIVISIONS)):
        guard_divisors(tree)
        state.note("guard_isolation", "divisors wrapped in NULLIF(divisor, 0): division by "
                   "zero gives NULL instead of an error")
    expand_group_by_all(tree)
    if make_non_failing(tree, statement_column_types(state)):
        state.note("guard_isolation", "arithmetic and functions that can fail wrapped in "
                   "TRY(): a value that would raise an error gives NULL instead")
