"""Who may act on a dataset or an agreement: the dataset's own provider, not any provider.

Admins act on everything; supervisors act on agreements (suspend, resume, revoke) but
not on datasets, which belong to their providers. A provider account acts on the
datasets whose ``provider.id`` is its own, and on the agreements that cover at least
one of them (DESIGN: a provider can stop the use of its data).
"""

from __future__ import annotations

from gateway.access.accounts import Principal, Role
from gateway.errors import Forbidden
from gateway.policy.loading import PolicySet


def owns_dataset(policies: PolicySet, who: Principal, dataset_id: str) -> bool:
    if who.role is Role.admin:
        return True
    dataset = policies.dataset(dataset_id)
    return who.role is Role.provider and who.provider_id == dataset.provider.id


def check_dataset_actor(policies: PolicySet, who: Principal, dataset_id: str) -> None:
    if not owns_dataset(policies, who, dataset_id):
        provider = policies.dataset(dataset_id).provider.id
        raise Forbidden(f"only the provider of {dataset_id!r} ({provider}) or an admin may "
                        "do this", code="not_dataset_provider")


def may_act_on_agreement(policies: PolicySet, who: Principal, agreement_id: str) -> bool:
    if who.role in (Role.admin, Role.supervisor):
        return True
    agreement = policies.agreement(agreement_id)
    scenario = policies.scenario(agreement.scenario)
    return who.role is Role.provider and any(
        d in policies.datasets and owns_dataset(policies, who, d) for d in scenario.datasets)


def check_agreement_actor(policies: PolicySet, who: Principal, agreement_id: str) -> None:
    if not may_act_on_agreement(policies, who, agreement_id):
        raise Forbidden(f"only a supervisor, an admin or a provider of the data of "
                        f"{agreement_id!r} may do this", code="not_agreement_overseer")
