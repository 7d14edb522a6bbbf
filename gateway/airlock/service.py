"""Airlock workflow: request (with automatic checks), decision by a second person, release."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from gateway.access import agreements
from gateway.access.accounts import Principal, Role
from gateway.airlock.checks import CheckPolicy, CheckResult, Verdict, check
from gateway.airlock.models import ExportRequest
from gateway.airlock.stamp import stamp
from gateway.errors import AgreementUnusable, Conflict, Forbidden, NotFound
from gateway.policy.models import Channel, Mode, Sensitivity
from gateway.store.models import utcnow

if TYPE_CHECKING:
    from gateway.services import Services

MAX_EXPORT_BYTES = 5 * 1024 * 1024
OVERSIGHT = (Role.supervisor, Role.admin)


def check_policy(svc: Services, agreement_id: str) -> CheckPolicy:
    """What the checks need from the scenario: k and the names that must not leave."""
    scenario = svc.policies.scenario(svc.policies.agreements[agreement_id].scenario)
    names: set[str] = set()
    for dataset_id in scenario.datasets:
        dataset = svc.policies.datasets.get(dataset_id)
        if dataset is not None:
            names |= {c.name.lower() for c in dataset.columns
                      if c.sensitivity in (Sensitivity.identifier, Sensitivity.personal)}
    return CheckPolicy(k=scenario.k or 10, identifier_columns=frozenset(names),
                       max_bytes=MAX_EXPORT_BYTES)


def request_export(svc: Services, who: Principal, agreement_id: str, filename: str,
                   reason: str, content: bytes) -> ExportRequest:
    """File a request under an agreement the caller may use from a notebook."""
    usable = agreements.check_usable(svc.store, svc.policies, who, agreement_id, Channel.notebook)
    if usable.scenario.mode is not Mode.sandbox:
        raise AgreementUnusable(f"scenario {usable.scenario.id!r} is in "
                                f"{usable.scenario.mode.value} mode: it has no airlock",
                                code="no_airlock")
    result: CheckResult = check(filename, content, check_policy(svc, agreement_id))
    with svc.store.session() as session:
        row = ExportRequest(
            agreement_id=agreement_id, requested_by=who.user_id, filename=filename,
            reason=reason, size=len(content), sha256=hashlib.sha256(content).hexdigest(),
            content=content, check_verdict=result.verdict.value,
            check_report=json.dumps(result.as_dict()), status="pending", decided_by="",
            decision_note="",
        )
        session.add(row)
        session.flush()
        session.expunge(row)
    svc.record("export_requested", who, agreement_id=agreement_id, details={
        "export": row.id, "filename": filename, "sha256": row.sha256, "size": row.size,
        "reason": reason, "check": result.verdict.value})
    return row


def get(svc: Services, who: Principal, export_id: int) -> ExportRequest:
    with svc.store.session() as session:
        row = session.get(ExportRequest, export_id)
        if row is not None:
            session.expunge(row)
    if row is None or (who.role not in OVERSIGHT and row.requested_by != who.user_id):
        raise NotFound(f"no export request {export_id}", code="unknown_export")
    return row


def decide(svc: Services, who: Principal, export_id: int, approve: bool,
           note: str) -> ExportRequest:
    """Approve or deny; two different people, and a failed check can only be denied.

    The decision is checked, then audited, then stored: a decision in effect is never
    missing from the trail, and with the audit log down nothing is decided.
    """
    if who.role not in OVERSIGHT:
        raise Forbidden("only a supervisor decides on exports")
    row = _decidable(svc, who, export_id, approve)
    svc.record("export_approved" if approve else "export_denied", who,
               agreement_id=row.agreement_id,
               details={"export": row.id, "sha256": row.sha256, "note": note,
                        "requested_by": row.requested_by})
    with svc.store.session() as session:
        stored = session.get(ExportRequest, export_id, with_for_update=True)
        if stored is None or stored.status != "pending":
            # Another supervisor decided in the instant between the check and now.
            raise Conflict(f"export {export_id} was decided meanwhile", code="already_decided")
        stored.status = "approved" if approve else "denied"
        stored.decided_by, stored.decided_at, stored.decision_note = who.user_id, utcnow(), note
        session.flush()
        session.expunge(stored)
    return stored


def _decidable(svc: Services, who: Principal, export_id: int, approve: bool) -> ExportRequest:
    with svc.store.session() as session:
        row = session.get(ExportRequest, export_id)
        if row is not None:
            session.expunge(row)
    if row is None:
        raise NotFound(f"no export request {export_id}", code="unknown_export")
    if row.requested_by == who.user_id:
        raise Forbidden("the requester cannot decide on their own export", code="same_person")
    if row.status != "pending":
        raise Conflict(f"export {export_id} is already {row.status}", code="already_decided")
    if approve and row.check_verdict == Verdict.failed.value:
        raise Conflict(f"export {export_id} failed the disclosure checks; it can only be "
                       "denied", code="export_disclosive")
    return row


def release(svc: Services, who: Principal, export_id: int) -> tuple[str, bytes]:
    """The approved file with the citation of every dataset of the scenario stamped in."""
    row = get(svc, who, export_id)
    if row.status != "approved":
        raise Conflict(f"export {export_id} is {row.status}, not approved",
                       code="export_not_approved")
    scenario = svc.policies.scenario(svc.policies.agreements[row.agreement_id].scenario)
    lines = [svc.policies.datasets[d].citation() for d in scenario.datasets
             if d in svc.policies.datasets]
    lines.append(f"Released through the airlock of agreement {row.agreement_id}, export "
                 f"{row.id} (sha256 {row.sha256}), approved by {row.decided_by}.")
    return stamp(row.filename, row.content, "\n".join(lines))
