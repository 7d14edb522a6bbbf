"""Rule: each dataset reference becomes the scenario's view of the dataset.

``FROM flights AS f`` becomes ``FROM (SELECT <allowed columns, masked>[, hidden entity
column] FROM "ds_flights"."main"."data" WHERE <row filter>) AS f``. The view lists only
allowed columns, so DuckDB itself cannot bind a forbidden one, whatever the query.

    >>> # SELECT * FROM flights  becomes
    >>> # SELECT * FROM (SELECT "year", ... FROM "ds_flights"."main"."data") AS "flights"
"""

from __future__ import annotations

import functools

from sqlglot import exp

from gateway.rewrite.apply_masks import mask_expression
from gateway.rewrite.context import DatasetRef, State
from gateway.rewrite.inject_row_filters import row_filter
from sandbox.engine import source_table


def _entity_hash(key: str, salt: str, name: str) -> exp.Expr:
    """Hidden column: a keyed 128-bit hash of the entity key. Rows without a key are one
    entity together (the unknown one): as NULL they were no entity at all, invisible to k
    and to query auditing, and a difference of one of them went through. As one entity
    they count once towards k (however many rows) and a row more or less of it is a
    difference auditing sees."""
    known = exp.DPipe(this=exp.Literal.string("k"), expression=exp.cast(exp.column(key), "VARCHAR"),
                      safe=True)
    identity = exp.Coalesce(this=known, expressions=[exp.Literal.string("unknown")])
    keyed = exp.DPipe(this=exp.Literal.string(salt), expression=identity, safe=True)
    return exp.alias_(exp.Anonymous(this="md5_number", expressions=[keyed]), name)


def source_view(state: State, ref: DatasetRef) -> exp.Select:
    dataset = state.ctx.datasets[ref.dataset_id]
    grant = state.ctx.scenario.datasets[ref.dataset_id]
    projections: list[exp.Expr] = []
    for column in dataset.columns:
        if column.name not in grant.columns:
            continue
        mask = grant.masks.get(column.name)
        if mask is None:
            projections.append(exp.column(column.name))
        else:
            projections.append(mask_expression(column.name, column.type, mask, state.ctx.salt))
    if ref.hidden and dataset.entity_key:
        projections.append(_entity_hash(dataset.entity_key, state.ctx.salt, ref.hidden))
    view = exp.Select(expressions=projections, from_=exp.From(this=_engine_table(ref.dataset_id)))
    if grant.row_filter:
        view.set("where", exp.Where(this=row_filter(grant.row_filter)))
    return view


@functools.lru_cache(maxsize=256)
def _parsed_table(dataset_id: str) -> exp.Table:
    return exp.to_table(source_table(dataset_id), dialect="duckdb")


def _engine_table(dataset_id: str) -> exp.Table:
    """The engine's table for a dataset, as ``sandbox.engine.source_table`` names it."""
    return _parsed_table(dataset_id).copy()


def mount_sources(state: State) -> None:
    expands = any(
        isinstance(star, exp.Star) and not isinstance(star.parent, exp.Func)
        for star in state.query.find_all(exp.Star)
    ) or state.query.find(exp.Columns) is not None
    for ref in state.refs:
        table = ref.node
        alias = table.args.get("alias")
        if not isinstance(alias, exp.TableAlias):
            alias = exp.TableAlias(this=table.this.copy())
        view = source_view(state, ref)
        table.replace(exp.Subquery(this=view, alias=alias.copy()))
    if expands:
        for dataset_id in state.used_datasets:
            grant = state.ctx.scenario.datasets[dataset_id]
            if len(grant.columns) < len(state.ctx.datasets[dataset_id].columns):
                state.note("restrict_columns",
                           f"columns expanded: * over {dataset_id} gives only the allowed "
                           f"columns ({', '.join(grant.columns)})")
