"""Console sessions: a signed, HttpOnly, SameSite=Strict cookie naming an API token row.

The cookie holds the token's row id, a CSRF secret and nothing else; it is signed with
a key derived from the master key, and every request re-checks the token (revoked,
expired, account disabled), so revoking a token or closing an account ends its sessions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from gateway.access.accounts import Principal, principal_of
from gateway.datasets.keys import load_master_key
from gateway.services import Services
from gateway.store.models import ApiToken, User, utcnow

COOKIE = "dsb_console"
LOGIN_CSRF_COOKIE = "dsb_console_login"
LANG_COOKIE = "dsb_lang"
MAX_AGE_S = 8 * 3600


def _serializer(svc: Services) -> URLSafeTimedSerializer:
    master = load_master_key(svc.settings.master_key_path)
    # A key of its own, so the session key never equals a data-wrapping key.
    key = hmac.new(master, b"dsb-console-session/1", hashlib.sha256).digest()
    return URLSafeTimedSerializer(key, salt="dsb-console")


def issue(svc: Services, who: Principal) -> str:
    return _serializer(svc).dumps({"tid": who.token_id, "csrf": secrets.token_urlsafe(24)})


def read(svc: Services, cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    try:
        data: dict[str, Any] = _serializer(svc).loads(cookie, max_age=MAX_AGE_S)
    except BadSignature:
        return None
    return data


def principal(svc: Services, data: dict[str, Any]) -> Principal | None:
    """The caller behind a session, re-checked against the token and account now."""
    with svc.store.session() as session:
        row = session.get(ApiToken, int(data["tid"]))
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and _aware(row.expires_at) <= utcnow():
            return None
        user = session.scalars(select(User).where(User.id == row.user_id)).first()
        if user is None or user.disabled_at is not None:
            return None
        return principal_of(user, row)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
