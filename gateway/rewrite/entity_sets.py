"""Which entities each aggregate of an output row used: the input of query auditing.

A k-threshold holds per query; across queries two groups that differ by one person
give that person away by subtraction (differencing), and a small group padded with a
known big one does too (trackers). To see that, the gateway must know, for every
released value, over which rows of which entities it was computed. This module builds
the hidden expression that reports it, one entry per distinct set of rows:

- ``h``: a histogram keyed hash of the entity -> number of its rows in the set (rows,
  not only entities: dropping one flight of an aircraft that has others is differencing
  too, and is seen as a changed count);
- ``m``: what was measured over those rows, by meaning (``measure``): ``*`` for row
  counts, ``distinct <columns>`` for ``count(DISTINCT ...)``, else each source column
  the value is computed from (``residents.income`` for ``income``, ``income * 1`` or a
  CTE column renamed from income). Only releases of a shared measure can be subtracted.

The sets are the same ones ``enforce_min_group`` counts for its threshold: the rows an
aggregate used (its arguments non-NULL, its FILTER; for a numeric aggregate only the
non-zero ones) and each branch of its CASE/IF and indicators.

    >>> from sqlglot import parse_one
    >>> call = parse_one("sum(CASE WHEN a = 1 THEN x ELSE 0 END)")
    >>> call.meta[MEASURE] = ("t.x",)  # compile_aggregate's lineage
    >>> [m for _, m in terms(call, None)]
    [['t.x'], ['t.x'], ['t.x']]
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

from gateway.rewrite.compile_aggregate import MEASURE, ROWS
from gateway.rewrite.context import normal
from gateway.rewrite.guard_isolation import branch_conditions

COUNTS: tuple[type[exp.Expr], ...] = (exp.Count, exp.CountIf, exp.RegrCount)

Contribution = Callable[[exp.Expr], exp.Expr | None]


def measure(call: exp.Expr) -> list[str]:
    """What ``call`` measures, by lineage: the source columns of its value (set by
    ``compile_aggregate``), ``*`` for row counts, ``distinct <columns>``. ``income``,
    ``income * 1`` and a column renamed from income in a CTE all measure
    ``residents.income``: releases of any of them can be subtracted from one another."""
    label = call.meta.get(MEASURE)
    if label:
        return list(label)
    if isinstance(call, COUNTS) and not isinstance(call.this, exp.Distinct):
        return [ROWS]
    return sorted({normal(c) for c in call.find_all(exp.Column)}) or [ROWS]


def terms(call: exp.Expr, contribution: exp.Expr | None,
          moving: exp.Expr | None = None) -> list[tuple[exp.Expr | None, list[str]]]:
    """(condition on rows, measures) for the rows that determine ``call``'s value (for a
    numeric aggregate the non-zero ones: a zero adds nothing, and two sets that differ
    only in zeros are not a difference) and each of its branches."""
    measures = measure(call)
    out: list[tuple[exp.Expr | None, list[str]]] = [
        (moving if moving is not None else contribution, measures)]
    out += [(condition, measures)
            for condition in column_terms(call, contribution, moving)]
    for branch in branch_conditions(call):
        taken = exp.and_(contribution.copy(), exp.Paren(this=branch)) \
            if contribution is not None else branch
        out.append((taken, measures))
    return out


def column_terms(call: exp.Expr, contribution: exp.Expr | None,
                 moving: exp.Expr | None) -> list[exp.Expr]:
    """The rows where each column of a numeric aggregate's value moves it.

    ``sum(x + y)`` less ``sum(y)`` is ``sum(x)``: over the rows where x is not 0, which
    may be one entity's while y moves every row; and against ``sum(x)`` over all rows, a
    ``sum(x + y)`` over all rows but one gives that row's x (red team round 8). So each
    column counts towards k, and is audited, on its own rows as well: the rows the
    aggregate reads where that column is not 0, whatever the rest of the value (with the
    whole value's non-zero rows, ``x + hour`` made them differ where ``x = -hour``)."""
    if moving is None:  # not a numeric aggregate
        return []
    out: list[exp.Expr] = []
    for column in _value_columns(call):
        moved = is_nonzero(column)
        out.append(exp.and_(contribution.copy(), moved) if contribution is not None
                   else moved)
    return out


def is_nonzero(value: exp.Expr, bound: float | None = None) -> exp.Expr:
    """True where ``value`` (as a DOUBLE) is not 0, and within ``bound`` if given; never
    NULL."""
    number = exp.TryCast(this=value.copy(), to=exp.DataType.build("DOUBLE"))
    test: exp.Expr = exp.NEQ(this=number, expression=exp.Literal.number(0))
    if bound is not None:
        test = exp.Paren(this=exp.and_(test, exp.LTE(this=exp.Abs(this=number.copy()),
                                                     expression=exp.Literal.number(bound))))
    return exp.Coalesce(this=test, expressions=[exp.false()])


VALUE_PARENTS: tuple[type[exp.Expr], ...] = (
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Paren, exp.Cast, exp.TryCast,
)


def _value_columns(call: exp.Expr) -> list[exp.Column]:
    """Columns that are terms of the aggregate's value (not of its conditions)."""
    found: dict[str, exp.Column] = {}
    for column in call.find_all(exp.Column):
        node: exp.Expr = column
        while node.parent is not None and node.parent is not call:
            parent = node.parent
            in_case_value = isinstance(parent, exp.If) and node.arg_key == "true" or \
                isinstance(parent, exp.Case) and node.arg_key in ("ifs", "default")
            if not (isinstance(parent, VALUE_PARENTS) or in_case_value):
                break
            node = parent
        else:
            if node.parent is call and node.arg_key == "this":
                found.setdefault(column.sql(), column)
    return list(found.values())


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
                contribution: Contribution, moving: Contribution) -> exp.Expr | None:
    """``[{'m': [measures], 'h': histogram(...) FILTER (...)}, ...]`` or None (no entities)."""
    if not hidden:
        return None
    by_condition: dict[str, tuple[exp.Expr | None, set[str]]] = {}
    for call in aggregates:
        for condition, what in terms(call, contribution(call), moving(call)):
            key = condition.sql(dialect="duckdb") if condition is not None else ""
            by_condition.setdefault(key, (condition, set()))[1].update(what)
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
