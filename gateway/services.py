"""What one gateway process holds: settings, store, policies, audit log, runtime, jobs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.access.accounts import Principal
from gateway.errors import AuditError
from gateway.policy.loading import PolicySet, load_policies
from gateway.settings import Settings
from gateway.store import Store, open_store

log = logging.getLogger("dsb.gateway")

if TYPE_CHECKING:
    from gateway.jobs.service import JobService
    from sandbox.runtime.base import SandboxRuntime


@dataclass
class Services:
    settings: Settings
    store: Store
    policies: PolicySet
    audit: Any = None
    runtime: SandboxRuntime | None = None
    jobs: JobService | None = None

    def record(self, action: str, who: Principal | None, *, agreement_id: str | None = None,
               job_id: str | None = None, datasets: list[dict[str, Any]] | None = None,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one audit event and return its receipt; raises AuditError (fail closed)."""
        if self.audit is None:
            raise AuditError("no audit log is configured; refusing to act unrecorded")
        from gateway.audit_bridge import append

        return append(self.audit, action, who, agreement_id=agreement_id, job_id=job_id,
                      datasets=datasets or [], details=details or {})

    def on_agreement_status(self, agreement_id: str, action: str, reason: str,
                            who: Principal) -> None:
        """After a suspension or revocation: audit it, stop its jobs and sandboxes."""
        self.record(f"agreement_{past_tense(action)}", who, agreement_id=agreement_id,
                    details={"reason": reason})
        self.stop_agreement_work(agreement_id, action)

    def stop_agreement_work(self, agreement_id: str, action: str) -> None:
        """A suspended or revoked agreement keeps no running job and no sandbox."""
        if action in ("suspend", "revoke"):
            code = "agreement_suspended" if action == "suspend" else "agreement_revoked"
            if self.jobs is not None:
                self.jobs.abort_where(code, agreement_id=agreement_id)
            if self.runtime is not None:
                self.runtime.stop_agreement(agreement_id)

    def on_dataset_status(self, dataset_id: str, action: str, reason: str,
                          who: Principal) -> None:
        """After a dataset suspension or withdrawal: audit it, stop what uses it."""
        self.record(f"dataset_{past_tense(action)}", who,
                    datasets=[{"id": dataset_id}], details={"reason": reason})
        self.stop_dataset_work(dataset_id, action)

    def stop_dataset_work(self, dataset_id: str, action: str) -> None:
        """A suspended or withdrawn dataset is read by no running job or sandbox."""
        if action in ("suspend", "withdraw"):
            code = f"dataset_{'suspended' if action == 'suspend' else 'withdrawn'}"
            if self.jobs is not None:
                self.jobs.abort_where(code, dataset_id=dataset_id)
            if self.runtime is not None:
                for agreement in self.policies.agreements.values():
                    scenario = self.policies.scenarios.get(agreement.scenario)
                    if scenario is not None and dataset_id in scenario.datasets:
                        self.runtime.stop_agreement(agreement.id)

    def start_sealing(self, every_s: float = 5.0) -> None:
        """Seal the audit log by time too, not only on appends: a quiet log gets signed."""
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every_s):
                try:
                    self.audit.checkpoint_if_due()
                except Exception:  # noqa: BLE001 - keep sealing; the next tick retries
                    log.exception("audit checkpoint failed")

        self._stop_sealing = stop
        threading.Thread(target=tick, name="dsb-audit-seal", daemon=True).start()

    def close(self) -> None:
        stop = getattr(self, "_stop_sealing", None)
        if stop is not None:
            stop.set()
        if self.jobs is not None:
            self.jobs.close()
        if self.runtime is not None:
            self.runtime.close()
        self.store.engine.dispose()


def past_tense(action: str) -> str:
    return {"suspend": "suspended", "resume": "resumed", "revoke": "revoked",
            "withdraw": "withdrawn"}.get(action, action)


def build_services(settings: Settings, *, runtime: SandboxRuntime | None = None,
                   run_jobs: bool = True) -> Services:
    """Everything a gateway process needs, from settings (and an optional runtime).

    ``run_jobs=False`` is for processes that only read the store and write the trail,
    such as the hub: no sandbox runtime (so no reaping of the gateway's sandboxes at
    start) and no job threads.
    """
    from gateway.audit_bridge import open_audit
    from gateway.jobs.service import JobService

    store = open_store(settings.db_url)
    policies = load_policies(settings.policy_dir, trusted_keys_dir=settings.trusted_keys)
    services = Services(settings=settings, store=store, policies=policies,
                        audit=open_audit(settings, store))
    if not run_jobs:
        services.start_sealing()
        return services
    if runtime is None:
        from sandbox.runtime.select import select_runtime

        runtime = select_runtime()
    services.runtime = runtime
    services.jobs = JobService(services)
    services.start_sealing()
    return services
