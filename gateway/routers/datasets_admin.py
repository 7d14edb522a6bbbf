"""Dataset lifecycle for providers and admins: suspend, resume, withdraw, with a reason."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends

from gateway import lifecycle
from gateway.access.accounts import Principal
from gateway.deps import OPERATORS, ServicesDep, require
from gateway.routers.agreements import Reason, StatusOut

router = APIRouter(prefix="/v1/datasets", tags=["catalog"])


def _act(action: Literal["suspend", "resume", "withdraw"]):  # type: ignore[no-untyped-def]
    def endpoint(dataset_id: str, body: Reason, svc: ServicesDep,
                 who: Annotated[Principal, Depends(require(*OPERATORS))]) -> StatusOut:
        new = lifecycle.change_dataset(svc, who, dataset_id, action, body.reason)
        return StatusOut(id=dataset_id, status=new.value)

    endpoint.__name__ = f"{action}_dataset"
    return endpoint


for _action in ("suspend", "resume", "withdraw"):
    router.post(f"/{{dataset_id}}/{_action}",
                summary=f"{_action.capitalize()} a dataset (its provider, admin)")(_act(_action))
