"""Rule: masked columns are replaced by their mask expression at the source.

The source view of a dataset (see ``mount_sources``) selects each allowed column
through this rule, so no path through the query (joins, subqueries, ``*``, whole-row
tricks) sees the raw value of a masked column:

- ``hash``: the first ``length`` hex digits of sha256(salt || value); the salt is
  per agreement and secret, so values join within one agreement and not across;
- ``truncate``: the first ``length`` characters of the text;
- ``generalise``: numbers floored to a multiple of ``width``; dates truncated to a unit.

    >>> from gateway.policy.models import TruncateMask
    >>> mask_expression("phone", "VARCHAR", TruncateMask(kind="truncate", length=3), "").sql()
    'LEFT(CAST(phone AS VARCHAR), 3) AS phone'
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import GeneraliseMask, HashMask, Mask, TruncateMask
from gateway.rewrite.context import State


def _type(declared: str) -> exp.DataType:
    return exp.DataType.build(declared, dialect="duckdb")


def mask_expression(column: str, declared_type: str, mask: Mask, salt: str) -> exp.Expr:
    """The masked value of ``column``, aliased to the column's own name."""
    raw = exp.column(column)
    value: exp.Expr
    if isinstance(mask, HashMask):
        literal = exp.Literal.string(salt)
        keyed = exp.DPipe(this=literal, expression=exp.cast(raw, "VARCHAR"), safe=True)
        value = exp.Left(this=exp.SHA2(this=keyed, length=exp.Literal.number(256)),
                         expression=exp.Literal.number(mask.length))
    elif isinstance(mask, TruncateMask):
        value = exp.Left(this=exp.cast(raw, "VARCHAR"),
                         expression=exp.Literal.number(mask.length))
    else:
        assert isinstance(mask, GeneraliseMask)
        if mask.unit is not None:
            value = exp.cast(exp.TimestampTrunc(this=raw, unit=exp.Var(this=mask.unit.upper())),
                             _type(declared_type))
        else:
            width = exp.Literal.number(mask.width)
            value = exp.Mul(this=exp.Floor(this=exp.Div(this=raw, expression=width)),
                            expression=width.copy())
            value = exp.cast(value, _type(declared_type))
    return exp.alias_(value, column)


def describe(column: str, mask: Mask) -> str:
    if isinstance(mask, HashMask):
        return f"{column} → keyed hash ({mask.length} hex digits, same within your agreement)"
    if isinstance(mask, TruncateMask):
        return f"{column} → its first {mask.length} characters"
    assert isinstance(mask, GeneraliseMask)
    if mask.unit is not None:
        return f"{column} → truncated to the {mask.unit}"
    return f"{column} → rounded down to a multiple of {mask.width:g}"


def apply_masks(state: State) -> None:
    for dataset_id in state.used_datasets:
        grant = state.ctx.scenario.datasets[dataset_id]
        for column, mask in sorted(grant.masks.items()):
            if column in grant.columns:
                state.note("apply_masks", f"mask applied on {dataset_id}: {describe(column, mask)}")
