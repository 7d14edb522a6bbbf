"""Suspend, resume, revoke, withdraw: one path for the API and the console.

Order matters for the trail: the move is checked, then its audit event is committed,
then the state changes, then running work stops. A change that took effect is never
missing from the trail; if the audit log is down the state does not change at all.
(The reverse order, used before, could leave a suspension with no event.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gateway.access import agreements, ownership
from gateway.access.accounts import Principal
from gateway.datasets import catalog
from gateway.errors import Conflict
from gateway.policy.models import AgreementStatus, DatasetStatus
from gateway.services import past_tense

if TYPE_CHECKING:
    from gateway.services import Services

S = TypeVar("S")


def change_agreement(svc: Services, who: Principal, agreement_id: str, action: str,
                     reason: str) -> AgreementStatus:
    ownership.check_agreement_actor(svc.policies, who, agreement_id)

    def move(dry_run: bool) -> AgreementStatus:
        return agreements.change_status(svc.store, svc.policies, agreement_id, action,
                                        reason=reason, actor=who.user_id, dry_run=dry_run)

    target = _audited(move, lambda: svc.record(
        f"agreement_{past_tense(action)}", who, agreement_id=agreement_id,
        details={"reason": reason}),
        lambda: agreements.status(svc.store, svc.policies.agreement(agreement_id)))
    svc.stop_agreement_work(agreement_id, action)
    return target


def change_dataset(svc: Services, who: Principal, dataset_id: str, action: str,
                   reason: str) -> DatasetStatus:
    ownership.check_dataset_actor(svc.policies, who, dataset_id)

    def move(dry_run: bool) -> DatasetStatus:
        return catalog.change_status(svc.store, svc.policies, dataset_id, action,
                                     reason=reason, actor=who.user_id, dry_run=dry_run)

    target = _audited(move, lambda: svc.record(
        f"dataset_{past_tense(action)}", who, datasets=[{"id": dataset_id}],
        details={"reason": reason}),
        lambda: catalog.status(svc.store, svc.policies, dataset_id))
    svc.stop_dataset_work(dataset_id, action)
    return target


def _audited(move: Callable[[bool], S], record: Callable[[], object],
             current: Callable[[], S]) -> S:
    target = move(True)
    record()
    try:
        return move(False)
    except Conflict:
        # Someone made the same move between the check and now: the event is still true.
        if current() == target:
            return target
        raise
