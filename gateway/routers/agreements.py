"""Agreements: holders see their own; supervisors, providers and admins see all;
providers and admins suspend, resume and revoke."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from gateway import lifecycle
from gateway.access import agreements
from gateway.access.accounts import Principal
from gateway.deps import AGREEMENT_ACTORS, PrincipalDep, ServicesDep, require
from gateway.policy.models import Agreement
from gateway.services import Services

router = APIRouter(prefix="/v1/agreements", tags=["agreements"])


class AgreementOut(BaseModel):
    id: str
    holder: str
    organisation: str
    role: str
    scenario: str
    mode: str
    purpose: str
    valid_from: dt.date
    valid_until: dt.date
    status: str
    channels: list[str]
    datasets: list[str]
    queries_today: int
    queries_per_day: int
    security_measures: list[str]


class Reason(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000,
                                 description="Why; recorded in the audit trail.")]


class StatusOut(BaseModel):
    id: str
    status: str


def _out(svc: Services, agreement: Agreement) -> AgreementOut:
    scenario = svc.policies.scenario(agreement.scenario)
    return AgreementOut(
        id=agreement.id, holder=agreement.holder.user, organisation=agreement.holder.organisation,
        role=agreement.holder.role, scenario=scenario.id, mode=scenario.mode.value,
        purpose=agreement.purpose, valid_from=agreement.valid_from,
        valid_until=agreement.valid_until,
        status=agreements.status(svc.store, agreement).value,
        channels=[c.value for c in scenario.channels], datasets=list(scenario.datasets),
        queries_today=agreements.queries_today(svc.store, agreement.id),
        queries_per_day=scenario.limits.queries_per_day,
        security_measures=agreement.security_measures,
    )


@router.get("", summary="Agreements you hold (all of them for supervisors and operators)")
def list_agreements(svc: ServicesDep, who: PrincipalDep) -> list[AgreementOut]:
    return [_out(svc, a) for a in svc.policies.agreements.values()
            if agreements.visible_to(svc.policies, who, a)]


@router.get("/{agreement_id}", summary="One agreement with today's usage")
def get_agreement(agreement_id: str, svc: ServicesDep, who: PrincipalDep) -> AgreementOut:
    return _out(svc, agreements.find_visible(svc.policies, who, agreement_id))


def _act(action: Literal["suspend", "resume", "revoke"]):  # type: ignore[no-untyped-def]
    def endpoint(agreement_id: str, body: Reason, svc: ServicesDep,
                 who: Annotated[Principal, Depends(require(*AGREEMENT_ACTORS))]) -> StatusOut:
        new = lifecycle.change_agreement(svc, who, agreement_id, action, body.reason)
        return StatusOut(id=agreement_id, status=new.value)

    endpoint.__name__ = f"{action}_agreement"
    return endpoint


for _action in ("suspend", "resume", "revoke"):
    router.post(f"/{{agreement_id}}/{_action}",
                summary=f"{_action.capitalize()} an agreement (supervisor, admin, "
                "the provider of its data)")(_act(_action))
