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
  integer overflow...) behind a condition on one person answers a yes/no question by
  failing or not. Every divisor is wrapped in ``nullif(<divisor>, 0)`` here so division
  by zero gives NULL; ``make_total``, the last rule of aggregate mode, wraps the rest.

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

# Cases of several conditions inside one aggregate that are counted, at most.
MAX_CELLS = 16
DIVISIONS: tuple[type[exp.Expr], ...] = (exp.Div, exp.IntDiv, exp.Mod)
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


def _has_aggregate(node: exp.Expr) -> bool:
    return any(isinstance(n, (exp.Func, exp.Window)) and (is_aggregate_call(n)
               or isinstance(n, exp.Window)) for n in node.walk())


def expand_group_by_all(tree: exp.Expr) -> None:
    """``GROUP BY ALL`` -> ``GROUP BY <each select expression without an aggregate>``.

    DuckDB fails to bind ``try()`` under GROUP BY ALL (an internal error), so the keys
    are spelled out before ``make_total`` wraps them.
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
