"""Aggregate mode: a column that identifies an entity joins tables and nothing else.

The entity key, every hash-masked column and every column declared ``identifier`` name
one entity (an aircraft, a person). ``k`` counts entities per released value, but a
value computed *from the identifier itself* says something about single entities while
every group still covers ``k`` of them (red team, round 6):

- ``count(DISTINCT tailnum)`` over a hand-picked set of flights tells whether two of
  them were flown by one aircraft (linkage), and so do ``approx_count_distinct``,
  ``entropy``, a row number per aircraft or a ``SELECT DISTINCT`` in a CTE;
- a group key or condition on the masked hash (``tailnum < '8'``) splits aircraft by
  their hash, and half-splits against a known flight read the hash out bit by bit.

So in aggregate mode such a column, wherever it is renamed, may only

- be compared for equality with another identifying column (``f.tailnum = p.tailnum``,
  ``USING (tailnum)``), or be tested with ``IN (SELECT tailnum FROM planes ...)``;
- be tested for ``IS [NOT] NULL`` (rows without a key are one "unknown" entity);
- be counted without DISTINCT (``count(tailnum)``: rows that have a key);
- pass through a row-level CTE or subquery unchanged, to be used in one of these ways.

Everything else is refused with ``identifying_column``.

    >>> from pathlib import Path
    >>> from gateway.policy.loading import load_policies
    >>> from gateway.rewrite import RewriteContext, rewrite
    >>> p = load_policies(Path("policies"), require_signatures=False)
    >>> s = p.scenario("flights-aggregate")
    >>> ctx = RewriteContext(s, {d: p.dataset(d) for d in s.datasets}, salt="x" * 32)
    >>> from gateway.errors import QueryRejected
    >>> try:
    ...     rewrite("SELECT carrier, count(DISTINCT tailnum) FROM flights GROUP BY 1", ctx)
    ... except QueryRejected as exc:
    ...     print(exc.code)
    identifying_column
    >>> rewrite("SELECT p.model, count(f.tailnum) FROM flights AS f "
    ...         "JOIN planes AS p USING (tailnum) GROUP BY 1", ctx).form.dimensions
    ('p.model',)
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from gateway.policy.models import HashMask, Sensitivity
from gateway.rewrite.allowlists import aggregates_here
from gateway.rewrite.context import State, reject, snippet

# The source columns ("dataset.column") a column of a scope is computed from.
TraceFn = Callable[[exp.Column, Scope], frozenset[str]]

ALLOWED_USES = ("equality with another identifying column (a join key), IN (SELECT <key> "
                "...), IS [NOT] NULL, count(<key>) without DISTINCT")


def identifying_columns(state: State) -> frozenset[str]:
    """``dataset.column`` of every granted column that names one entity."""
    names = set()
    for dataset_id in state.used_datasets:
        dataset = state.ctx.datasets[dataset_id]
        grant = state.ctx.scenario.datasets[dataset_id]
        for column in dataset.columns:
            if column.name not in grant.columns:
                continue
            if (column.name == dataset.entity_key
                    or isinstance(grant.masks.get(column.name), HashMask)
                    or column.sensitivity is Sensitivity.identifier):
                names.add(f"{dataset_id}.{column.name.lower()}")
    return frozenset(names)


class IdentifierGuard:
    """Checks every column of every scope whose lineage reaches an identifying column.

    ``trace`` is the compiler's lineage of a column in its scope (``Compiler.column``):
    renames through CTEs and subqueries are followed there, so a column is judged by what
    it is computed from, not by its name.
    """

    def __init__(self, identifying: frozenset[str], trace: TraceFn) -> None:
        self.identifying = identifying
        self.trace = trace

    def check(self, root: Scope) -> None:
        if not self.identifying:
            return
        for scope in root.traverse():
            for column in scope.columns:
                if self._identifies(column, scope) and not self._allowed(column, scope):
                    raise reject(
                        "identifying_column",
                        f"{snippet(column)} identifies an entity; in aggregate mode it may "
                        f"only be used for {ALLOWED_USES}, here it is used in "
                        f"{snippet(_use(column))}: a distinct count, group key or condition "
                        "computed from it tells which rows belong to one entity, or spells "
                        "out its masked value", column)

    def _identifies(self, column: exp.Column, scope: Scope) -> bool:
        return bool(self.trace(column, scope) & self.identifying)

    def _allowed(self, column: exp.Column, scope: Scope) -> bool:
        node: exp.Expr = column
        while isinstance(node.parent, exp.Paren):
            node = node.parent
        parent = node.parent
        if isinstance(parent, exp.Alias):
            node, parent = parent, parent.parent
        if isinstance(parent, exp.Select) and node.arg_key == "expressions":
            return _row_level(parent)
        if isinstance(parent, exp.Count) and node.arg_key == "this":
            return True
        if isinstance(parent, exp.Is) and node.arg_key == "this":
            return isinstance(parent.expression, exp.Null)
        if isinstance(parent, (exp.EQ, exp.NullSafeEQ)):
            other = parent.expression if node.arg_key == "this" else parent.this
            while isinstance(other, exp.Paren):
                other = other.this
            return (isinstance(other, exp.Column) and self._identifies(other, scope)
                    and _joins(parent))
        if isinstance(parent, exp.In) and node.arg_key == "this":
            return self._key_subquery(parent.args.get("query"), scope)
        return False

    def _key_subquery(self, query: exp.Expr | None, scope: Scope) -> bool:
        """``IN (SELECT key FROM ...)``: its one output is an identifying column (how it
        passes through is judged in the subquery's own scope)."""
        if isinstance(query, exp.Subquery):
            query = query.this
        if not isinstance(query, exp.Select) or len(query.selects) != 1:
            return False
        output = query.selects[0].unalias()
        inner = next((s for s in scope.subquery_scopes if s.expression is query), None)
        return (isinstance(output, exp.Column) and inner is not None
                and self._identifies(output, inner))


def _row_level(select: exp.Select) -> bool:
    """A projection passes a column on unchanged only from a select that neither
    aggregates, groups nor deduplicates: each output row is one input row."""
    return not (select.args.get("distinct") or aggregates_here(select))


def _joins(condition: exp.Expr) -> bool:
    """A conjunct of a join's ON or of a WHERE: it pairs rows, it is not a value."""
    node = condition
    while isinstance(node.parent, (exp.And, exp.Paren)):
        node = node.parent
    return isinstance(node.parent, exp.Join | exp.Where) and node.arg_key in ("on", "this")


def _use(column: exp.Column) -> exp.Expr:
    """The smallest expression around ``column`` that shows how it is used."""
    node: exp.Expr = column
    while isinstance(node.parent, (exp.Paren, exp.Alias, exp.Distinct)):
        node = node.parent
    parent = node.parent
    return parent if parent is not None and not isinstance(parent, exp.Select) else node

