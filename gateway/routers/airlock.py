"""Airlock endpoints: export requests from sandbox notebooks and supervisors' decisions."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from gateway.access.accounts import Principal
from gateway.airlock import service
from gateway.airlock.models import ExportRequest
from gateway.deps import HOLDERS, OVERSIGHT, PrincipalDep, RowId, ServicesDep, require
from gateway.errors import DsbError

router = APIRouter(tags=["airlock"])
Holder = Annotated[Principal, Depends(require(*HOLDERS))]
Overseer = Annotated[Principal, Depends(require(*OVERSIGHT))]

# base64 inflates by 4/3: cap the request before decoding anything.
MAX_B64 = service.MAX_EXPORT_BYTES * 4 // 3 + 8


class BadExport(DsbError):
    code = "bad_export"
    http_status = 400


class ExportIn(BaseModel):
    agreement: str
    filename: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$",
                          description="Base name only: letters, digits, dot, dash, underscore.")
    reason: str = Field(min_length=3, max_length=2000)
    content_b64: str = Field(max_length=MAX_B64)


class DecisionIn(BaseModel):
    note: str = Field(default="", max_length=2000)


class ExportOut(BaseModel):
    id: int
    agreement: str
    requested_by: str
    requested_at: dt.datetime
    filename: str
    reason: str
    size: int
    sha256: str
    check: dict[str, Any]
    status: str
    decided_by: str
    decided_at: dt.datetime | None
    decision_note: str


def _out(row: ExportRequest) -> ExportOut:
    return ExportOut(id=row.id, agreement=row.agreement_id, requested_by=row.requested_by,
                     requested_at=row.requested_at, filename=row.filename, reason=row.reason,
                     size=row.size, sha256=row.sha256, check=json.loads(row.check_report),
                     status=row.status, decided_by=row.decided_by, decided_at=row.decided_at,
                     decision_note=row.decision_note)


@router.post("/v1/exports", status_code=201, summary="Request an export (sandbox holder)")
def request_export(body: ExportIn, svc: ServicesDep, who: Holder) -> ExportOut:
    try:
        content = base64.b64decode(body.content_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadExport("content_b64 is not valid base64") from exc
    if body.filename.startswith("."):
        raise BadExport("filename must not start with a dot")
    return _out(service.request_export(svc, who, body.agreement, body.filename, body.reason,
                                       content))


@router.get("/v1/exports", summary="Export requests (own; all for supervisors)")
def list_exports(svc: ServicesDep, who: PrincipalDep, status: str | None = None) -> list[ExportOut]:
    query = select(ExportRequest).order_by(ExportRequest.id)
    if who.role not in service.OVERSIGHT:
        query = query.where(ExportRequest.requested_by == who.user_id)
    if status:
        query = query.where(ExportRequest.status == status)
    with svc.store.session() as session:
        return [_out(row) for row in session.scalars(query)]


@router.get("/v1/exports/{export_id}", summary="One export request")
def get_export(export_id: RowId, svc: ServicesDep, who: PrincipalDep) -> ExportOut:
    return _out(service.get(svc, who, export_id))


@router.post("/v1/exports/{export_id}/approve", summary="Approve (supervisor, not the requester)")
def approve(export_id: RowId, body: DecisionIn, svc: ServicesDep, who: Overseer) -> ExportOut:
    return _out(service.decide(svc, who, export_id, True, body.note))


@router.post("/v1/exports/{export_id}/deny", summary="Deny (supervisor, not the requester)")
def deny(export_id: RowId, body: DecisionIn, svc: ServicesDep, who: Overseer) -> ExportOut:
    return _out(service.decide(svc, who, export_id, False, body.note))


@router.get("/v1/exports/{export_id}/file", summary="The released file, citation stamped in")
def released_file(export_id: RowId, svc: ServicesDep, who: PrincipalDep) -> Response:
    name, data = service.release(svc, who, export_id)
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
