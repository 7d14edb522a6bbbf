"""Whether an agreement may be used, right now, by this caller, on this channel.

The signed file fixes what was agreed; the store records what happened since
(suspension, revocation). Both are read on every request, so a suspension takes effect
on the next query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select

from gateway.access import ownership
from gateway.access.accounts import Principal
from gateway.datasets import catalog
from gateway.errors import AgreementUnusable, Conflict, DsbError, NotFound, QuotaExceeded
from gateway.policy.loading import PolicySet
from gateway.policy.models import Agreement, AgreementStatus, Channel, DatasetStatus, Scenario
from gateway.store.db import Store
from gateway.store.models import AgreementState, Job, utcnow

TRANSITIONS: dict[str, tuple[frozenset[AgreementStatus], AgreementStatus]] = {
    "suspend": (frozenset({AgreementStatus.active}), AgreementStatus.suspended),
    "resume": (frozenset({AgreementStatus.suspended}), AgreementStatus.active),
    "revoke": (frozenset({AgreementStatus.active, AgreementStatus.suspended}),
               AgreementStatus.revoked),
}


@dataclass(frozen=True)
class Usable:
    agreement: Agreement
    scenario: Scenario


def status(store: Store, agreement: Agreement, today: dt.date | None = None) -> AgreementStatus:
    with store.session() as session:
        state = session.get(AgreementState, agreement.id)
    return _effective(agreement, AgreementStatus(state.status) if state else None,
                      today or utcnow().date())


def _states(store: Store, policies: PolicySet, agreement_id: str, dataset_ids: Iterable[str]
            ) -> tuple[AgreementStatus | None, dict[str, DatasetStatus]]:
    """The agreement's stored status (None: as declared) and its datasets' statuses."""
    with store.session() as session:
        state = session.get(AgreementState, agreement_id)
        return (AgreementStatus(state.status) if state else None,
                catalog.statuses_in(session, policies, dataset_ids))


def _effective(agreement: Agreement, stored: AgreementStatus | None, today: dt.date
               ) -> AgreementStatus:
    current = stored or agreement.status
    if current is AgreementStatus.active and today > agreement.valid_until:
        return AgreementStatus.expired
    return current


def visible_to(policies: PolicySet, principal: Principal, agreement: Agreement) -> bool:
    """Holders see their own agreements; supervisors and admins see all; providers see
    those over their data."""
    if principal.role.value in ("supervisor", "admin"):
        return principal.agreement_id in (None, agreement.id)
    if principal.role.value == "provider":
        return principal.agreement_id in (None, agreement.id) and \
            ownership.may_act_on_agreement(policies, principal, agreement.id)
    return agreement.holder.user == principal.user_id and principal.agreement_id in (
        None, agreement.id)


def find_visible(policies: PolicySet, principal: Principal, agreement_id: str) -> Agreement:
    agreement = policies.agreements.get(agreement_id)
    # Same answer for "does not exist" and "not yours": ids are not an oracle.
    if agreement is None or not visible_to(policies, principal, agreement):
        raise NotFound(f"no agreement {agreement_id!r} for you", code="unknown_agreement")
    return agreement


def check_usable(store: Store, policies: PolicySet, principal: Principal, agreement_id: str,
                 channel: Channel, *, now: dt.datetime | None = None) -> Usable:
    """Raise the precise reason the caller may not query under the agreement now."""
    now = now or utcnow()
    agreement = policies.agreements.get(agreement_id)
    if agreement is None or agreement.holder.user != principal.user_id or (
            principal.agreement_id not in (None, agreement_id)):
        raise NotFound(f"no agreement {agreement_id!r} for you", code="unknown_agreement")
    scenario = policies.scenario(agreement.scenario)
    # One read for the agreement's and its datasets' states (cached: this runs twice per
    # query; a change is seen within the cache's TTL).
    stored, dataset_states = store.cache.get(
        ("usable", agreement.id), lambda: _states(store, policies, agreement.id,
                                                  scenario.datasets))
    current = _effective(agreement, stored, now.date())
    if current is not AgreementStatus.active:
        raise AgreementUnusable(f"agreement {agreement_id!r} is {current.value}",
                                code=f"agreement_{current.value}")
    if now.date() < agreement.valid_from:
        raise AgreementUnusable(f"agreement {agreement_id!r} is valid from "
                                f"{agreement.valid_from}", code="agreement_not_yet_valid")
    if channel not in scenario.channels:
        allowed = ", ".join(c.value for c in scenario.channels)
        raise AgreementUnusable(f"scenario {scenario.id!r} does not allow the {channel.value} "
                                f"channel (allowed: {allowed})", code="channel_not_allowed")
    for dataset_id, dataset_status in dataset_states.items():
        if dataset_status is not DatasetStatus.available:
            raise AgreementUnusable(f"dataset {dataset_id!r} is {dataset_status.value}",
                                    code=f"dataset_{dataset_status.value}")
    return Usable(agreement, scenario)


def queries_today(store: Store, agreement_id: str, now: dt.datetime | None = None) -> int:
    start = _midnight(now or utcnow())
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Job).where(
            Job.agreement_id == agreement_id, Job.created_at >= start)) or 0


def check_quota(store: Store, usable: Usable, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    limit = usable.scenario.limits.queries_per_day
    used = queries_today(store, usable.agreement.id, now)
    if used >= limit:
        retry = int((_midnight(now) + dt.timedelta(days=1) - now).total_seconds()) + 1
        raise QuotaExceeded(f"agreement {usable.agreement.id!r} has used its {limit} queries "
                            "for today (UTC)", retry_after_s=retry)


def change_status(store: Store, policies: PolicySet, agreement_id: str, action: str, *,
                  reason: str, actor: str, dry_run: bool = False) -> AgreementStatus:
    """Move an agreement to its next status; ``dry_run`` only checks the move is allowed."""
    if action not in TRANSITIONS:
        raise DsbError(f"unknown action {action!r}; use suspend, resume or revoke",
                       code="invalid_action")
    if not reason.strip():
        raise DsbError(f"{action} needs a reason", code="reason_required")
    agreement = policies.agreement(agreement_id)
    allowed_from, target = TRANSITIONS[action]
    with store.session() as session:
        state = session.get(AgreementState, agreement_id, with_for_update=True)
        current = AgreementStatus(state.status) if state else agreement.status
        if current not in allowed_from:
            raise Conflict(f"cannot {action} agreement {agreement_id!r}: it is {current.value}",
                           code="invalid_transition")
        if dry_run:
            return target
        if state is None:
            state = AgreementState(agreement_id=agreement_id)
            session.add(state)
        state.status, state.reason, state.changed_by = target.value, reason, actor
        state.changed_at = utcnow()
    return target


def _midnight(now: dt.datetime) -> dt.datetime:
    return dt.datetime.combine(now.date(), dt.time(), tzinfo=dt.UTC)
