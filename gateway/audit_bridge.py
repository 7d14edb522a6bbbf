"""How the gateway speaks to the audit log: its vocabulary mapped to audit events.

Kept in one place so routers and the job service say ``record("query_executed", ...)``
and never build audit models themselves.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from gateway.access.accounts import Principal
from gateway.audit.config import open_audit_log, platform_public_key
from gateway.audit.events import Action, Actor, AuditEventIn, DatasetRef, Details, Subjects
from gateway.audit.log import AuditLog
from gateway.audit.query import AuditFilter, select_events
from gateway.audit.verify import verify_log
from gateway.errors import DsbError
from gateway.policy.signing import generate_keypair
from gateway.settings import Settings
from gateway.store.db import Store

SYSTEM = Actor(user="system", role="system", organisation="")
# Renamed keys: the job service's words -> the audit log's typed details.
DETAIL_NAMES = {"code": "rejection_code", "rows": "rows_returned",
                "result_sha256": "result_digest"}


def open_audit(settings: Settings, store: Store) -> AuditLog:
    """The platform's audit log; creates the platform signing key on first use."""
    if not settings.platform_key_path.exists():
        generate_keypair(settings.platform_key_path, settings.platform_public_key_path)
    return open_audit_log(settings, store)


def events(log: AuditLog, *, user: str | None, agreement: str | None, dataset: str | None,
           action: str | None, since: dt.datetime | None, until: dt.datetime | None,
           limit: int, offset: int) -> dict[str, Any]:
    """One page of matching events, newest first."""
    try:
        chosen = Action(action) if action else None
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise DsbError(f"unknown action {action!r}; use one of {known}",
                       code="invalid_action") from None
    where = AuditFilter(user=user, agreement=agreement, dataset=dataset, action=chosen,
                        since=since, until=until)
    found = itertools.islice(select_events(log.store, where, newest_first=True), offset,
                             offset + limit)
    return {"offset": offset, "limit": limit,
            "events": [e.model_dump(mode="json") for e in found]}


def verify(log: AuditLog, settings: Settings) -> dict[str, Any]:
    public = platform_public_key(settings)
    report = verify_log(log.store.engine, settings.checkpoints_path, public,
                        max_unsealed=log.policy.every_events)
    body: dict[str, Any] = report.model_dump(mode="json")
    body["ok"] = report.ok
    return body


def append(log: AuditLog, action: str, who: Principal | None, *, agreement_id: str | None,
           job_id: str | None, datasets: list[dict[str, Any]], details: dict[str, Any]
           ) -> dict[str, Any]:
    actor = SYSTEM if who is None else Actor(user=who.user_id, role=who.role.value,
                                             organisation=who.organisation)
    body = {DETAIL_NAMES.get(k, k): v for k, v in details.items()}
    if "duration_ms" in body:
        body["duration_ms"] = int(round(body["duration_ms"]))
    event = AuditEventIn(
        actor=actor,
        action=Action[action],
        subjects=Subjects(agreement=agreement_id, job=job_id, datasets=tuple(
            DatasetRef(id=d["id"], version=d.get("published_version")) for d in datasets)),
        details=Details(**body),
    )
    receipt: dict[str, Any] = log.append(event).model_dump(mode="json")
    return receipt
