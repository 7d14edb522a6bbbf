"""The gateway's answer to "may this person have a notebook, and under which agreements?".

Pure functions over the gateway's store and policies (the hub runs beside the gateway
and opens the same store), so the authenticator and the spawner ask the same question
the gateway asks for every query: ``check_usable(..., channel=notebook)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.access import agreements
from gateway.access.accounts import Principal, Role, authenticate
from gateway.errors import DsbError
from gateway.policy.models import Channel
from gateway.services import Services

NOTEBOOK_ROLES = (Role.researcher, Role.enterprise)


class Refused(Exception):
    """Login or spawn refused; the message is shown to the user as is."""


@dataclass(frozen=True)
class NotebookAgreement:
    id: str
    scenario: str
    mode: str
    datasets: tuple[str, ...]
    cpus: float
    memory_mb: int


def login(svc: Services, username: str, token: str, *, now: dt.datetime | None = None
          ) -> tuple[Principal, list[NotebookAgreement]]:
    """Check a username + personal API token; return the agreements usable from a notebook."""
    try:
        who = authenticate(svc.store, token)
    except DsbError as exc:
        raise Refused("unknown or expired API token") from exc
    if who.user_id != username:
        raise Refused("the token does not belong to this user name")
    if who.agreement_id is not None:
        # Bound tokens live inside notebook servers; they are not login credentials.
        raise Refused("a token bound to one agreement cannot be used to log in")
    if who.role not in NOTEBOOK_ROLES:
        raise Refused(f"role {who.role.value} does not get notebooks")
    usable, reasons = usable_agreements(svc, who, now=now)
    if not usable:
        why = "; ".join(reasons) or "you hold no agreement"
        raise Refused(f"no active agreement allows the notebook channel: {why}")
    return who, usable


def usable_agreements(svc: Services, who: Principal, *, now: dt.datetime | None = None
                      ) -> tuple[list[NotebookAgreement], list[str]]:
    usable, reasons = [], []
    for agreement in svc.policies.agreements.values():
        if agreement.holder.user != who.user_id:
            continue
        try:
            found = agreements.check_usable(svc.store, svc.policies, who, agreement.id,
                                            Channel.notebook, now=now)
        except DsbError as exc:
            reasons.append(f"{agreement.id}: {exc}")
            continue
        scenario = found.scenario
        usable.append(NotebookAgreement(
            id=agreement.id, scenario=scenario.id, mode=scenario.mode.value,
            datasets=tuple(scenario.datasets), cpus=float(scenario.limits.cpus),
            memory_mb=int(scenario.limits.memory_mb)))
    return usable, reasons


def agreement_for_spawn(svc: Services, user_id: str, agreement_id: str, *,
                        now: dt.datetime | None = None) -> NotebookAgreement:
    """Re-check at spawn time (the agreement may have lapsed since login)."""
    who = Principal(user_id=user_id, role=Role.researcher, organisation="", token_id=0,
                    agreement_id=None)
    usable, reasons = usable_agreements(svc, who, now=now)
    for item in usable:
        if item.id == agreement_id:
            return item
    why = next((r for r in reasons if r.startswith(f"{agreement_id}:")),
               f"{agreement_id}: not an agreement of yours")
    raise Refused(f"cannot start a notebook under {why}")
