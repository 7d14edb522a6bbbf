"""Checks that need more than one policy file: names that must resolve, types that must fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from gateway.errors import PolicyIssue
from gateway.policy.models import (
    Column,
    DataClass,
    Dataset,
    DatasetGrant,
    GeneraliseMask,
    Mode,
    Scenario,
    TruncateMask,
)

if TYPE_CHECKING:
    from gateway.policy.loading import PolicySet, Source

NUMERIC = ("SMALLINT", "INTEGER", "BIGINT", "DOUBLE", "REAL", "DECIMAL")
TEMPORAL = ("DATE", "TIMESTAMP", "TIMESTAMPTZ")


def check(policies: PolicySet) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []
    for scenario_id, scenario in policies.scenarios.items():
        source = policies.sources[("scenarios", scenario_id)]
        has_entities = False
        for dataset_id, grant in scenario.datasets.items():
            loc: list[str | int] = ["datasets", dataset_id]
            dataset = policies.datasets.get(dataset_id)
            if dataset is None:
                if ("datasets", dataset_id) not in policies.invalid:
                    issues.append(source.issue(loc, f"unknown dataset {dataset_id!r}"))
                continue
            if dataset.class_ is DataClass.closed:
                issues.append(source.issue(loc, f"dataset {dataset_id!r} is closed and "
                                           "cannot be opened in any scenario"))
            has_entities = has_entities or dataset.entity_key is not None
            issues.extend(_check_grant(source, loc, dataset, grant))
        if scenario.mode is Mode.aggregate and not has_entities:
            issues.append(source.issue(["mode"], "aggregate mode needs at least one dataset "
                                       "with an entity_key to count group sizes"))
        if scenario.noise is not None:
            issues.extend(_check_clamp(source, scenario, policies))
    for agreement_id, agreement in policies.agreements.items():
        known = agreement.scenario in policies.scenarios
        if not known and ("scenarios", agreement.scenario) not in policies.invalid:
            source = policies.sources[("agreements", agreement_id)]
            issues.append(source.issue(["scenario"], f"unknown scenario {agreement.scenario!r}"))
    return issues


def _check_grant(
    source: Source, loc: list[str | int], dataset: Dataset, grant: DatasetGrant
) -> list[PolicyIssue]:
    issues: list[PolicyIssue] = []

    def unknown(field: str, index: int | str, name: str) -> None:
        issues.append(source.issue([*loc, field, index], f"column {name!r} is not a column "
                                   f"of dataset {dataset.id!r}"))

    for i, name in enumerate(grant.columns):
        if dataset.column(name) is None:
            unknown("columns", i, name)
    for i, name in enumerate(grant.join_keys):
        if dataset.column(name) is None:
            unknown("join_keys", i, name)
    for name, mask in grant.masks.items():
        column = dataset.column(name)
        if column is None:
            unknown("masks", name, name)
            continue
        if name not in grant.columns:
            issues.append(source.issue([*loc, "masks", name], f"masked column {name!r} must "
                                       "also be listed in columns"))
        problem = _mask_type_problem(mask, column)
        if problem:
            issues.append(source.issue([*loc, "masks", name], problem))
    if grant.row_filter is not None:
        problem = _row_filter_problem(grant.row_filter, dataset)
        if problem:
            issues.append(source.issue([*loc, "row_filter"], problem))
    return issues


def _check_clamp(source: Source, scenario: Scenario, policies: PolicySet) -> list[PolicyIssue]:
    """Each clamped column is a granted numeric column of one of the scenario's datasets."""
    assert scenario.noise is not None
    granted = {name: policies.datasets[d].column(name) for d, grant in scenario.datasets.items()
               if d in policies.datasets for name in grant.columns}
    issues = []
    for name in scenario.noise.clamp:
        column = granted.get(name)
        if column is None:
            issues.append(source.issue(["noise", "clamp", name], f"column {name!r} is not "
                                       "granted by this scenario"))
        elif not column.type.startswith(NUMERIC):
            issues.append(source.issue(["noise", "clamp", name], f"clamp needs a numeric "
                                       f"column; {name!r} is {column.type}"))
    return issues


def _mask_type_problem(mask: object, column: Column) -> str | None:
    if isinstance(mask, TruncateMask) and column.type != "VARCHAR":
        return f"truncate needs a VARCHAR column; {column.name!r} is {column.type}"
    if isinstance(mask, GeneraliseMask):
        if mask.width is not None and not column.type.startswith(NUMERIC):
            return f"generalise by width needs a numeric column; {column.name!r} is {column.type}"
        if mask.unit is not None and not column.type.startswith(TEMPORAL):
            return f"generalise by unit needs a date/time column; {column.name!r} is {column.type}"
    return None


def _row_filter_problem(text: str, dataset: Dataset) -> str | None:
    try:
        parsed = sqlglot.parse(text, read="duckdb")
    except SqlglotError as exc:
        first = str(exc).splitlines()[0]
        return f"row filter does not parse as SQL: {first}"
    if len(parsed) != 1 or parsed[0] is None:
        return "row filter must be one SQL expression"
    expression = parsed[0]
    if isinstance(expression, (exp.Query, exp.Command)) or not isinstance(
        expression, (exp.Condition, exp.Predicate, exp.Boolean, exp.Paren)
    ):
        return "row filter must be a boolean SQL expression, not a statement"
    if any(True for _ in expression.find_all(exp.Query, exp.Subquery, exp.Table)):
        return "row filter may not contain subqueries or table references"
    for column in expression.find_all(exp.Column):
        if column.table or dataset.column(column.name.lower()) is None:
            return f"row filter names {column.sql('duckdb')!r}, not a column of {dataset.id!r}"
    return None
