"""Query rewriter: SQL + scenario -> rewritten SQL and explanation, or a rejection.

``rewrite(sql, ctx)`` is pure: it parses the statement (sqlglot, DuckDB dialect), runs
the enforcement rules of ``RULES`` in order over the tree, and regenerates SQL from the
tree (never by pasting strings). Each rule is one module; each change it makes is
listed in ``Rewritten.explanation``; each refusal is a ``QueryRejected`` whose code
names the rule.

    >>> from pathlib import Path
    >>> from gateway.policy.loading import load_policies
    >>> p = load_policies(Path("policies"), require_signatures=False)
    >>> s = p.scenario("flights-records")
    >>> ctx = RewriteContext(s, {d: p.dataset(d) for d in s.datasets}, salt="x" * 32)
    >>> [c.rule for c in rewrite("SELECT carrier FROM flights", ctx).explanation]
    ['apply_masks', 'inject_row_filters', 'cap_rows']
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from gateway.errors import DsbError, QueryRejected
from gateway.rewrite.apply_masks import apply_masks
from gateway.rewrite.bound_contributions import bound_contributions
from gateway.rewrite.bound_joins import bound_joins
from gateway.rewrite.bound_packing import bound_packing
from gateway.rewrite.bound_sizes import bound_sizes
from gateway.rewrite.cap_rows import cap_rows
from gateway.rewrite.check_functions import check_functions
from gateway.rewrite.check_syntax import check_syntax
from gateway.rewrite.compile_aggregate import compile_aggregate
from gateway.rewrite.context import (
    REDACTED,
    SETS_COLUMN,
    Change,
    RewriteContext,
    Rewritten,
    State,
)
from gateway.rewrite.enforce_min_group import enforce_min_group
from gateway.rewrite.guard_isolation import guard_isolation
from gateway.rewrite.inject_row_filters import inject_row_filters
from gateway.rewrite.make_total import make_total
from gateway.rewrite.mount_sources import mount_sources
from gateway.rewrite.name_outputs import name_outputs
from gateway.rewrite.parse_statement import parse_statement, too_complex
from gateway.rewrite.resolve_tables import resolve_tables
from gateway.rewrite.restrict_columns import restrict_columns
from gateway.rewrite.soften_errors import soften_errors
from gateway.rewrite.total_aggregates import total_aggregates

logger = logging.getLogger(__name__)

__all__ = ["RULES", "Change", "RewriteContext", "Rewritten", "rewrite"]

Rule = Callable[[State], None]

# Checks first (they see the user's tree as written), then the changes.
RULES: tuple[Rule, ...] = (
    parse_statement,
    check_syntax,
    resolve_tables,
    check_functions,
    restrict_columns,
    compile_aggregate,
    bound_sizes,
    bound_joins,
    bound_packing,
    total_aggregates,
    guard_isolation,
    enforce_min_group,
    bound_contributions,
    soften_errors,
    make_total,
    apply_masks,
    inject_row_filters,
    mount_sources,
    cap_rows,
)


DUCKDB = Dialect.get_or_raise("duckdb")


def _generate(tree: exp.Expr) -> str:
    # identify=True quotes every identifier, so DuckDB reads each name exactly as
    # sqlglot did; comments are dropped (a comment is text the engine would see).
    # copy=False: the tree is not used again, and copying it was a third of the time.
    return DUCKDB.generate(tree, copy=False, identify=True, comments=False)


def _redacted(sql: str, salt: str) -> str:
    """``sql`` with the salt literal replaced: the display copy never holds the secret."""
    literal = exp.Literal.string(salt).sql(dialect="duckdb")
    return sql.replace(literal, exp.Literal.string(REDACTED).sql(dialect="duckdb"))


def rewrite(sql: str, ctx: RewriteContext) -> Rewritten:
    """Rewrite ``sql`` to what ``ctx.scenario`` allows, or raise ``QueryRejected``."""
    state = State(sql=sql, ctx=ctx)
    try:
        for rule in RULES:
            rule(state)
        # Last: the result's names are the user's, whatever the rules made of the text.
        name_outputs(state)
        executable = _generate(state.query)
    except RecursionError:  # whatever the depth checks let through: a refusal, not a 500
        raise too_complex("the statement nests too deep to be analysed") from None
    except DsbError:
        raise
    except Exception:  # noqa: BLE001 - fail closed: a statement the rules cannot handle
        # is refused (a bug in a rule must never let a statement through, nor answer 500).
        logger.exception("rewriter failed on a statement; refused as not_analyzable")
        raise QueryRejected("not_analyzable", "the statement could not be analysed; "
                            "simplify it (the failure was logged for the operators)") from None
    display = _redacted(executable, ctx.salt)
    if ctx.salt in display:  # fail closed: the salt must never reach a user
        raise DsbError("could not redact the mask salt from the displayed SQL",
                       code="internal_error")
    scenario = ctx.scenario
    allowed = {c for d in state.used_datasets for c in scenario.datasets[d].columns}
    every = {c.name for d in state.used_datasets for c in ctx.datasets[d].columns}
    return Rewritten(
        sql=executable,
        display_sql=display,
        explanation=list(state.changes),
        datasets=state.used_datasets,
        mode=scenario.mode,
        k=scenario.k,
        max_rows=scenario.limits.max_rows,
        result_cells=scenario.limits.result_cells,
        hidden_columns=tuple(state.hidden_columns),
        allowed_columns=frozenset(allowed),
        forbidden_columns=frozenset(every - allowed),
        key_columns=tuple(state.key_columns),
        audited=SETS_COLUMN in state.hidden_columns,
        noise=state.noise,
        form=state.form,
    )
