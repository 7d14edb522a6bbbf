"""FastAPI dependencies: the services of this app, the caller, and role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.access.accounts import Principal, Role, authenticate
from gateway.errors import Forbidden
from gateway.services import Services

bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer dsb_...`")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def principal(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return authenticate(svc.store, credentials.credentials if credentials else None)


def optional_principal(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    return authenticate(svc.store, credentials.credentials) if credentials else None


PrincipalDep = Annotated[Principal, Depends(principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(optional_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency that admits only the given roles (each endpoint states its roles)."""
    allowed = frozenset(roles)

    def check(who: PrincipalDep) -> Principal:
        if who.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(f"this needs the role {names}; you are {who.role.value}")
        return who

    return check


HOLDERS = (Role.researcher, Role.enterprise)
OVERSIGHT = (Role.supervisor, Role.admin)
OPERATORS = (Role.provider, Role.admin)
# Supervisors act on agreements (DESIGN: "suspend, revoke"); so do admins and the
# providers of the agreement's data (gateway/access/ownership.py narrows it per row).
AGREEMENT_ACTORS = (Role.supervisor, Role.provider, Role.admin)


# A row id in a path: 64-bit in the store, so a larger number is a 422, not a driver
# overflow (500).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
