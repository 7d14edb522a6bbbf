"""Rule: each dataset's row filter is applied at the source.

The filter is part of the dataset's source view (``mount_sources``), evaluated on the
raw values before masking, so it holds inside joins, subqueries, CTEs and unions: no
query can see a row it excludes.

    >>> row_filter("age >= 18").sql()
    'age >= 18'
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.errors import DsbError
from gateway.rewrite.context import State


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> exp.Expr:
    try:
        return sqlglot.parse_one(text, read="duckdb", into=exp.Condition)
    except ParseError as exc:
        raise DsbError(f"the scenario's row filter {text!r} does not parse: {exc}",
                       code="invalid_policy") from None


def row_filter(text: str) -> exp.Expr:
    """A fresh tree of the policy's filter (cached parse, copied per use)."""
    return _parsed(text).copy()


def inject_row_filters(state: State) -> None:
    for dataset_id in state.used_datasets:
        text = state.ctx.scenario.datasets[dataset_id].row_filter
        if text:
            row_filter(text)  # fail early on a broken policy
            state.note("inject_row_filters",
                       f"filter injected: only rows of {dataset_id} where {text} are visible")
