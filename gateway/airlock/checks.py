"""Automatic disclosure checks on a file asking to leave the sandbox.

Tables (CSV, Parquet) are checked for: identifier columns, a minimum cell count ``k``
on every count column, and the dominance rule on ``sum_X``/``max_X`` pairs. Any other
file only gets a size limit: its content cannot be judged by a machine, so a human
decides (``needs_review``). A table that passes still needs a human approval.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

TABLE_SUFFIXES = (".csv", ".parquet")
# Names that conventionally hold a group's size: the k rule applies to them.
COUNT_COLUMN = re.compile(r"^(n|count|cnt|freq|frequency|count_.+|n_.+|.+_count)$", re.I)
DOMINANCE_SHARE = 0.85  # (1, 85%) rule: one contributor may not make up >85% of a cell


class Verdict(StrEnum):
    passed = "passed"            # automatic checks found nothing; a human still approves
    failed = "failed"            # disclosive: cannot be approved
    needs_review = "needs_review"  # not a table: a human decides on the content


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str


@dataclass
class CheckResult:
    verdict: Verdict
    kind: str  # "table" or "file"
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict.value, "kind": self.kind,
                "findings": [{"rule": f.rule, "message": f.message} for f in self.findings]}


@dataclass(frozen=True)
class CheckPolicy:
    k: int
    identifier_columns: frozenset[str]  # lower-case names that must not leave
    max_bytes: int = 5 * 1024 * 1024


def check(filename: str, content: bytes, policy: CheckPolicy) -> CheckResult:
    """Run the checks that apply to ``filename``; never raises on bad content."""
    if len(content) > policy.max_bytes:
        return CheckResult(Verdict.failed, "file", [Finding(
            "size_limit", f"{len(content)} bytes exceeds the limit of {policy.max_bytes}")])
    if not filename.lower().endswith(TABLE_SUFFIXES):
        return CheckResult(Verdict.needs_review, "file", [Finding(
            "human_review", "not a table: a supervisor must read it before it leaves")])
    try:
        table = _read_table(filename, content)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        return CheckResult(Verdict.failed, "table", [Finding(
            "unreadable", f"the table could not be read: {str(exc)[:200]}")])
    findings = [*_identifiers(table, policy), *_min_cell_count(table, policy),
                *_dominance(table)]
    return CheckResult(Verdict.failed if findings else Verdict.passed, "table", findings)


def _read_table(filename: str, content: bytes) -> pa.Table:
    if filename.lower().endswith(".parquet"):
        return pq.read_table(io.BytesIO(content))
    return pa_csv.read_csv(io.BytesIO(content))


def _identifiers(table: pa.Table, policy: CheckPolicy) -> list[Finding]:
    return [Finding("identifier_column", f"column {name!r} is an identifier of the data")
            for name in table.column_names if name.lower() in policy.identifier_columns]


def _min_cell_count(table: pa.Table, policy: CheckPolicy) -> list[Finding]:
    counts = [n for n in table.column_names if COUNT_COLUMN.match(n)
              and pa.types.is_integer(table.schema.field(n).type)]
    if not counts:
        # Without counts nobody can tell a row from an aggregate: treat it as microdata.
        return [Finding("no_cell_counts", "a table must carry a count column (n, count, "
                        f"..._count) showing every row covers at least k={policy.k} people")]
    found = []
    for name in counts:
        values = table.column(name).to_pylist()
        small = sum(1 for v in values if v is None or v < policy.k)
        if small:
            found.append(Finding("min_cell_count", f"{small} row(s) of {name!r} are below "
                                 f"the minimum cell count k={policy.k}"))
    return found


def _dominance(table: pa.Table) -> list[Finding]:
    found = []
    names = set(table.column_names)
    for name in sorted(names):
        if not name.lower().startswith("sum_") or f"max_{name[4:]}" not in names:
            continue
        sums = table.column(name).to_pylist()
        maxes = table.column(f"max_{name[4:]}").to_pylist()
        dominated = sum(1 for s, m in zip(sums, maxes, strict=True)
                        if s and m is not None and s > 0 and m / s > DOMINANCE_SHARE)
        if dominated:
            found.append(Finding("dominance", f"{dominated} cell(s) of {name!r} are dominated "
                                 f"by one contributor (> {DOMINANCE_SHARE:.0%} of the total)"))
    return found
