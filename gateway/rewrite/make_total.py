"""Rule (aggregate mode, last): no expression can fail because of a value.

An error is an answer. ``ln(x)`` fails on 0, ``CASE WHEN <one person> THEN 'x' ELSE 0
END`` fails when DuckDB converts ``'x'`` to a number for that person's row, ``i = s``
fails when a text does not convert. Behind a condition on one row, "did the job fail"
says whether the condition holds, whatever k and suppression do afterwards.

So, after every other rule has shaped the statement (the hidden counting columns
included, since they copy the user's conditions), every expression without an aggregate
inside that could raise is wrapped in DuckDB's ``try()`` (an error becomes NULL),
innermost first. Aggregates get arguments they cannot fail on, and that cannot make
a result infinite or NaN (either would mark one row of a large group): sums and averages
stay exact over stored integers and DECIMAL(<=18), and otherwise, like variances and
regressions, see finite DOUBLEs up to ``MOMENT_BOUND`` (others count as NULL); logical
aggregates see ``TRY_CAST(... AS BOOLEAN)``. Plainly safe steps stay bare, so that
DuckDB still pushes filters into the scan: columns, literals, total functions
(``allowlists.total_function``), logic over predicates, and comparisons that convert no
value row by row (a column with a literal that fits its type, two columns of one kind of
type). What stands above aggregates is made total by ``total_aggregates``; sizes are
bounded by ``bound_sizes`` (``try()`` does not catch running out of memory or time).

``tests/rewrite/totality_probe.py`` calls every allowed function, operator and aggregate
with extreme values of every type and checks that success never depends on the data;
the engine turns off common subexpression elimination, which hoists work out of
``try()`` (``sandbox/engine.py``).

    >>> from gateway.rewrite.parse_statement import parse
    >>> tree = parse("SELECT sum(CASE WHEN ln(a) > 1 THEN x ELSE 0 END) FROM t WHERE b > 2")
    >>> _ = wrap_failing(tree, lambda column: "number"); tree.sql()
    'SELECT SUM(TRY(CASE WHEN TRY(TRY(LN(a)) > 1) THEN x ELSE 0 END)) FROM t WHERE b > 2'
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import build_scope

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import (
    aggregates_here,
    call_arguments,
    is_aggregate_call,
    total_function,
)
from gateway.rewrite.bound_sizes import derived_projection
from gateway.rewrite.context import State

# Sums and averages: DuckDB adds these exactly (HUGEINT or DECIMAL(38)) and fails on
# overflow; everything else is summed as DOUBLE.
SUM_FAMILY: tuple[type[exp.Expr], ...] = (exp.Sum, exp.Avg)
SUM_FAMILY_ANONYMOUS = frozenset({"mean", "favg", "fsum", "sumkahan"})
# Logical aggregates convert their argument to BOOLEAN row by row.
LOGICAL: tuple[type[exp.Expr], ...] = (exp.LogicalAnd, exp.LogicalOr, exp.CountIf)
# Second moments: DuckDB raises "out of range" on a non-finite result.
MOMENTS: tuple[type[exp.Expr], ...] = (
    exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop, exp.Corr,
    exp.CovarPop, exp.CovarSamp, exp.RegrSlope, exp.RegrIntercept, exp.RegrR2,
)
# Values of larger magnitude, and infinities and NaN, are left out of sums, averages and
# second moments: squares of up to 1e30 summed over any feasible number of rows stay
# finite, and no result can be inf or NaN, which would tell whether any one row of a
# large group passed a threshold (``sum((x - c) * 1e300 * 1e300)`` is NaN or -inf).
MOMENT_BOUND = 1e15
# Declared column types whose exact sum cannot overflow for any feasible number of rows
# (floating types are bounded instead: a stored inf or NaN would mark its row's groups).
EXACT_SUM_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "INT", "INT1", "INT2", "INT4", "INT8", "BIGINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "BOOLEAN", "BOOL",
})
MAX_EXACT_DECIMAL_PRECISION = 18
# CTEs a column is traced through to its stored column, at most.
MAX_TRACE = 64
NUMBER_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "INT", "INT1", "INT2", "INT4", "INT8", "BIGINT",
    "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "DOUBLE", "FLOAT", "REAL",
    "FLOAT4", "FLOAT8", "DECIMAL", "NUMERIC",
})
# Nodes that hold expressions without being one: wrapping happens below them.
CONTAINERS: tuple[type[exp.Expr], ...] = (
    exp.Query, exp.Subquery, exp.With, exp.CTE, exp.From, exp.Join, exp.Where, exp.Group,
    exp.Having, exp.Order, exp.Ordered, exp.Qualify, exp.Alias, exp.Distinct, exp.Filter,
    exp.Tuple, exp.Rollup, exp.Cube, exp.GroupingSets, exp.Lateral, exp.TableAlias,
    # The hidden entity-set column (entity_sets.py) builds structs and lists; users cannot
    # write these in aggregate mode.
    exp.PropertyEQ, exp.Struct, exp.Array,
)
SKIPPED: tuple[type[exp.Expr], ...] = (
    exp.Table, exp.Limit, exp.Offset, exp.Fetch, exp.Window, exp.Identifier, exp.DataType,
    exp.Var, exp.Star, exp.Values,
)
ATOMS: tuple[type[exp.Expr], ...] = (
    exp.Column, exp.Literal, exp.Null, exp.Boolean, exp.Star, exp.Var, exp.DataType,
)
COMPARISONS: tuple[type[exp.Expr], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.Like, exp.ILike,
)


def _holds_query(node: exp.Expr) -> bool:
    return any(isinstance(n, exp.Query) for n in node.walk())


def _holds_aggregate(node: exp.Expr) -> bool:
    return any(isinstance(n, exp.Window) or (isinstance(n, exp.Func) and is_aggregate_call(n))
               for n in node.walk())


def _is_branch(node: exp.Expr) -> bool:
    """``WHEN c THEN v`` of a CASE: sqlglot keeps it as an ``If`` node; not a value."""
    return isinstance(node, exp.If) and isinstance(node.parent, exp.Case)


def _is_try(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == "try"


ColumnFamily = Callable[[exp.Column], "str | None"]
PREDICATES: tuple[type[exp.Expr], ...] = (
    *COMPARISONS, exp.In, exp.Between, exp.Is, exp.And, exp.Or, exp.Not, exp.Boolean,
    exp.Exists,
)
CONSTANTS: tuple[type[exp.Expr], ...] = (exp.Literal, exp.Null, exp.Boolean)


def _no_family(column: exp.Column) -> str | None:
    return None


def _bare(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren) or _is_try(node):
        node = node.expressions[0] if _is_try(node) else node.this
    return node


def _constant(node: exp.Expr) -> bool:
    node = _bare(node)
    return isinstance(node, CONSTANTS) or (isinstance(node, exp.Neg)
                                           and isinstance(node.this, exp.Literal))


def _text_literal(node: exp.Expr) -> bool:
    node = _bare(node)
    return isinstance(node, exp.Literal) and node.is_string


def _literal_fits(literal: exp.Expr, kind: str | None) -> bool:
    """A constant compared with a value of ``kind`` converts without error. DuckDB
    converts a constant when the first row reaches it, not when it binds, and converts a
    text value to a number row by row; either failure, only if some row gets there, would
    be an answer too."""
    bare = _bare(literal)
    if isinstance(bare, exp.Null):
        return True
    if isinstance(bare, exp.Boolean):
        return kind in ("BOOLEAN", "BOOL")
    if not _text_literal(bare):
        return kind == "number"  # a number, or a negated one
    text = bare.name
    try:
        if kind == "text":
            return True
        if kind == "date":
            datetime.date.fromisoformat(text)
            return True
        if kind == "timestamp":
            datetime.datetime.fromisoformat(text)
            return True
    except ValueError:
        return False
    return kind == "number" and re.fullmatch(r"-?\d{1,9}", text) is not None


def _comparable(left: exp.Expr, right: exp.Expr, family: ColumnFamily) -> bool:
    """Comparing these converts no value row by row in a way that can fail."""
    def kind(side: exp.Expr) -> str | None:
        side = _bare(side)
        return family(side) if isinstance(side, exp.Column) else None

    if _constant(left) and _constant(right):
        return _text_literal(left) == _text_literal(right)
    if _constant(left) or _constant(right):
        literal, other = (left, right) if _constant(left) else (right, left)
        return _literal_fits(literal, kind(other))
    kinds = {kind(left), kind(right)}
    return len(kinds) == 1 and None not in kinds


def locally_safe(node: exp.Expr, family: ColumnFamily = _no_family) -> bool:
    """True when evaluating ``node`` itself cannot raise, whatever its operands hold
    (their own failures are guarded separately): columns, literals, total functions,
    logic over predicates, and comparisons that convert no value row by row."""
    if isinstance(node, ATOMS) or isinstance(node, exp.Paren):
        return True
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal)
    if isinstance(node, exp.TryCast):
        return node.to.this in (exp.DataType.Type.DOUBLE, exp.DataType.Type.VARCHAR,
                                exp.DataType.Type.TEXT, exp.DataType.Type.BOOLEAN)
    if isinstance(node, (exp.And, exp.Or, exp.Not)):
        # A non-boolean operand would be converted to BOOLEAN row by row.
        return all(isinstance(_bare(o), PREDICATES) for o in node.iter_expressions())
    if isinstance(node, exp.Is):
        return isinstance(node.expression, exp.Null)
    if isinstance(node, exp.Escape):
        # x LIKE p ESCAPE '\\' is one step: guarded whole or not at all.
        return locally_safe(node.this, family)
    if isinstance(node, (exp.Like, exp.ILike)):
        # The value is converted to text, which cannot fail; the pattern must be text.
        return _text_literal(node.expression)
    if isinstance(node, COMPARISONS):
        return _comparable(node.this, node.expression, family)
    if isinstance(node, exp.In):
        return not node.args.get("query") and all(
            _constant(e) and _comparable(node.this, e, family) for e in node.expressions)
    if isinstance(node, exp.Between):
        return all(_constant(node.args[k]) and _comparable(node.this, node.args[k], family)
                   for k in ("low", "high"))
    if isinstance(node, exp.Case):
        # One result and NULL otherwise: nothing to convert to a common type.
        default = node.args.get("default")
        return len(node.args.get("ifs") or []) == 1 and (default is None
                                                          or isinstance(default, exp.Null))
    if isinstance(node, exp.Coalesce):
        # Of conditions (the hidden counts' COALESCE(<condition>, FALSE)): all BOOLEAN.
        return all(isinstance(_bare(a), PREDICATES) for a in node.iter_expressions())
    return isinstance(node, exp.Func) and total_function(node)


def _hidden(node: exp.Expr) -> bool:
    alias = node.find_ancestor(exp.Alias)
    return alias is not None and alias.alias.startswith("__dsb")


def _try(node: exp.Expr) -> None:
    wrapper = exp.Anonymous(this="try", expressions=[])
    node.replace(wrapper)
    wrapper.set("expressions", [node])


def wrap_failing(tree: exp.Expr, family: ColumnFamily = _no_family) -> list[exp.Expr]:
    """Wrap each expression that holds no aggregate and could raise in ``try()``,
    innermost first: DuckDB hoists repeated subexpressions out of an outer ``try()``
    (common subexpression elimination), so every failing step is guarded where it is.
    Returns the wrapped expressions."""
    skipped: set[int] = set()
    order: list[exp.Expr] = []
    for node in tree.walk(bfs=False):
        if isinstance(node, SKIPPED) or (node.parent is not None and id(node.parent) in skipped):
            skipped.add(id(node))
            continue
        order.append(node)
    # Whether a node holds an aggregate or a query, bottom up (no quadratic re-walks).
    holds: dict[int, bool] = {}
    wrapped: list[exp.Expr] = []
    for node in reversed(order):  # every node after its operands
        inside = any(holds[id(c)] if id(c) in holds else _holds_aggregate(c) or _holds_query(c)
                     for c in node.iter_expressions())
        holds[id(node)] = inside or isinstance(node, exp.Query) or (
            isinstance(node, exp.Func) and is_aggregate_call(node))
        escaped = isinstance(node.parent, exp.Escape) and node.arg_key == "this"
        if (holds[id(node)] or isinstance(node, CONTAINERS) or _is_try(node) or escaped
                or _is_branch(node) or locally_safe(node, family)):
            continue
        _try(node)
        wrapped.append(node)
    return wrapped


GROUP_LEVEL_CLAUSES = frozenset({"expressions", "having"})


def group_level(wrapped: exp.Expr) -> None:
    """``TRY()`` over a group key in a grouped select, e.g. ``TRY(CAST(carrier AS INT))``
    with ``GROUP BY carrier``, fails to bind in DuckDB 1.5 (an internal error). Computed
    per row under ``ANY_VALUE`` instead it binds, and gives the same value: an expression
    of the group keys alone is constant within the group."""
    node = wrapped.parent  # the TRY() wrapper
    while node is not None and not isinstance(node, exp.Select):
        if isinstance(node, (exp.Window, exp.Filter)) or _is_any_value(node) or (
                isinstance(node, exp.Func) and is_aggregate_call(node)):
            return  # computed per row, inside an aggregate or its FILTER: binds as it is
        node = node.parent
    select = node
    if not isinstance(select, exp.Select) or not aggregates_here(select):
        return
    top = wrapped.parent
    if top is None:
        return
    while (top.parent is not select and top.parent is not None
           and not isinstance(top.parent, (exp.Alias, exp.Ordered, exp.Having, exp.Order))
           and not _holds_aggregate(top.parent) and not _is_branch(top.parent)):
        top = top.parent
    clause = top
    while clause.parent is not select and clause.parent is not None:
        clause = clause.parent
    if clause.arg_key not in GROUP_LEVEL_CLAUSES or _is_any_value(top.parent):
        return
    if clause.arg_key == "having" and not _of_group_keys(top, select):
        # The select list is checked to read group keys alone (enforce_min_group);
        # HAVING is not, and ANY_VALUE would turn a column outside them into one row's
        # value: left to fail, whatever the data.
        return
    wrapper = exp.Anonymous(this="any_value", expressions=[])
    top.replace(wrapper)
    wrapper.set("expressions", [top])


def _of_group_keys(node: exp.Expr, select: exp.Select) -> bool:
    group = select.args.get("group")
    keys = {k.sql() for k in group.expressions} if group is not None else set()
    return all(c.sql() in keys for c in node.find_all(exp.Column))


def _is_any_value(node: exp.Expr | None) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == "any_value"


def _source(column: exp.Column, state: State) -> tuple[str, str, str | None] | None:
    """(declared type, dataset id, mask kind) of a column read straight from a dataset,
    not through a CTE or subquery; None otherwise."""
    select = column.find_ancestor(exp.Select)
    for ref in state.refs:
        if (ref.node.alias_or_name != column.table
                or ref.node.find_ancestor(exp.Select) is not select):
            continue
        grant = state.ctx.scenario.datasets.get(ref.dataset_id)
        mask = grant.masks.get(column.name) if grant is not None else None
        for declared in state.ctx.datasets[ref.dataset_id].columns:
            if declared.name == column.name:
                return declared.type.upper().strip(), ref.dataset_id, mask.kind if mask else None
    return None


def _declared_type(column: exp.Column, state: State) -> str | None:
    """The declared type of an unmasked column read straight from a dataset."""
    source = _source(column, state)
    return source[0] if source is not None and source[2] is None else None


def _sums_exactly(argument: exp.Expr, state: State) -> bool:
    if not isinstance(argument, exp.Column):
        return False
    declared = _declared_type(argument, state)
    if declared is None:
        return False
    decimal = re.fullmatch(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*\d+\s*)?\)", declared)
    if decimal:
        return int(decimal.group(1)) <= MAX_EXACT_DECIMAL_PRECISION
    return declared in EXACT_SUM_TYPES


def _as_double(node: exp.Expr) -> exp.Expr:
    return exp.TryCast(this=node, to=exp.DataType.build("DOUBLE"))


def _bounded(node: exp.Expr) -> exp.Expr:
    value = _as_double(node)
    within = exp.LTE(this=exp.Abs(this=value.copy()), expression=exp.Literal.number(MOMENT_BOUND))
    return exp.Case(ifs=[exp.If(this=within, true=value)])


def bound_aggregates(tree: exp.Expr, state: State) -> bool:
    """Sums exact where they cannot overflow (stored integers and small decimals), else
    over bounded finite DOUBLEs, like moments; logical aggregates over booleans."""
    changed = False
    for call in list(tree.find_all(exp.Func)):
        sum_family = isinstance(call, SUM_FAMILY) or (
            isinstance(call, exp.Anonymous) and call.name.lower() in SUM_FAMILY_ANONYMOUS)
        if not sum_family and not isinstance(call, (*MOMENTS, *LOGICAL)):
            continue
        for argument in call_arguments(call):
            if sum_family and _sums_exactly(argument, state):
                continue
            if isinstance(call, LOGICAL):
                argument.replace(exp.TryCast(this=argument.copy(),
                                             to=exp.DataType.build("BOOLEAN")))
            else:
                argument.replace(_bounded(argument.copy()))
            changed = True
    return changed


class Families:
    """The kind of type of a column that reads a stored column, through CTEs and
    subqueries (``WITH f AS (SELECT * FROM flights) ... f.tailnum``): comparisons of two
    such columns of one kind convert nothing, so joins keep their hash join."""

    def __init__(self, state: State) -> None:
        self.state = state
        root = build_scope(state.query)
        self.scopes = {id(s.expression): s for s in root.traverse()} if root else {}
        self.refs = {id(r.node) for r in state.refs}

    def __call__(self, column: exp.Column) -> str | None:
        for _ in range(MAX_TRACE):
            scope = self.scopes.get(id(column.find_ancestor(exp.Select)))
            source = scope.sources.get(column.table) if scope is not None else None
            if isinstance(source, exp.Table) and id(source) in self.refs:
                return _family(column, self.state)
            found = derived_projection(column, scope) if scope is not None else None
            if found is None or not isinstance(found[0], exp.Column):
                return None
            column = found[0]
        return None


def _family(column: exp.Column, state: State) -> str | None:
    """The kind of type of a column read straight from a dataset."""
    source = _source(column, state)
    if source is None:
        return None
    declared, _, mask = source
    base = re.split(r"[\s(]", declared, maxsplit=1)[0]
    if base in NUMBER_TYPES:
        kind = "number"
    elif base in ("VARCHAR", "TEXT", "STRING"):
        kind = "text"
    elif base.startswith("TIMESTAMP"):
        kind = "timestamp"  # not DATE: far dates do not convert to TIMESTAMP
    elif base == "DATE":
        kind = "date"
    else:
        kind = base
    return f"{mask}:{kind}" if mask else kind


def make_total(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    tree = state.query
    if bound_aggregates(tree, state):
        state.note("make_total", "sums, averages and variances of computed or floating "
                   f"values ignore values beyond ±{MOMENT_BOUND:g}, infinities and NaN: they "
                   "cannot overflow")
    wrapped = wrap_failing(tree, Families(state))
    for node in wrapped:
        group_level(node)
    if any(not _hidden(node) for node in wrapped):  # the hidden columns' own steps aside
        state.note("make_total", "expressions that could fail on some value wrapped in "
                   "TRY(): a value that would raise an error gives NULL instead")
