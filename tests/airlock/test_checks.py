"""Automatic disclosure checks: each rule flags what it should and passes safe tables."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.airlock.checks import CheckPolicy, Verdict, check
from gateway.airlock.stamp import stamp

POLICY = CheckPolicy(k=10, identifier_columns=frozenset({"resident_id", "phone"}), max_bytes=1000)


def rules(result: object) -> set[str]:
    return {f.rule for f in result.findings}  # type: ignore[attr-defined]


def test_safe_table_passes() -> None:
    result = check("t.csv", b"district,n,avg_income\nA,12,100\nB,40,90\n", POLICY)
    assert result.verdict is Verdict.passed and result.kind == "table"


def test_small_cell_is_flagged() -> None:
    result = check("t.csv", b"district,n\nA,12\nB,3\n", POLICY)
    assert result.verdict is Verdict.failed and rules(result) == {"min_cell_count"}


def test_identifier_column_is_flagged_case_insensitively() -> None:
    result = check("t.csv", b"Resident_ID,n\nx,12\n", POLICY)
    assert "identifier_column" in rules(result)


def test_table_without_counts_counts_as_microdata() -> None:
    assert rules(check("t.csv", b"district,income\nA,1\n", POLICY)) == {"no_cell_counts"}


def test_dominance_rule_on_sum_and_max() -> None:
    table = b"district,n,sum_income,max_income\nA,12,1000,900\nB,12,1000,100\n"
    result = check("t.csv", table, POLICY)
    assert rules(result) == {"dominance"} and "1 cell(s)" in result.findings[0].message


def test_parquet_tables_are_checked_too() -> None:
    out = io.BytesIO()
    pq.write_table(pa.table({"phone": ["139"], "n": [50]}), out)
    assert rules(check("t.parquet", out.getvalue(), POLICY)) == {"identifier_column"}


def test_other_files_need_a_human_and_respect_the_size_limit() -> None:
    assert check("fig.png", b"\x89PNG", POLICY).verdict is Verdict.needs_review
    big = check("fig.png", b"x" * 1001, POLICY)
    assert big.verdict is Verdict.failed and rules(big) == {"size_limit"}


def test_garbage_table_fails_without_raising() -> None:
    assert rules(check("t.parquet", b"not parquet", POLICY)) == {"unreadable"}


def test_stamp_puts_the_citation_inside() -> None:
    name, data = stamp("t.csv", b"a,n\n", "Source X")
    assert name == "t.csv" and data.startswith(b"# Source X\n")
    out = io.BytesIO()
    pq.write_table(pa.table({"n": [1]}), out)
    _, data = stamp("t.parquet", out.getvalue(), "Source Y")
    assert pq.read_table(io.BytesIO(data)).schema.metadata[b"dsb.citation"] == b"Source Y"
    name, _ = stamp("fig.png", b"png", "Source Z")
    assert name == "fig.png.zip"
