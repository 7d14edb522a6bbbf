"""Which entities each aggregate of an output row used: the input of query auditing.

A k-threshold holds per query; across queries two groups that differ by one person
give that person away by subtraction (differencing), and a small group padded with a
known big one does too (trackers). To see that, the gateway must know, for every
released value, over which rows of which entities it was computed. This module builds
the hidden expression that reports it, one entry per distinct set of rows:

- ``h``: a histogram keyed hash of the entity -> number of its rows in the set (rows,
  not only entities: dropping one flight of an aircraft that has others is differencing
  too, and is seen as a changed count);
- ``m``: what was measured over those rows: ``*`` for row counts (``count``, a CASE
  branch with a constant), ``distinct x`` for ``count(DISTINCT x)``, else the measured
  expression (``income``). Only releases of the same measure can be subtracted.

The sets are the same ones ``enforce_min_group`` counts for its threshold: the rows an
aggregate used (its arguments non-NULL, its FILTER) and each CASE/IF branch of it.

    >>> from sqlglot import parse_one
    >>> call = parse_one("sum(CASE WHEN a = 1 THEN x ELSE 0 END)")
    >>> [m for _, m in terms(call, None)]
    ['case when a = 1 then x else 0 end', 'x', '*']
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from gateway.rewrite.context import normal
from gateway.rewrite.guard_isolation import branch_conditions

ROWS = "*"  # the measure of a row count
COUNTS: tuple[type[exp.Expr], ...] = (exp.Count, exp.CountIf, exp.RegrCount)
CONSTANTS: tuple[type[exp.Expr], ...] = (exp.Literal, exp.Null, exp.Boolean)

Contribution = Callable[[exp.Expr], exp.Expr | None]


def _arguments(call: exp.Expr) -> list[exp.Expr]:
    target = call.this if isinstance(call.this, exp.Distinct) else None
    args = target.expressions if target else [call.this, *call.expressions]
    return [a for a in args if isinstance(a, exp.Expr) and not isinstance(a, exp.Star)]


def _constant(value: exp.Expr | None) -> bool:
    while isinstance(value, (exp.Neg, exp.Paren, exp.Cast, exp.TryCast)):
        value = value.this
    return value is None or isinstance(value, CONSTANTS)


def measure(call: exp.Expr, value: exp.Expr | None = None) -> str:
    """What ``call`` measures over its rows (``value``: one branch of its argument)."""
    args = _arguments(call)
    if isinstance(call.this, exp.Distinct) or isinstance(call, exp.ApproxDistinct):
        return "distinct " + ", ".join(normal(a) for a in args)
    if isinstance(call, COUNTS):
        return ROWS
    if value is not None:
        return ROWS if _constant(value) else normal(value)
    if not args or all(_constant(a) for a in args):
        return ROWS
    return ", ".join(normal(a) for a in args)


def branch_values(call: exp.Expr) -> list[exp.Expr | None]:
    """The value of each CASE/IF branch in ``call``, in ``branch_conditions`` order."""
    out: list[exp.Expr | None] = []
    for node in call.find_all(exp.Case, exp.If):
        if isinstance(node.parent, exp.Case):
            continue
        if isinstance(node, exp.Case):
            out += [branch.args.get("true") for branch in node.args.get("ifs") or []]
            out.append(node.args.get("default"))
        else:
            out += [node.args.get("true"), node.args.get("false")]
    return out


def terms(call: exp.Expr, contribution: exp.Expr | None) -> list[tuple[exp.Expr | None, str]]:
    """(condition on rows, measure) for the rows ``call`` used and each of its branches."""
    out: list[tuple[exp.Expr | None, str]] = [(contribution, measure(call))]
    for branch, value in zip(branch_conditions(call), branch_values(call), strict=True):
        taken = exp.and_(contribution.copy(), exp.Paren(this=branch)) \
            if contribution is not None else branch
        out.append((taken, measure(call, value)))
    return out


def _histogram(alias: str, column: str, condition: exp.Expr | None) -> exp.Expr:
    entity = exp.column(column, table=alias)
    # 64 bits of the 128-bit keyed hash: collisions stay negligible at 10^6 entities.
    short = exp.TryCast(this=exp.BitwiseRightShift(this=entity, expression=exp.Literal.number(64)),
                     to=exp.DataType.build("UBIGINT", dialect="duckdb"))
    present = exp.Not(this=exp.Is(this=entity.copy(), expression=exp.Null()))
    where = exp.and_(present, exp.Paren(this=condition.copy())) if condition is not None \
        else present
    return exp.Filter(this=exp.Anonymous(this="histogram", expressions=[short]),
                      expression=exp.Where(this=where))


def sets_column(hidden: list[tuple[str, str]], aggregates: list[exp.Expr],
                contribution: Contribution) -> exp.Expr | None:
    """``[{'m': [measures], 'h': histogram(...) FILTER (...)}, ...]`` or None (no entities)."""
    if not hidden:
        return None
    by_condition: dict[str, tuple[exp.Expr | None, set[str]]] = {}
    for call in aggregates:
        for condition, what in terms(call, contribution(call)):
            key = condition.sql(dialect="duckdb") if condition is not None else ""
            by_condition.setdefault(key, (condition, set()))[1].add(what)
    entries: list[exp.Expr] = []
    for condition, measures in by_condition.values():
        labels = exp.Array(expressions=[exp.Literal.string(m) for m in sorted(measures)])
        for alias, column in hidden:
            entries.append(exp.Struct(expressions=[
                exp.PropertyEQ(this=exp.to_identifier("m"), expression=labels.copy()),
                exp.PropertyEQ(this=exp.to_identifier("h"),
                               expression=_histogram(alias, column, condition)),
            ]))
    return exp.Array(expressions=entries) if entries else None
