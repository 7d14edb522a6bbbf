"""Hostile SQL from tests/fixtures/rewrite/hostile.yaml, on the real engine.

Each case is either refused with the right code (by the rewriter, or — for the few that
only DuckDB's binder can see — by the engine, with a generic message), or it runs and
releases nothing the scenario forbids (see ``leaks.assert_no_leak``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from rewrite_support import SALT, SCENARIOS, assert_no_leak

from gateway.errors import DsbError, QueryRejected
from gateway.rewrite import rewrite
from gateway.rewrite.run import execute
from sandbox.engine import EngineLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rewrite" / "hostile.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(FIXTURES.read_text())
ENGINE_CODES = {"execution_failed", "timeout", "resource_exhausted"}


def _id(case: dict[str, Any]) -> str:
    return f"{case['s']}-{case.get('code', 'safe')}-{case['sql'][:48]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_hostile(case: dict[str, Any], make_ctx, demo_mounts) -> None:  # type: ignore[no-untyped-def]
    scenario = SCENARIOS[case["s"]]
    ctx = make_ctx(scenario)
    code = case.get("code")
    if code is not None and code not in ENGINE_CODES:
        with pytest.raises(QueryRejected) as info:
            rewrite(case["sql"], ctx)
        assert info.value.code == code, info.value.message
        assert SALT not in info.value.message
        assert info.value.message
        return
    rewritten = rewrite(case["sql"], ctx)
    assert SALT not in rewritten.display_sql
    assert all(SALT not in c.message for c in rewritten.explanation)
    limits = EngineLimits(timeout_ms=case.get("timeout_ms", 20_000))
    if code is not None:
        with pytest.raises(DsbError) as failure:
            execute(rewritten, demo_mounts, limits)
        assert failure.value.code == code
        # The engine's own text can quote data: never in the user-facing message.
        assert "Binder" not in failure.value.message and SALT not in failure.value.message
        return
    table, report = execute(rewritten, demo_mounts, limits)
    rows = table.to_pylist()
    assert_no_leak(scenario, rows, rewritten)
    if "rows" in case:
        assert [list(r.values()) for r in rows] == case["rows"]
    if "max_rows" in case:
        assert len(rows) <= case["max_rows"]
        assert report.truncated
    if "at_least_k" in case:
        assert rows, "expected some released groups"
        k = ctx.scenario.k
        assert all(r[case["at_least_k"]] >= k for r in rows)
