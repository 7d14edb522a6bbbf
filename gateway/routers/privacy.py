"""An agreement's privacy budget: epsilon spent and left, and what auditing remembers."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.access import agreements
from gateway.deps import PrincipalDep, ServicesDep
from gateway.privacy import ledger

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])


class BudgetOut(BaseModel):
    agreement: str
    scenario: str
    mode: str
    noise: bool = Field(description="Whether results carry calibrated noise.")
    epsilon_per_query: float | None = None
    budget_epsilon: float | None = None
    spent_epsilon: float = 0.0
    remaining_epsilon: float | None = None
    noisy_releases: int = Field(0, description="Answers that were charged.")
    cached_answers: int = Field(0, description="Distinct noisy answers kept; asking the "
                                "same query again returns its answer at no cost.")
    query_auditing: bool = Field(description="Whether results are refused that would "
                                 "isolate fewer than k entities together with earlier ones.")
    k: int | None = None


@router.get("/{agreement_id}/budget",
            summary="Privacy budget of an agreement: epsilon spent and left (holder, overseers)")
def get_budget(agreement_id: str, svc: ServicesDep, who: PrincipalDep) -> BudgetOut:
    agreement = agreements.find_visible(svc.policies, who, agreement_id)
    scenario = svc.policies.scenario(agreement.scenario)
    noise = scenario.noise
    used = ledger.balance(svc.store, agreement.id)
    return BudgetOut(
        agreement=agreement.id, scenario=scenario.id, mode=scenario.mode.value,
        noise=noise is not None,
        epsilon_per_query=noise.epsilon_per_query if noise else None,
        budget_epsilon=noise.budget_epsilon if noise else None,
        spent_epsilon=used.spent,
        remaining_epsilon=max(noise.budget_epsilon - used.spent, 0.0) if noise else None,
        noisy_releases=used.noisy_releases, cached_answers=used.cached_answers,
        query_auditing=scenario.mode.value == "aggregate" and noise is None
        and scenario.query_auditing,
        k=scenario.k)
