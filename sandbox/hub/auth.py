"""JupyterHub authenticator: user name + personal gateway API token as the password.

Only users the gateway knows, holding at least one active agreement whose scenario
allows the ``notebook`` channel, get in; everyone else gets a 403 page naming why.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Unicode

from gateway.services import Services, build_services
from gateway.settings import Settings
from sandbox.hub.gatekeeper import Refused, login

_services: Services | None = None


def gateway_services(home: str, policy_dir: str) -> Services:
    """One set of gateway services per hub process (store, policies, audit)."""
    global _services
    if _services is None:
        # The hub never runs a query itself (views come through the gateway's API).
        _services = build_services(Settings(home=home, policy_dir=policy_dir), run_jobs=False)
    return _services


class GatewayAuthenticator(Authenticator):  # type: ignore[misc]
    gateway_home = Unicode("var", config=True,
                           help="Home directory of the gateway installation whose store the "
                           "hub reads (users, tokens, agreement states).")
    policy_dir = Unicode("policies", config=True,
                         help="Directory of the versioned policy YAML (agreements, scenarios).")

    def services(self) -> Services:
        return gateway_services(self.gateway_home, self.policy_dir)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        username, token = data.get("username", ""), data.get("password", "")
        try:
            who, usable = await asyncio.to_thread(login, self.services(), username, token)
        except Refused as exc:
            self.log.warning("notebook login refused for %r: %s", username, exc)
            await asyncio.to_thread(self.services().record, "login_failed", None, details={
                "channel": "notebook", "user": username[:128], "reason": str(exc)})
            # A page that says why, not a silent "invalid login".
            raise web.HTTPError(403, reason=str(exc)[:300], log_message=str(exc)) from exc
        await asyncio.to_thread(self.services().record, "login", who, details={
            "channel": "notebook", "agreements": [a.id for a in usable]})
        return {"name": who.user_id, "auth_state": {"agreements": [a.id for a in usable]}}

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        # authenticate() already decided from the gateway; nobody else is admitted.
        return authentication is not None

