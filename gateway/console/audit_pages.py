"""Audit trail page: filters, paging, SQL side by side, chain status, export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from gateway.audit.events import Action, AuditEvent
from gateway.audit.query import AuditFilter, select_events
from gateway.console.web import OVERSIGHT, ConsoleDep, Ctx
from gateway.governance.audit_status import chain_status
from gateway.store.models import Job

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = 25
OUTCOMES = {"accepted": {Action.query_executed, Action.query_rewritten},
            "rejected": {Action.query_rejected}, "failed": {Action.query_failed}}
FIELDS = ("user", "organisation", "agreement", "dataset", "action", "outcome", "since",
          "until")


@dataclass(frozen=True)
class Filters:
    user: str = ""
    organisation: str = ""
    agreement: str = ""
    dataset: str = ""
    action: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, ctx: Ctx) -> Filters:
        params = ctx.request.query_params
        return cls(**{f: params.get(f, "").strip() for f in FIELDS})

    def query(self) -> AuditFilter:
        return AuditFilter(
            user=self.user or None, agreement=self.agreement or None,
            dataset=self.dataset or None,
            action=Action(self.action) if self.action in Action._value2member_map_ else None,
            since=_when(self.since), until=_when(self.until))

    def keep(self, event: AuditEvent) -> bool:
        # Organisation and outcome are not indexed columns: filtered here, on the page.
        if self.organisation and event.actor.organisation != self.organisation:
            return False
        return not self.outcome or event.action in OUTCOMES.get(self.outcome, set())

    def params(self) -> str:
        from urllib.parse import urlencode

        return urlencode({f: getattr(self, f) for f in FIELDS if getattr(self, f)})


def _when(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment and moment.tzinfo is None else moment


def matching(ctx: Ctx, filters: Filters) -> Iterator[AuditEvent]:
    return (e for e in select_events(ctx.svc.store, filters.query(), newest_first=True)
            if filters.keep(e))


def _jobs(ctx: Ctx, events: list[AuditEvent]) -> dict[str, dict[str, Any]]:
    ids = {e.subjects.job for e in events if e.subjects.job}
    if not ids:
        return {}
    with ctx.svc.store.session() as session:
        return {j.id: {"sql": j.sql, "rewritten": j.rewritten_sql, "code": j.error_code,
                       "message": j.error_message,
                       "explanation": json.loads(j.explanation or "[]")}
                for j in session.scalars(select(Job).where(Job.id.in_(ids)))}


@router.get("/audit")
def audit(ctx: ConsoleDep) -> HTMLResponse:
    ctx.need(*OVERSIGHT)
    filters = Filters.of(ctx)
    page = max(1, int(ctx.request.query_params.get("page", "1") or 1))
    events = list(itertools.islice(matching(ctx, filters), (page - 1) * PAGE, page * PAGE + 1))
    more, events = len(events) > PAGE, events[:PAGE]
    from gateway.audit_bridge import verify

    report = verify(ctx.svc.audit, ctx.svc.settings)
    return ctx.render("audit.html", filters=filters, events=events, jobs=_jobs(ctx, events),
                      page=page, more=more, actions=[a.value for a in Action],
                      chain=chain_status(ctx.svc), verified=report["ok"])


@router.get("/audit/export")
def export(ctx: ConsoleDep) -> Response:
    ctx.need(*OVERSIGHT)
    filters = Filters.of(ctx)
    kind = ctx.request.query_params.get("format", "jsonl")
    events = [e.model_dump(mode="json") for e in matching(ctx, filters)]
    ctx.svc.record("audit_exported", ctx.who, details={"format": kind,
                                              "filters": filters.params(), "events": len(events)})
    if kind == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "ts", "action", "user", "role", "organisation", "agreement",
                         "job", "datasets", "details", "hash"])
        for e in events:
            writer.writerow([e["seq"], e["ts"], e["action"], e["actor"]["user"],
                             e["actor"]["role"], e["actor"]["organisation"],
                             e["subjects"]["agreement"] or "", e["subjects"]["job"] or "",
                             " ".join(d["id"] for d in e["subjects"]["datasets"]),
                             json.dumps(e["details"], ensure_ascii=False), e["hash"]])
        body, media = out.getvalue(), "text/csv; charset=utf-8"
    else:
        body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
        media, kind = "application/jsonl; charset=utf-8", "jsonl"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="audit.{kind}"'})
