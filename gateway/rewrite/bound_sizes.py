"""Rule (aggregate mode): no value can grow large enough to exhaust memory or time.

``TRY()`` turns an error into NULL, but not running out of memory or time: a query that
builds a 2 GB string only for one person's row (``lpad('a', CASE WHEN <row> THEN 2e9
ELSE 1 END, 'b')``, or ``x || x`` doubled through thirty CTEs) fails for that row alone,
and the failure is the answer. So every text a query computes gets a size bound,
``a * L + b`` where ``L`` is the longest stored value it reads, traced through CTEs and
subqueries; a statement whose bound passes ``MAX_GROWTH`` or ``MAX_CONSTANT`` is refused
with ``too_complex``. Lengths and counts are constants: ``lpad(x, 5, '0')``.

    >>> from gateway.rewrite.parse_statement import parse
    >>> from sqlglot.optimizer.scope import build_scope
    >>> q = parse("WITH a AS (SELECT x || x AS x FROM t) SELECT count(lpad(a.x, 4, '0')) FROM a")
    >>> bound = Bounds(derived_projection)
    >>> bound.select(build_scope(q))
    >>> bound.worst
    Size(growth=2.0, constant=64.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, build_scope

from gateway.policy.models import Mode
from gateway.rewrite.context import State, reject, snippet
from gateway.rewrite.parse_statement import too_complex

# A computed text may be this many times the longest stored value it reads...
MAX_GROWTH = 64.0
# ...plus this many characters of constants (and padding).
MAX_CONSTANT = 100_000.0
# Longest text any other function or cast can make of a scalar (a number, a date, a hash).
SCALAR_TEXT = 64.0
ALIGN = (exp.Pad,)
SAME_SIZE: tuple[type[exp.Expr], ...] = (
    exp.Lower, exp.Upper, exp.Trim, exp.Reverse, exp.Initcap, exp.Left, exp.Right,
    exp.Substring, exp.Translate, exp.Paren, exp.Alias, exp.Nullif,
)
CHOICES: tuple[type[exp.Expr], ...] = (
    exp.Case, exp.If, exp.Coalesce, exp.Greatest, exp.Least,
)


@dataclass(frozen=True)
class Size:
    """At most ``growth * L + constant`` characters."""

    growth: float = 0.0
    constant: float = 0.0

    def __add__(self, other: Size) -> Size:
        return Size(self.growth + other.growth, self.constant + other.constant)

    def scaled(self, factor: float) -> Size:
        return Size(self.growth * factor, self.constant * factor)

    def most(self, other: Size) -> Size:
        return Size(max(self.growth, other.growth), max(self.constant, other.constant))


SCALAR = Size(0.0, SCALAR_TEXT)
STORED = Size(1.0, 0.0)


def _literal_length(node: exp.Expr | None) -> float | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        return float(len(node.this))
    return None


def _count(node: exp.Expr | None) -> float | None:
    """An integer constant (``5``), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(int(node.this))
        except ValueError:
            return None
    return None


class Bounds:
    """Size bounds of the expressions of a query, scope by scope (inner scopes first, so
    a column of a CTE or subquery has its projection's bound)."""

    def __init__(self, derived: Callable[[exp.Column, Scope], tuple[exp.Expr, Scope] | None]):
        # derived(column, scope): the projection a column reads and its scope, if computed.
        self.derived = derived
        self.sizes: dict[int, Size] = {}
        self.worst = Size()

    def select(self, root: Scope) -> None:
        for scope in root.traverse():
            order: list[exp.Expr] = []
            stack: list[exp.Expr] = list(scope.expression.iter_expressions())
            while stack:  # iterative: a chain of 1,000 ANDs is 1,000 levels deep
                node = stack.pop()
                if isinstance(node, exp.Query):
                    continue  # its own scope
                order.append(node)
                stack.extend(node.iter_expressions())
            for node in reversed(order):  # every node after its operands
                size = self.sizes[id(node)] = self.size(node, scope)
                self.worst = self.worst.most(size)
                if size.growth > MAX_GROWTH or size.constant > MAX_CONSTANT:
                    raise too_complex(
                        f"{snippet(node)} can make a text of {size.growth:g} times the "
                        f"longest stored value plus {size.constant:g} characters (at most "
                        f"{MAX_GROWTH:g} times plus {MAX_CONSTANT:g} in aggregate mode): a "
                        "value built that large for chosen rows would exhaust memory or "
                        "time, and the failure would be an answer")

    def _of(self, node: exp.Expr) -> Size:
        return self.sizes.get(id(node), SCALAR)

    def size(self, node: exp.Expr, scope: Scope) -> Size:
        """The bound of ``node``, its operands' bounds being known."""
        if isinstance(node, exp.Column):
            found = self.derived(node, scope)
            return STORED if found is None else self._of(found[0])
        if isinstance(node, exp.Literal):
            return Size(0.0, float(len(node.this)))
        parts = [self._of(c) for c in node.iter_expressions() if not isinstance(c, exp.DataType)]
        if isinstance(node, (exp.DPipe, exp.Concat, exp.ConcatWs)):
            total = Size()
            for part in parts:
                total = total + part
            # concat_ws: the separator (first) goes between every two of the others.
            return total + parts[0].scaled(len(parts)) if isinstance(node, exp.ConcatWs) else total
        if isinstance(node, ALIGN):
            length = _count(node.expression)
            if length is None or length > MAX_CONSTANT:
                raise reject("too_complex",
                             f"{snippet(node)}: in aggregate mode the length of lpad/rpad is a "
                             f"constant up to {MAX_CONSTANT:g}", node)
            return Size(0.0, length)
        if isinstance(node, exp.Replace):
            pattern = _literal_length(node.expression)
            replacement = _literal_length(node.args.get("replacement"))
            if pattern is None or replacement is None:
                raise reject("not_analyzable",
                             f"{snippet(node)}: in aggregate mode replace() takes constant "
                             "texts for what to find and what to put instead", node)
            return parts[0].scaled(max(1.0, replacement / max(pattern, 1.0)))
        if isinstance(node, exp.RegexpReplace):
            raise reject("not_analyzable",
                         f"{snippet(node)}: regexp_replace is not available in aggregate mode "
                         "(a replacement can repeat what it matches); use replace()", node)
        if isinstance(node, (*SAME_SIZE, *CHOICES)):
            out = Size()
            for part in parts:
                out = out.most(part)
            return out
        # Predicates, arithmetic, aggregates, hashes, dates: a scalar; a cast of a text
        # keeps its size.
        if isinstance(node, (exp.Cast, exp.TryCast)) and parts:
            return parts[0].most(SCALAR)
        return SCALAR


def derived_projection(column: exp.Column, scope: Scope) -> tuple[exp.Expr, Scope] | None:
    """The projection a column of ``scope`` reads from a CTE or subquery, and its scope;
    None for a column of a table."""
    source = scope.sources.get(column.table)
    if not isinstance(source, Scope) or not isinstance(source.expression, exp.Select):
        return None
    for projection in source.expression.selects:
        if projection.alias_or_name.lower() == column.name.lower():
            return projection.unalias(), source
    return None


def bound_sizes(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    root = build_scope(state.query)
    if root is not None:
        Bounds(derived_projection).select(root)
