"""Governance workflows over HTTP: objections, complaints, misuse, usage reports, warnings.

Views stay thin: the state change is in ``gateway.governance.workflows``; each view
records one audit event through ``Services.record`` before it answers.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from gateway.access.accounts import Principal, Role
from gateway.deps import OPERATORS, OVERSIGHT, PrincipalDep, RowId, ServicesDep, require
from gateway.governance import warnings as early
from gateway.governance import workflows as wf
from gateway.governance.models import Complaint, MisuseRecord, Objection, UsageReport
from gateway.services import Services

router = APIRouter(prefix="/v1", tags=["governance"])
Overseer = Annotated[Principal, Depends(require(*OVERSIGHT))]
Operator = Annotated[Principal, Depends(require(*OPERATORS))]
Supervisor = Annotated[Principal, Depends(require(Role.supervisor, Role.admin))]
Text = Annotated[str, Field(min_length=1, max_length=4000)]


def _row(obj: Any) -> dict[str, Any]:
    out = {c.name: getattr(obj, c.name) for c in obj.__table__.columns}
    if isinstance(obj, MisuseRecord):
        out["affected"] = json.loads(obj.affected)
    return out


# -- objections ---------------------------------------------------------------------

class ObjectionIn(BaseModel):
    dataset: str
    description: Text
    field: str = ""
    rows: str = Field(default="", max_length=255, description="Row range, e.g. '1200-1300'.")


class AnswerIn(BaseModel):
    answer: Text


def file_objection(svc: Services, who: Principal, body: ObjectionIn) -> Objection:
    row = wf.file_objection(svc.store, svc.policies, who, body.dataset,
                            description=body.description, field=body.field,
                            row_range=body.rows)
    svc.record("objection_filed", who, datasets=[{"id": row.dataset_id}],
               details={"objection": row.id, "field": row.field, "row_range": row.row_range,
                        "reason": row.description})
    return row


def answer_objection(svc: Services, who: Principal, objection_id: int, answer: str
                     ) -> Objection:
    row = wf.answer_objection(svc.store, svc.policies, who, objection_id, answer=answer)
    svc.record("objection_answered", who, datasets=[{"id": row.dataset_id}],
               details={"objection": row.id, "reason": row.answer})
    return row


@router.post("/objections", status_code=201, summary="Object to a data error (any user)")
def post_objection(body: ObjectionIn, svc: ServicesDep, who: PrincipalDep) -> dict[str, Any]:
    return _row(file_objection(svc, who, body))


@router.get("/objections", summary="Objections (everyone sees all: they mark public data)")
def list_objections(svc: ServicesDep, who: PrincipalDep, dataset: str | None = None,
                    status: Literal["open", "closed"] | None = None) -> list[dict[str, Any]]:
    query = select(Objection).order_by(Objection.id.desc())
    if dataset:
        query = query.where(Objection.dataset_id == dataset)
    if status:
        query = query.where(Objection.status == status)
    with svc.store.session() as session:
        return [_row(r) for r in session.scalars(query)]


@router.post("/objections/{objection_id}/answer", summary="Answer and close (provider, admin)")
def post_answer(objection_id: RowId, body: AnswerIn, svc: ServicesDep, who: Operator
                ) -> dict[str, Any]:
    return _row(answer_objection(svc, who, objection_id, body.answer))


# -- complaints ---------------------------------------------------------------------

class ComplaintIn(BaseModel):
    dataset: str
    kind: Literal["trade_secret", "privacy", "other"]
    description: Text


class ResolveIn(BaseModel):
    resolution: Literal["suspend", "withdraw", "restore", "restore_after_fix"]
    reason: Text


def file_complaint(svc: Services, who: Principal, body: ComplaintIn) -> Complaint:
    row = wf.file_complaint(svc.store, svc.policies, who, body.dataset, kind=body.kind,
                            description=body.description)
    svc.record("complaint_filed", who, datasets=[{"id": row.dataset_id}],
               details={"complaint": row.id, "kind": row.kind, "reason": row.description})
    return row


def act_on_complaint(svc: Services, who: Principal, complaint_id: int, resolution: str,
                     reason: str) -> Complaint:
    if resolution == "suspend":
        row = wf.suspend_for_complaint(svc.store, svc.policies, who, complaint_id,
                                       reason=reason)
        action = "suspend"
    else:
        row, action = wf.resolve_complaint(svc.store, svc.policies, who, complaint_id,
                                           resolution=resolution, reason=reason)
    # The dataset hook audits the lifecycle change and stops jobs and sandboxes.
    svc.on_dataset_status(row.dataset_id, action, f"complaint #{complaint_id}: {reason}", who)
    svc.record("complaint_answered", who, datasets=[{"id": row.dataset_id}],
               details={"complaint": row.id, "resolution": resolution, "reason": reason})
    return row


@router.post("/complaints", status_code=201, summary="Complain that a dataset infringes "
             "rights (any user)")
def post_complaint(body: ComplaintIn, svc: ServicesDep, who: PrincipalDep) -> dict[str, Any]:
    return _row(file_complaint(svc, who, body))


@router.get("/complaints", summary="Complaints (provider, supervisor, admin; others: own)")
def list_complaints(svc: ServicesDep, who: PrincipalDep) -> list[dict[str, Any]]:
    query = select(Complaint).order_by(Complaint.id.desc())
    if who.role in (Role.researcher, Role.enterprise):
        query = query.where(Complaint.filed_by == who.user_id)
    with svc.store.session() as session:
        return [_row(r) for r in session.scalars(query)]


@router.post("/complaints/{complaint_id}/resolve", summary="Suspend the dataset at once, then "
             "withdraw, restore or restore after a fix (provider, admin)")
def post_resolve(complaint_id: RowId, body: ResolveIn, svc: ServicesDep, who: Operator
                 ) -> dict[str, Any]:
    return _row(act_on_complaint(svc, who, complaint_id, body.resolution, body.reason))


# -- misuse -------------------------------------------------------------------------

class MisuseIn(BaseModel):
    subject_kind: Literal["user", "organisation"]
    subject: Annotated[str, Field(min_length=1, max_length=255)]
    violation: Text
    measure: Literal["warn", "restrict", "close"]
    publish: bool = False


def record_misuse(svc: Services, who: Principal, body: MisuseIn) -> MisuseRecord:
    outcome = wf.record_misuse(svc.store, svc.policies, who, subject_kind=body.subject_kind,
                               subject=body.subject, violation=body.violation,
                               measure=body.measure)
    for agreement_id in outcome.suspended:
        svc.on_agreement_status(agreement_id, "suspend", f"misuse: {body.violation}", who)
    svc.record("misuse_recorded", who, details={
        "misuse": outcome.record.id, "subject_kind": body.subject_kind,
        "subject": body.subject, "measure": body.measure, "reason": body.violation,
        "suspended": outcome.suspended, "disabled": outcome.disabled_users})
    return publish_misuse(svc, who, outcome.record.id) if body.publish else outcome.record


def publish_misuse(svc: Services, who: Principal, record_id: int) -> MisuseRecord:
    row = wf.publish_misuse(svc.store, record_id)
    svc.record("misuse_published", who, details={"misuse": row.id, "subject": row.subject})
    return row


@router.post("/misuse", status_code=201, summary="Record a violation and restrict or close "
             "access (supervisor, admin)")
def post_misuse(body: MisuseIn, svc: ServicesDep, who: Supervisor) -> dict[str, Any]:
    return _row(record_misuse(svc, who, body))


@router.post("/misuse/{record_id}/publish", summary="Publish a misuse record on the catalog")
def post_publish(record_id: RowId, svc: ServicesDep, who: Supervisor) -> dict[str, Any]:
    return _row(publish_misuse(svc, who, record_id))


@router.get("/misuse", summary="Misuse records (supervisor, admin)")
def list_misuse(svc: ServicesDep, who: Overseer) -> list[dict[str, Any]]:
    return [_row(r) for r in wf.misuse_records(svc.store, published_only=False)]


@router.get("/catalog/misuse", summary="Published misuse records (public)")
def published_misuse(svc: ServicesDep) -> list[dict[str, Any]]:
    return [{k: v for k, v in _row(r).items() if k != "recorded_by"}
            for r in wf.misuse_records(svc.store, published_only=True)]


# -- usage reports ------------------------------------------------------------------

class UsageReportIn(BaseModel):
    period_start: dt.date
    period_end: dt.date
    summary: Text
    outputs: Annotated[str, Field(max_length=4000)] = ""


def file_usage_report(svc: Services, who: Principal, agreement_id: str, body: UsageReportIn
                      ) -> UsageReport:
    row = wf.file_usage_report(svc.store, svc.policies, who, agreement_id,
                               period_start=body.period_start, period_end=body.period_end,
                               summary=body.summary, outputs=body.outputs)
    svc.record("usage_report_filed", who, agreement_id=agreement_id, details={
        "report": row.id, "period": f"{row.period_start}..{row.period_end}"})
    return row


@router.post("/agreements/{agreement_id}/usage-reports", status_code=201,
             summary="File a usage report (the agreement's holder)")
def post_usage_report(agreement_id: str, body: UsageReportIn, svc: ServicesDep,
                      who: PrincipalDep) -> dict[str, Any]:
    return _row(file_usage_report(svc, who, agreement_id, body))


@router.get("/usage-reports/due", summary="When each agreement's next report is due; "
            "overdue ones flagged (holders: their own)")
def reports_due(svc: ServicesDep, who: PrincipalDep, overdue: bool = False
                ) -> list[dict[str, Any]]:
    mine = None
    if who.role not in (Role.supervisor, Role.admin, Role.provider):
        mine = [a.id for a in svc.policies.agreements.values() if a.holder.user == who.user_id]
    found = wf.reports_due(svc.store, svc.policies, agreement_ids=mine)
    return [vars(r) for r in found if r.overdue or not overdue]


# -- warnings -----------------------------------------------------------------------

@router.get("/warnings", summary="Early warnings over recent jobs (supervisor, admin)")
def get_warnings(svc: ServicesDep, who: Overseer,
                 hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24) -> list[dict[str, Any]]:
    return [w.as_dict() for w in early.current(svc.store, hours=hours)]
