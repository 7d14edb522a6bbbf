"""Privacy tests reuse the rewriter's fixtures: demo policies, engine files of the demo
data (with the tiny district), ``run_sql`` and ``audited_sql``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The rewriter's conftest imports its helpers as a top-level module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewrite"))

from privacy_support import with_noise  # noqa: E402

from gateway.rewrite import RewriteContext  # noqa: E402
from tests.rewrite.conftest import (  # noqa: E402, F401
    audited_sql,
    demo_mounts,
    make_ctx,
    policies,
    run_sql,
)


@pytest.fixture(scope="session")
def noisy_ctx(make_ctx: Callable[[str], RewriteContext]  # noqa: F811 - the imported fixture
              ) -> Callable[..., RewriteContext]:
    """A demo scenario with noise (default epsilon unless given)."""
    def make(scenario_id: str, **changes: object) -> RewriteContext:
        return with_noise(make_ctx(scenario_id), **changes)
    return make
