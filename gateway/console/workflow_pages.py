"""Agreements, datasets, objections, complaints, misuse, usage reports, warnings.

Each POST checks the CSRF secret, then calls the same function the API router calls
(which changes state and audits), and redirects back (post/redirect/get).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from gateway import lifecycle
from gateway.access import agreements as agr
from gateway.access import ownership
from gateway.access.accounts import Role
from gateway.console.web import OPERATORS, OVERSIGHT, ConsoleDep, act
from gateway.datasets import catalog
from gateway.deps import AGREEMENT_ACTORS
from gateway.governance import warnings as early
from gateway.governance import workflows as wf
from gateway.governance.models import Complaint, Objection
from gateway.routers import governance as api
from gateway.routers.oversight import usage
from gateway.store.models import DatasetVersion

router = APIRouter(prefix="/console", include_in_schema=False)
F = Annotated[str, Form()]
HOLDERS = (Role.researcher, Role.enterprise)


@router.get("/agreements")
def agreements_page(ctx: ConsoleDep) -> HTMLResponse:
    rows = []
    for agreement in ctx.svc.policies.agreements.values():
        if not agr.visible_to(ctx.svc.policies, ctx.who, agreement):
            continue
        used = usage(agreement.id, ctx.svc, ctx.who) if ctx.who.role in OVERSIGHT else None
        rows.append({"a": agreement, "status": agr.status(ctx.svc.store, agreement).value,
                     "usage": used, "can_act": ownership.may_act_on_agreement(
                         ctx.svc.policies, ctx.who, agreement.id)})
    return ctx.render("agreements.html", rows=rows,
                      can_act=ctx.who.role in AGREEMENT_ACTORS)


@router.post("/agreements/{agreement_id}/{action}")
def agreement_action(agreement_id: str, action: str, ctx: ConsoleDep, reason: F, csrf: F
                     ) -> RedirectResponse:
    ctx.need(*AGREEMENT_ACTORS)

    return act(ctx, "/console/agreements", csrf, lambda: lifecycle.change_agreement(
        ctx.svc, ctx.who, agreement_id, action, reason))


@router.get("/datasets")
def datasets_page(ctx: ConsoleDep) -> HTMLResponse:
    ids = list(ctx.svc.policies.datasets)
    marks = wf.open_marks(ctx.svc.store, ids)
    with ctx.svc.store.session() as session:
        versions: dict[str, list[int]] = {}
        for row in session.scalars(select(DatasetVersion).order_by(DatasetVersion.version)):
            versions.setdefault(row.dataset_id, []).append(row.version)
    statuses = catalog.statuses(ctx.svc.store, ctx.svc.policies, ids)
    closed_ok = ctx.who.role not in HOLDERS
    rows = [{"d": d, "status": statuses[d.id].value, "versions": versions.get(d.id, []),
             "marks": marks[d.id],
             "can_act": ownership.owns_dataset(ctx.svc.policies, ctx.who, d.id)}
            for d in ctx.svc.policies.datasets.values()
            if d.class_.value != "closed" or closed_ok]
    return ctx.render("datasets.html", rows=rows, can_act=ctx.who.role in OPERATORS)


@router.post("/datasets/{dataset_id}/{action}")
def dataset_action(dataset_id: str, action: str, ctx: ConsoleDep, reason: F, csrf: F
                   ) -> RedirectResponse:
    ctx.need(*OPERATORS)

    return act(ctx, "/console/datasets", csrf, lambda: lifecycle.change_dataset(
        ctx.svc, ctx.who, dataset_id, action, reason))


@router.get("/objections")
def objections_page(ctx: ConsoleDep) -> HTMLResponse:
    with ctx.svc.store.session() as session:
        rows = list(session.scalars(select(Objection).order_by(Objection.id.desc())))
    return ctx.render("objections.html", rows=rows, datasets=list(ctx.svc.policies.datasets),
                      can_answer=ctx.who.role in OPERATORS)


@router.post("/objections")
def objection_file(ctx: ConsoleDep, dataset: F, description: F, csrf: F,
                   field: Annotated[str, Form()] = "", rows: Annotated[str, Form()] = ""
                   ) -> RedirectResponse:
    body = api.ObjectionIn(dataset=dataset, description=description, field=field, rows=rows)
    return act(ctx, "/console/objections", csrf, lambda: api.file_objection(ctx.svc, ctx.who,
                                                                            body))


@router.post("/objections/{objection_id}/answer")
def objection_answer(objection_id: int, ctx: ConsoleDep, answer: F, csrf: F
                     ) -> RedirectResponse:
    ctx.need(*OPERATORS)
    return act(ctx, "/console/objections", csrf,
               lambda: api.answer_objection(ctx.svc, ctx.who, objection_id, answer))


@router.get("/complaints")
def complaints_page(ctx: ConsoleDep) -> HTMLResponse:
    query = select(Complaint).order_by(Complaint.id.desc())
    if ctx.who.role in HOLDERS:
        query = query.where(Complaint.filed_by == ctx.who.user_id)
    with ctx.svc.store.session() as session:
        rows = list(session.scalars(query))
    return ctx.render("complaints.html", rows=rows, datasets=list(ctx.svc.policies.datasets),
                      kinds=wf.COMPLAINT_KINDS, can_act=ctx.who.role in OPERATORS)


@router.post("/complaints")
def complaint_file(ctx: ConsoleDep, dataset: F, kind: F, description: F, csrf: F
                   ) -> RedirectResponse:
    def change() -> None:
        body = api.ComplaintIn(dataset=dataset, kind=kind, description=description)
        api.file_complaint(ctx.svc, ctx.who, body)

    return act(ctx, "/console/complaints", csrf, change)


@router.post("/complaints/{complaint_id}/resolve")
def complaint_resolve(complaint_id: int, ctx: ConsoleDep, resolution: F, reason: F, csrf: F
                      ) -> RedirectResponse:
    ctx.need(*OPERATORS)
    return act(ctx, "/console/complaints", csrf, lambda: api.act_on_complaint(
        ctx.svc, ctx.who, complaint_id, resolution, reason))


@router.get("/misuse")
def misuse_page(ctx: ConsoleDep) -> HTMLResponse:
    ctx.need(*OVERSIGHT)
    return ctx.render("misuse.html", rows=wf.misuse_records(ctx.svc.store, published_only=False))


@router.post("/misuse")
def misuse_record(ctx: ConsoleDep, subject_kind: F, subject: F, violation: F, measure: F,
                  csrf: F) -> RedirectResponse:
    ctx.need(*OVERSIGHT)

    def change() -> None:
        body = api.MisuseIn(subject_kind=subject_kind, subject=subject,
                            violation=violation, measure=measure)
        api.record_misuse(ctx.svc, ctx.who, body)

    return act(ctx, "/console/misuse", csrf, change)


@router.post("/misuse/{record_id}/publish")
def misuse_publish(record_id: int, ctx: ConsoleDep, csrf: F) -> RedirectResponse:
    ctx.need(*OVERSIGHT)
    return act(ctx, "/console/misuse", csrf,
               lambda: api.publish_misuse(ctx.svc, ctx.who, record_id))


@router.get("/reports")
def reports_page(ctx: ConsoleDep) -> HTMLResponse:
    mine = None
    if ctx.who.role in HOLDERS:
        mine = [a.id for a in ctx.svc.policies.agreements.values()
                if a.holder.user == ctx.who.user_id]
    due = wf.reports_due(ctx.svc.store, ctx.svc.policies, agreement_ids=mine)
    own = [a.id for a in ctx.svc.policies.agreements.values() if a.holder.user == ctx.who.user_id]
    return ctx.render("reports.html", due=due, own=own, today=dt.date.today().isoformat())


@router.post("/reports")
def report_file(ctx: ConsoleDep, agreement: F, period_start: F, period_end: F, summary: F,
                csrf: F, outputs: Annotated[str, Form()] = "") -> RedirectResponse:
    def change() -> None:
        body = api.UsageReportIn(period_start=dt.date.fromisoformat(period_start),
                                 period_end=dt.date.fromisoformat(period_end),
                                 summary=summary, outputs=outputs)
        api.file_usage_report(ctx.svc, ctx.who, agreement, body)

    return act(ctx, "/console/reports", csrf, change)


@router.get("/warnings")
def warnings_page(ctx: ConsoleDep) -> HTMLResponse:
    ctx.need(*OVERSIGHT)
    return ctx.render("warnings.html", rows=early.current(ctx.svc.store))
