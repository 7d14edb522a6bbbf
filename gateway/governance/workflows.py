"""The four governance workflows as plain functions over the store.

Each function changes state and returns the row; the caller (a router or the console)
records the audit event through ``Services.record`` so both entry points audit alike.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from gateway.access import agreements, ownership
from gateway.access.accounts import Principal
from gateway.datasets import catalog
from gateway.errors import Conflict, DsbError, Forbidden, NotFound
from gateway.governance.models import Complaint, MisuseRecord, Objection, UsageReport
from gateway.policy.loading import PolicySet
from gateway.store.db import Store
from gateway.store.models import User, utcnow

COMPLAINT_KINDS = ("trade_secret", "privacy", "other")
# A complaint's resolution -> the dataset lifecycle action that carries it out.
RESOLUTIONS = {"withdraw": "withdraw", "restore": "resume", "restore_after_fix": "resume"}
MEASURES = ("warn", "restrict", "close")


def _need(text: str, what: str) -> str:
    if not text.strip():
        raise DsbError(f"{what} must not be empty", code="reason_required")
    return text.strip()


# -- objections ---------------------------------------------------------------------

def file_objection(store: Store, policies: PolicySet, who: Principal, dataset_id: str, *,
                   description: str, field: str = "", row_range: str = "") -> Objection:
    dataset = policies.dataset(dataset_id)
    if field and field not in {c.name for c in dataset.columns}:
        raise DsbError(f"dataset {dataset_id!r} has no field {field!r}", code="unknown_field")
    row = Objection(dataset_id=dataset_id, field=field, row_range=row_range.strip(),
                    description=_need(description, "description"), filed_by=who.user_id)
    with store.session() as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


def answer_objection(store: Store, policies: PolicySet, who: Principal, objection_id: int, *,
                     answer: str) -> Objection:
    """The dataset's provider (or an admin) answers; that closes the objection."""
    with store.session() as session:
        row = session.get(Objection, objection_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no objection {objection_id}", code="unknown_objection")
        _check_provider(policies, who, row.dataset_id)
        if row.status != "open":
            raise Conflict(f"objection {objection_id} is already {row.status}",
                           code="invalid_transition")
        row.answer, row.answered_by = _need(answer, "answer"), who.user_id
        row.answered_at, row.status = utcnow(), "closed"
        session.flush()
        session.expunge(row)
    return row


def open_marks(store: Store, dataset_ids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
    """Open objections per dataset, as the marks shown in the catalog and provenance
    (cached: read for every result)."""
    ids = tuple(dataset_ids)
    found = store.cache.get(("marks", ids), lambda: _open_marks(store, ids))
    return {d: [dict(m) for m in found[d]] for d in ids}


def _open_marks(store: Store, ids: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    marks: dict[str, list[dict[str, str]]] = {d: [] for d in ids}
    if not ids:
        return marks
    with store.session() as session:
        for row in session.scalars(select(Objection).where(
                Objection.dataset_id.in_(ids), Objection.status == "open")
                .order_by(Objection.id)):
            marks[row.dataset_id].append({
                "objection": str(row.id), "field": row.field, "rows": row.row_range,
                "note": row.description, "filed_at": row.filed_at.isoformat()})
    return marks


def _check_provider(policies: PolicySet, who: Principal, dataset_id: str) -> None:
    ownership.check_dataset_actor(policies, who, dataset_id)


# -- complaints ---------------------------------------------------------------------

def file_complaint(store: Store, policies: PolicySet, who: Principal, dataset_id: str, *,
                   kind: str, description: str) -> Complaint:
    policies.dataset(dataset_id)
    if kind not in COMPLAINT_KINDS:
        raise DsbError(f"unknown complaint kind {kind!r}; use {', '.join(COMPLAINT_KINDS)}",
                       code="invalid_kind")
    row = Complaint(dataset_id=dataset_id, kind=kind, filed_by=who.user_id,
                    description=_need(description, "description"))
    with store.session() as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


def get_complaint(store: Store, complaint_id: int) -> Complaint:
    with store.session() as session:
        row = session.get(Complaint, complaint_id)
        if row is None:
            raise NotFound(f"no complaint {complaint_id}", code="unknown_complaint")
        return row


def suspend_for_complaint(store: Store, policies: PolicySet, who: Principal,
                          complaint_id: int, *, reason: str) -> Complaint:
    """One action: the complaint moves to ``suspended`` and so does the dataset."""
    row = get_complaint(store, complaint_id)
    _check_provider(policies, who, row.dataset_id)
    if row.status != "open":
        raise Conflict(f"complaint {complaint_id} is {row.status}", code="invalid_transition")
    current = catalog.status(store, policies, row.dataset_id).value
    if current == "available":
        catalog.change_status(store, policies, row.dataset_id, "suspend",
                              reason=f"complaint #{complaint_id}: {_need(reason, 'reason')}",
                              actor=who.user_id)
    return _set_complaint(store, complaint_id, "suspended", reason, who)


def resolve_complaint(store: Store, policies: PolicySet, who: Principal, complaint_id: int,
                      *, resolution: str, reason: str) -> tuple[Complaint, str]:
    """Withdraw the dataset, or restore it (as it was, or after a fix); returns the
    dataset lifecycle action taken so the caller can run its hooks."""
    if resolution not in RESOLUTIONS:
        raise DsbError(f"unknown resolution {resolution!r}; use {', '.join(RESOLUTIONS)}",
                       code="invalid_action")
    row = get_complaint(store, complaint_id)
    _check_provider(policies, who, row.dataset_id)
    if row.status not in ("open", "suspended"):
        raise Conflict(f"complaint {complaint_id} is already {row.status}",
                       code="invalid_transition")
    action = RESOLUTIONS[resolution]
    current = catalog.status(store, policies, row.dataset_id).value
    if not (action == "resume" and current == "available"):
        catalog.change_status(store, policies, row.dataset_id, action,
                              reason=f"complaint #{complaint_id}: {_need(reason, 'reason')}",
                              actor=who.user_id)
    status = {"withdraw": "withdrawn", "restore": "restored",
              "restore_after_fix": "restored_after_fix"}[resolution]
    return _set_complaint(store, complaint_id, status, reason, who), action


def _set_complaint(store: Store, complaint_id: int, status: str, reason: str,
                   who: Principal) -> Complaint:
    with store.session() as session:
        row = session.get(Complaint, complaint_id, with_for_update=True)
        assert row is not None  # looked up above; complaints are never deleted
        row.status, row.resolution = status, _need(reason, "reason")
        row.resolved_by, row.resolved_at = who.user_id, utcnow()
        session.flush()
        session.expunge(row)
    return row


# -- misuse -------------------------------------------------------------------------

@dataclass(frozen=True)
class MisuseOutcome:
    record: MisuseRecord
    suspended: list[str]  # agreements the measure suspended (the caller runs the hooks)
    disabled_users: list[str]


def record_misuse(store: Store, policies: PolicySet, who: Principal, *, subject_kind: str,
                  subject: str, violation: str, measure: str) -> MisuseOutcome:
    """``restrict`` suspends the subject's active agreements; ``close`` also disables
    the accounts (and so every token); ``warn`` only records."""
    if subject_kind not in ("user", "organisation"):
        raise DsbError("subject_kind must be user or organisation", code="invalid_subject")
    if measure not in MEASURES:
        raise DsbError(f"measure must be one of {', '.join(MEASURES)}", code="invalid_measure")
    held = [a for a in policies.agreements.values()
            if (a.holder.user if subject_kind == "user" else a.holder.organisation) == subject]
    with store.session() as session:
        users = list(session.scalars(select(User).where(
            (User.id if subject_kind == "user" else User.organisation) == subject)))
    if not held and not users:
        raise NotFound(f"no {subject_kind} {subject!r} holds an account or agreement",
                       code="unknown_subject")
    suspended: list[str] = []
    if measure in ("restrict", "close"):
        for agreement in held:
            if agreements.status(store, agreement).value == "active":
                agreements.change_status(store, policies, agreement.id, "suspend",
                                         reason=f"misuse: {violation}", actor=who.user_id)
                suspended.append(agreement.id)
    disabled: list[str] = []
    if measure == "close":
        with store.session() as session:
            for user in session.scalars(select(User).where(
                    User.id.in_([u.id for u in users]), User.disabled_at.is_(None))):
                user.disabled_at = utcnow()
                disabled.append(user.id)
    row = MisuseRecord(subject_kind=subject_kind, subject=subject, measure=measure,
                       violation=_need(violation, "violation"), recorded_by=who.user_id,
                       affected=json.dumps(suspended))
    with store.session() as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    return MisuseOutcome(row, suspended, disabled)


def publish_misuse(store: Store, record_id: int) -> MisuseRecord:
    with store.session() as session:
        row = session.get(MisuseRecord, record_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no misuse record {record_id}", code="unknown_misuse_record")
        row.published = True
        session.flush()
        session.expunge(row)
    return row


def misuse_records(store: Store, *, published_only: bool) -> list[MisuseRecord]:
    with store.session() as session:
        query = select(MisuseRecord).order_by(MisuseRecord.id.desc())
        if published_only:
            query = query.where(MisuseRecord.published.is_(True))
        return list(session.scalars(query))


# -- usage reports ------------------------------------------------------------------

def file_usage_report(store: Store, policies: PolicySet, who: Principal, agreement_id: str, *,
                      period_start: dt.date, period_end: dt.date, summary: str,
                      outputs: str = "") -> UsageReport:
    agreement = policies.agreement(agreement_id)
    if agreement.holder.user != who.user_id:
        raise Forbidden(f"only the holder of {agreement_id!r} files its usage reports")
    if period_end < period_start:
        raise DsbError("period_end is before period_start", code="invalid_period")
    row = UsageReport(agreement_id=agreement_id, period_start=period_start,
                      period_end=period_end, summary=_need(summary, "summary"),
                      outputs=outputs, filed_by=who.user_id)
    with store.session() as session:
        session.add(row)
        session.flush()
        session.expunge(row)
    return row


@dataclass(frozen=True)
class ReportDue:
    agreement: str
    holder: str
    every_days: int
    last_filed: dt.datetime | None
    due: dt.date
    overdue: bool


def reports_due(store: Store, policies: PolicySet, *, today: dt.date | None = None,
                agreement_ids: Iterable[str] | None = None) -> list[ReportDue]:
    """When each agreement's next report is due: ``usage_report_every_days`` after the
    last report, or after ``valid_from`` when none was filed."""
    today = today or utcnow().date()
    wanted = set(agreement_ids) if agreement_ids is not None else None
    out = []
    with store.session() as session:
        for agreement in policies.agreements.values():
            if wanted is not None and agreement.id not in wanted:
                continue
            last = session.scalar(select(UsageReport.filed_at).where(
                UsageReport.agreement_id == agreement.id)
                .order_by(UsageReport.filed_at.desc()).limit(1))
            start = last.date() if last else agreement.valid_from
            due = start + dt.timedelta(days=agreement.usage_report_every_days)
            out.append(ReportDue(agreement.id, agreement.holder.user,
                                 agreement.usage_report_every_days, last, due, due < today))
    return out
