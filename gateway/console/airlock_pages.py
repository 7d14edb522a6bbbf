"""The airlock queue: supervisors review export requests with their automatic checks and
approve or deny them; requesters follow their own. Decisions go through the same
service as the API (two different people, a failed check can only be denied, audited).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import case, select

from gateway.airlock import service
from gateway.airlock.models import ExportRequest
from gateway.console.web import OVERSIGHT, ConsoleDep, act

router = APIRouter(prefix="/console", include_in_schema=False)
F = Annotated[str, Form()]


@router.get("/airlock")
def airlock_page(ctx: ConsoleDep) -> HTMLResponse:
    oversees = ctx.who.role in OVERSIGHT
    # Pending first (the queue), then the newest decisions.
    query = select(ExportRequest).order_by(
        case((ExportRequest.status == "pending", 0), else_=1), ExportRequest.id.desc())
    if not oversees:
        query = query.where(ExportRequest.requested_by == ctx.who.user_id)
    with ctx.svc.store.session() as session:
        rows = [{"r": row, "check": json.loads(row.check_report),
                 "may_decide": oversees and row.status == "pending"
                 and row.requested_by != ctx.who.user_id}
                for row in session.scalars(query.limit(200))]
    return ctx.render("airlock.html", rows=rows, oversees=oversees)


@router.post("/airlock/{export_id}/{decision}")
def airlock_decide(export_id: int, decision: str, ctx: ConsoleDep, csrf: F,
                   note: Annotated[str, Form()] = "") -> RedirectResponse:
    ctx.need(*OVERSIGHT)
    if decision not in ("approve", "deny"):
        return RedirectResponse("/console/airlock?error=invalid_action", 303)
    return act(ctx, "/console/airlock", csrf, lambda: service.decide(
        ctx.svc, ctx.who, export_id, decision == "approve", note))


@router.get("/airlock/{export_id}/file")
def airlock_file(export_id: int, ctx: ConsoleDep) -> Response:
    name, data = service.release(ctx.svc, ctx.who, export_id)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
