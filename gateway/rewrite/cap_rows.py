"""Rule (records and sandbox modes): the final result has at most ``max_rows`` rows.

The cap is on the outermost query, so no LIMIT, OFFSET or UNION the user writes can
lift it. One row more than the cap is fetched so the post-check can say the result
was cut.

    >>> from gateway.rewrite.parse_statement import parse
    >>> cap(parse("SELECT a FROM t LIMIT 100000"), 10).sql()
    'SELECT a FROM t LIMIT 10'
"""

from __future__ import annotations

from sqlglot import exp

from gateway.policy.models import Mode
from gateway.rewrite.context import State

CAPPED = "__dsb_capped"  # alias of the user's query when the cap wraps it


def _literal_limit(limit: exp.Expr) -> int | None:
    if type(limit) is not exp.Limit or limit.args.get("limit_options") or limit.args.get("offset"):
        return None
    value = limit.expression
    if isinstance(value, exp.Literal) and not value.is_string and value.name.isdigit():
        return int(value.name)
    return None


def cap(query: exp.Query, ceiling: int) -> exp.Query:
    limit = query.args.get("limit")
    if limit is None:
        query.set("limit", exp.Limit(expression=exp.Literal.number(ceiling)))
        return query
    current = _literal_limit(limit)
    if current is not None:
        if current > ceiling:
            limit.set("expression", exp.Literal.number(ceiling))
        return query
    # Percentages, FETCH, expressions: keep the user's clause, cap around it.
    alias = exp.TableAlias(this=exp.to_identifier(CAPPED))
    return exp.select("*").from_(exp.Subquery(this=query, alias=alias)).limit(ceiling)


def cap_rows(state: State) -> None:
    if state.ctx.mode is Mode.aggregate:
        return
    max_rows = state.ctx.scenario.limits.max_rows
    state.tree = cap(state.query, max_rows + 1)
    state.note("cap_rows", f"cap applied: at most {max_rows} rows are returned")
