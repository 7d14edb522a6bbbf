"""Users and API tokens.

A token is ``dsb_`` + 256 random bits; it is shown once and only its SHA-256 is kept,
with an expiry and a revocation time. Lookups compare digests, never token text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from gateway.errors import Conflict, NotFound, Unauthenticated
from gateway.store.db import Store
from gateway.store.models import ApiToken, User, utcnow

TOKEN_PREFIX = "dsb_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    researcher = "researcher"
    enterprise = "enterprise"
    supervisor = "supervisor"
    provider = "provider"
    admin = "admin"


@dataclass(frozen=True)
class Principal:
    """The caller of a request, as established from its token."""

    user_id: str
    role: Role
    organisation: str
    token_id: int
    agreement_id: str | None  # set for tokens bound to one agreement
    provider_id: str | None = None  # provider accounts: whose datasets they act on


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(store: Store, user_id: str, role: Role, *, organisation: str = "",
             display_name: str = "", provider_id: str | None = None) -> None:
    _check_provider_id(role, provider_id)
    with store.session() as session:
        if session.get(User, user_id) is not None:
            raise Conflict(f"user {user_id!r} exists", code="user_exists")
        session.add(User(id=user_id, role=role.value, organisation=organisation,
                         display_name=display_name or user_id, provider_id=provider_id))


def set_provider(store: Store, user_id: str, provider_id: str) -> None:
    """Tie a provider account to the provider whose datasets it acts on."""
    with store.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", code="unknown_user")
        _check_provider_id(Role(user.role), provider_id)
        user.provider_id = provider_id


def _check_provider_id(role: Role, provider_id: str | None) -> None:
    # A provider account without a provider would either act on nothing or, worse,
    # tempt a check that treats "no provider" as "any provider".
    if role is Role.provider and not provider_id:
        raise Conflict("a provider account needs the id of the provider it acts for "
                       "(--provider-id, as in the datasets' `provider.id`)",
                       code="provider_id_required")
    if role is not Role.provider and provider_id:
        raise Conflict(f"only provider accounts have a provider id; this one is {role.value}",
                       code="provider_id_not_allowed")


def get_user(store: Store, user_id: str) -> User:
    with store.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", code="unknown_user")
        return user


def issue_token(store: Store, user_id: str, *, label: str = "",
                expires_in: dt.timedelta | None = dt.timedelta(days=90),
                agreement_id: str | None = None) -> str:
    """Create a token for ``user_id`` and return it; this is the only time it is seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.session() as session:
        user = session.get(User, user_id)
        if user is None or user.disabled_at is not None:
            raise NotFound(f"no active user {user_id!r}", code="unknown_user")
        session.add(ApiToken(
            user_id=user_id, token_sha256=digest(token), prefix=token[:10], label=label,
            agreement_id=agreement_id,
            expires_at=utcnow() + expires_in if expires_in is not None else None,
        ))
    return token


def revoke_token(store: Store, token_id: int) -> None:
    with store.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"no token {token_id}", code="unknown_token")
        row.revoked_at = row.revoked_at or utcnow()


def authenticate(store: Store, token: str | None) -> Principal:
    if not token:
        raise Unauthenticated("missing bearer token (Authorization: Bearer dsb_...)")
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthenticated("malformed token")
    found = store.cache.get(("token", digest(token)), lambda: _token_state(store, token))
    if found is None:
        raise Unauthenticated("unknown token")
    revoked, expires_at, disabled, principal = found
    if revoked:
        raise Unauthenticated("token revoked", code="token_revoked")
    if expires_at is not None and expires_at <= utcnow():
        raise Unauthenticated("token expired", code="token_expired")
    if disabled or principal is None:
        raise Unauthenticated("account disabled", code="account_disabled")
    return principal


def _token_state(store: Store, token: str
                 ) -> tuple[bool, dt.datetime | None, bool, Principal | None] | None:
    """What ``authenticate`` checks of a token, read in one transaction (cached)."""
    with store.session() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == digest(token))
                              ).first()
        if row is None:
            return None
        user = session.get(User, row.user_id)
        if user is None:
            return row.revoked_at is not None, None, True, None
        return (row.revoked_at is not None,
                _aware(row.expires_at) if row.expires_at is not None else None,
                user.disabled_at is not None, principal_of(user, row))


def principal_of(user: User, token: ApiToken) -> Principal:
    return Principal(user.id, Role(user.role), user.organisation, token.id, token.agreement_id,
                     user.provider_id)


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes even for timezone columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
