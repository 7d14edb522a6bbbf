"""Rule (aggregate mode): aggregates, and what stands above them, cannot fail.

``TRY()`` (``make_total``) cannot hold an aggregate, and DuckDB fails some aggregates on
values: a HUGEINT or DECIMAL(38) sum that overflows, a variance whose result is not
finite, ``bool_and`` of a text that is not a boolean. Above an aggregate,
``ln(count(*) - 1)`` or ``count(*) * 9e18`` fail on the value of a group, even one that
is then suppressed. Each failure, behind a condition on one row, is an answer. So, on
the user's tree before the hidden columns are added (the arguments of aggregates are made
total by ``make_total``, once the hidden columns have copied them):

- above an aggregate stand only arithmetic and functions that cannot fail on a DOUBLE,
  and the aggregates they use are converted to DOUBLE; a CASE there gives aggregates
  and numbers only;
- ``LIKE ... ESCAPE`` takes a one-character literal and ``time_bucket`` a constant
  period (DuckDB checks both row by row, with errors ``try()`` does not catch).

    >>> from gateway.rewrite.parse_statement import parse
    >>> tree = parse("SELECT count(*) * 100 / sum(n) AS share FROM t")
    >>> _ = guard_above_aggregates(tree); tree.sql()
    'SELECT TRY_CAST(COUNT(*) AS DOUBLE) * 100 / TRY_CAST(SUM(n) AS DOUBLE) AS share FROM t'
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.allowlists import is_aggregate_call
from gateway.rewrite.context import State, reject, snippet
from gateway.rewrite.make_total import (
    CONTAINERS,
    PREDICATES,
    _as_double,
    _bare,
    _constant,
    _holds_aggregate,
    _is_branch,
    _is_try,
)

# What may stand above an aggregate: arithmetic and these functions, all total once the
# aggregate is a DOUBLE (which saturates at infinity); ln, sqrt and the like are not.
ABOVE_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Neg, exp.Pow, exp.Round,
    exp.Ceil, exp.Floor, exp.Abs, exp.Sign, exp.Exp, exp.Greatest, exp.Least, exp.Coalesce,
    exp.Nullif, exp.Trunc,
)
DECISIONS: tuple[type[exp.Expr], ...] = (exp.Case, exp.If)
LOGIC: tuple[type[exp.Expr], ...] = (*PREDICATES, exp.Cast, exp.TryCast, exp.Paren)


def guard_above_aggregates(tree: exp.Expr) -> bool:
    """Above an aggregate (``count(*) * 1e18``, ``ln(sum(x) - 1)``, ``CASE WHEN
    count(*) > 1 THEN 'a' ELSE count(*) END``) an error would tell something about the
    values of a group, even of one that is then suppressed: aggregates used in arithmetic
    become DOUBLE, and only operations that cannot fail on a DOUBLE are accepted."""
    changed = False
    for node in list(tree.find_all(exp.Func, exp.Binary, exp.Unary, exp.Case, exp.If)):
        if ((isinstance(node, exp.Func) and is_aggregate_call(node)) or _is_try(node)
                or isinstance(node, CONTAINERS) or _is_branch(node)
                or not _holds_aggregate(node)):
            continue
        if isinstance(node, LOGIC):
            continue
        if isinstance(node, DECISIONS):
            values = [b.args.get("true") for b in node.args.get("ifs") or []]
            values += [node.args.get("true"), node.args.get("default"), node.args.get("false")]
            for value in filter(None, values):
                if not (_holds_aggregate(value) or (_constant(value) and not (
                        isinstance(_bare(value), exp.Literal) and _bare(value).is_string))):
                    raise reject("not_analyzable",
                                 f"{snippet(node)}: next to an aggregate, a CASE may give only "
                                 "aggregates and numbers", value)
        elif not isinstance(node, ABOVE_AGGREGATES):
            raise reject("not_analyzable",
                         f"{snippet(node)} can fail on some values of the aggregate inside it, "
                         "and the failure would say which; above an aggregate use arithmetic, "
                         "round, abs, greatest, least or coalesce", node)
        for operand in list(node.iter_expressions()):
            bare = _bare(operand)
            if isinstance(bare, exp.Func) and is_aggregate_call(bare):
                bare.replace(_as_double(bare.copy()))
                changed = True
    return changed


def _positive(text: str) -> bool:
    try:
        return float(text.split()[0]) > 0
    except (ValueError, IndexError):
        return False


def check_constants(tree: exp.Expr) -> None:
    """Arguments DuckDB checks in a way ``try()`` does not catch: ``time_bucket`` fails
    as "not implemented" on a period that is not positive or an unknown time zone."""
    for bucket in tree.find_all(exp.DateBin):
        period = bucket.this
        while isinstance(period, exp.Paren):
            period = period.this
        quantity = period.this if isinstance(period, exp.Interval) else period
        while isinstance(quantity, exp.Paren):
            quantity = quantity.this
        others = [a for a in bucket.iter_expressions() if a is not bucket.this
                  and a is not bucket.expression]
        # An origin or a time zone that DuckDB cannot use fails as "not implemented" too,
        # even as a constant, once a row gets there: the two-argument form only.
        if not (isinstance(quantity, exp.Literal) and _positive(quantity.name)) or others:
            raise reject("not_analyzable",
                         f"{snippet(bucket)}: in aggregate mode time_bucket takes a positive "
                         "constant period and a timestamp (time_bucket(INTERVAL 1 DAY, ts)), "
                         "no origin or time zone", bucket)


def check_escapes(tree: exp.Expr) -> None:
    for escape in tree.find_all(exp.Escape):
        sign = escape.expression
        if not (isinstance(sign, exp.Literal) and sign.is_string and len(sign.this) <= 1):
            raise reject("not_analyzable",
                         f"{snippet(escape)}: ESCAPE takes one character, written as a "
                         "literal ('\\')", escape)


def total_aggregates(state: State) -> None:
    if state.ctx.mode is not Mode.aggregate:
        return
    tree = state.query
    check_escapes(tree)
    check_constants(tree)
    if guard_above_aggregates(tree):
        state.note("total_aggregates", "aggregates used in arithmetic are taken as DOUBLE: "
                   "it cannot overflow")
