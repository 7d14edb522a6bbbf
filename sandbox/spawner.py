"""DockerSpawner for agreement-bound notebook servers.

One named server per agreement (the server name *is* the agreement id; the default
server takes the only usable agreement or the one picked in the form). At every start
the gateway re-checks the agreement for the ``notebook`` channel, then:

- the container gets the scenario's CPU/memory limits, runs as uid 10001, drops every
  capability, cannot gain privileges, has a pids limit, and sits on an internal Docker
  network where only the hub and the gateway answer (host access is cut by iptables,
  see ``scripts/notebook-network``);
- its environment holds a token bound to this agreement only (never the user's login
  token), revoked when the server stops;
- in ``sandbox`` mode the scenario's view of each dataset, produced by the gateway as
  an ordinary audited query, is written to a per-server directory mounted read-only
  at ``/data``; in ``aggregate`` and ``records`` modes nothing is mounted.

``poll()`` also asks the gateway whether the agreement is still usable, so a suspended
or revoked agreement stops its server within one ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Float, Integer, Unicode, default

from gateway.access.accounts import issue_token
from gateway.store.models import ApiToken, utcnow
from sandbox.hub.auth import gateway_services
from sandbox.hub.gatekeeper import NotebookAgreement, Refused, agreement_for_spawn
from sandbox.runtime.base import LABEL_NOTEBOOK_AGREEMENT, LABEL_NOTEBOOK_USER


class AgreementSpawner(DockerSpawner):  # type: ignore[misc]
    gateway_url = Unicode("http://dsb-gateway:8000", config=True,
                          help="Gateway URL as seen from inside notebook containers.")
    gateway_home = Unicode("var", config=True,
                           help="Home directory of the gateway installation (its store).")
    policy_dir = Unicode("policies", config=True, help="Directory of the policy YAML files.")
    views_dir = Unicode(config=True,
                        help="Host directory holding one sub-directory per server with the "
                        "scenario's view of each dataset (sandbox mode), mounted read-only.")
    token_lifetime_h = Float(12.0, config=True,
                             help="Lifetime in hours of the agreement-bound token a server gets.")
    pids_limit = Integer(512, config=True, help="Maximum number of processes in a container.")

    @default("views_dir")
    def _views_dir(self) -> str:
        return str(Path(self.gateway_home) / "notebook-views")

    @default("poll_interval")
    def _poll_interval(self) -> int:
        return 3  # seconds: revocation must stop the server "within seconds"

    def _svc(self) -> Any:
        return gateway_services(self.gateway_home, self.policy_dir)

    def _agreement_id(self) -> str:
        if self.name:
            return str(self.name)
        picked = (self.user_options or {}).get("agreement")
        if picked:
            return str(picked)
        raise Refused("name the server after an agreement, or pick one in the form")

    # -- form: offer the user's agreements --------------------------------------------
    async def _options_form(self, spawner: Any) -> str:
        from gateway.access.accounts import Principal, Role
        from sandbox.hub.gatekeeper import usable_agreements

        who = Principal(user_id=self.user.name, role=Role.researcher, organisation="",
                        token_id=0, agreement_id=None)
        usable, _ = await asyncio.to_thread(usable_agreements, self._svc(), who)
        if self.name:
            return ""
        options = "".join(f'<option value="{a.id}">{a.id} ({a.mode})</option>' for a in usable)
        return f'<label>Agreement <select name="agreement">{options}</select></label>'

    @default("options_form")
    def _default_form(self) -> Any:
        return self._options_form

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        return {"agreement": formdata.get("agreement", [""])[0]}

    # -- start / stop -------------------------------------------------------------------
    async def start(self) -> Any:
        agreement_id = self._agreement_id()
        try:
            found = await asyncio.to_thread(agreement_for_spawn, self._svc(), self.user.name,
                                            agreement_id)
        except Refused as exc:
            self.log.warning("spawn refused for %s: %s", self.user.name, exc)
            # An HTTPError reaches the user's page; any other exception becomes the hub's
            # "500: Unhandled error", which says nothing about the agreement. The hub
            # replaces the error's reason, but shows ``jupyterhub_message`` as is.
            error = web.HTTPError(403, "%s", str(exc))
            error.jupyterhub_message = str(exc)  # type: ignore[attr-defined]
            raise error from exc
        self.agreement = found
        self.cpu_limit = found.cpus
        self.mem_limit = f"{found.memory_mb}M"
        token = await asyncio.to_thread(
            issue_token, self._svc().store, self.user.name, agreement_id=found.id,
            label=f"notebook:{self.user.name}/{self.name or 'default'}",
            expires_in=dt.timedelta(hours=self.token_lifetime_h))
        current_env: dict[str, str] = dict(self.environment)  # type: ignore[has-type]
        self.environment = {**current_env, "DSB_GATEWAY_URL": self.gateway_url,
                            "DSB_TOKEN": token, "DSB_AGREEMENT": found.id}
        views_started = time.monotonic()
        self.volumes = await asyncio.to_thread(self._mount_views, found, token)
        self.log.info("views for %s/%s ready in %.2f s", self.user.name, found.id,
                      time.monotonic() - views_started)
        # Labels say which agreement a notebook container serves (operators, tests,
        # and a supervisor's `docker ps --filter label=dsb.notebook.agreement=...`).
        self.extra_create_kwargs = {
            **self.extra_create_kwargs,  # type: ignore[has-type]
            "labels": {**self.extra_create_kwargs.get("labels", {}),  # type: ignore[has-type]
                       LABEL_NOTEBOOK_AGREEMENT: found.id, LABEL_NOTEBOOK_USER: self.user.name},
        }
        self.extra_host_config = {
            **self.extra_host_config,  # type: ignore[has-type]
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"], "pids_limit": self.pids_limit,
            "memswap_limit": f"{found.memory_mb}M",
        }
        self._svc().record("sandbox_spawned", None, agreement_id=found.id, details={
            "kind": "notebook", "user": self.user.name, "server": self.name or "",
            "mode": found.mode})
        address = await super().start()
        if isinstance(address, tuple):
            await self._wait_listening(*address)
        return address

    async def _wait_listening(self, ip: str, port: int) -> None:
        """The hub checks a new server with a backoff that oversleeps by a second or so;
        knocking every 50 ms here hands it a server that answers at its first try."""
        deadline = time.monotonic() + self.http_timeout
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def _view_dir(self) -> Path:
        return Path(self.views_dir) / f"{self.user.name}--{self.name or 'default'}"

    def _mount_views(self, found: NotebookAgreement, token: str) -> dict[str, dict[str, str]]:
        """Write the scenario's view of each dataset (sandbox mode only) and mount it."""
        target = self._view_dir()
        shutil.rmtree(target, ignore_errors=True)
        if found.mode != "sandbox":
            return {}
        from gateway.client import GatewayClient

        target.mkdir(parents=True, mode=0o755)
        local = self.gateway_url_for_hub or self.gateway_url
        with GatewayClient(local, token) as client:
            for dataset in found.datasets:
                job = client.submit(found.id, f"SELECT * FROM {dataset}", wait_ms=30000)
                if job["status"] != "succeeded":
                    job = client.wait(job["id"])
                client.download(job["id"], target / f"{dataset}.parquet")
        for file in target.iterdir():
            file.chmod(0o444)
        return {self._host_path(target): {"bind": "/data", "mode": "ro"}}

    def _host_path(self, path: Path) -> str:
        """``path`` as the engine names it (the hub may itself run in a container)."""
        if not hasattr(self, "_paths"):
            import docker

            from sandbox.runtime.hostpaths import discover

            client = docker.from_env()
            try:
                type(self)._paths = discover(client)
            finally:
                client.close()
        return str(self._paths.to_host(path))

    gateway_url_for_hub = Unicode("", config=True,
                                  help="Gateway URL as seen from the hub process, when it "
                                  "differs from gateway_url (e.g. loopback).")

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        await asyncio.to_thread(self._revoke_tokens)
        shutil.rmtree(self._view_dir(), ignore_errors=True)

    def _revoke_tokens(self) -> None:
        label = f"notebook:{self.user.name}/{self.name or 'default'}"
        with self._svc().store.session() as session:
            for row in session.query(ApiToken).filter(ApiToken.label == label,
                                                      ApiToken.revoked_at.is_(None)):
                row.revoked_at = utcnow()

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is not None:
            return status
        agreement = getattr(self, "agreement", None)
        if agreement is None:
            return None
        try:
            await asyncio.to_thread(agreement_for_spawn, self._svc(), self.user.name,
                                    agreement.id)
        except Refused as exc:
            self.log.warning("stopping %s: %s", self.user.name, exc)
            await self.stop(now=True)
            return 1
        return None
