"""Who am I: the caller's account as the gateway sees it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.deps import PrincipalDep

router = APIRouter(prefix="/v1", tags=["account"])


class MeOut(BaseModel):
    user: str
    role: str
    organisation: str
    bound_agreement: str | None


@router.get("/me", summary="The caller's account (any role)")
def me(who: PrincipalDep) -> MeOut:
    return MeOut(user=who.user_id, role=who.role.value, organisation=who.organisation,
                 bound_agreement=who.agreement_id)
