"""Supervisor endpoints: the audit trail, its verification, per-agreement usage."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import case, func, select

from gateway.access import agreements
from gateway.access.accounts import Principal
from gateway.deps import OVERSIGHT, ServicesDep, require
from gateway.store.models import Job

router = APIRouter(tags=["oversight"])
Overseer = Annotated[Principal, Depends(require(*OVERSIGHT))]


class UsageOut(BaseModel):
    agreement: str
    status: str
    queries: int
    queries_today: int
    queries_per_day: int
    rejected: int
    failed: int
    succeeded: int
    rows_returned: int
    cells_returned: int
    suppressed_groups: int
    last_query_at: dt.datetime | None


@router.get("/v1/agreements/{agreement_id}/usage",
            summary="Use of one agreement (supervisor, admin)")
def usage(agreement_id: str, svc: ServicesDep, who: Overseer) -> UsageOut:
    agreement = agreements.find_visible(svc.policies, who, agreement_id)
    scenario = svc.policies.scenario(agreement.scenario)
    with svc.store.session() as session:
        row = session.execute(select(
            func.count(),
            func.sum(case((Job.status == "rejected", 1), else_=0)),
            func.sum(case((Job.status == "failed", 1), else_=0)),
            func.sum(case((Job.status == "succeeded", 1), else_=0)),
            func.coalesce(func.sum(Job.rows), 0),
            func.coalesce(func.sum(Job.cells), 0),
            func.coalesce(func.sum(Job.suppressed_groups), 0),
            func.max(Job.created_at),
        ).where(Job.agreement_id == agreement_id)).one()
    return UsageOut(
        agreement=agreement_id, status=agreements.status(svc.store, agreement).value,
        queries=row[0], queries_today=agreements.queries_today(svc.store, agreement_id),
        queries_per_day=scenario.limits.queries_per_day, rejected=row[1] or 0,
        failed=row[2] or 0, succeeded=row[3] or 0, rows_returned=row[4], cells_returned=row[5],
        suppressed_groups=row[6], last_query_at=row[7],
    )


@router.get("/v1/audit/events", summary="Audit events, filtered and paged (supervisor, admin)")
def audit_events(
    svc: ServicesDep, who: Overseer,
    user: str | None = None, agreement: str | None = None, dataset: str | None = None,
    action: str | None = None, since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    from gateway.audit_bridge import events

    return events(svc.audit, user=user, agreement=agreement, dataset=dataset, action=action,
                  since=since, until=until, limit=limit, offset=offset)


@router.get("/v1/audit/verify", summary="Verify the whole audit chain now (supervisor, admin)")
def audit_verify(svc: ServicesDep, who: Overseer) -> dict[str, Any]:
    from gateway.audit_bridge import verify

    return verify(svc.audit, svc.settings)
