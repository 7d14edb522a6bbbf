"""The privacy guard of aggregate releases: noise with a budget, or query auditing.

The job service calls it twice per aggregate query:

- ``before_run``: in a scenario with noise, the stored answer of the same query (no new
  noise, no charge), or a ``budget_exhausted`` refusal if a new answer cannot be paid;
- ``release``: after execution, the post-checked result made noisy and charged, or,
  without noise, the post-checked result once auditing found no differencing risk
  (else ``differencing_risk``).

What the user is told (noise scales, epsilon charged and left, sets audited) comes back
as ``Release.privacy``, stored with the job and shown with its result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from gateway.policy.models import Noise, Scenario
from gateway.privacy import ledger
from gateway.privacy.auditing import Auditor
from gateway.privacy.models import NoisyAnswer
from gateway.privacy.noise import apply_noise
from gateway.privacy.sets import released_sets
from gateway.rewrite.context import Rewritten
from gateway.rewrite.postcheck import postcheck
from gateway.store.db import Store


@dataclass(frozen=True)
class Release:
    table: pa.Table
    suppressed_groups: int
    privacy: dict[str, Any] = field(default_factory=dict)


def cache_key(agreement_id: str, rewritten: Rewritten, versions: list[dict[str, Any]]) -> str:
    """Same agreement, same rewritten statement (normalised by regeneration), same data."""
    data = [(v["id"], v.get("published_version"), v.get("sha256")) for v in versions]
    text = json.dumps([agreement_id, rewritten.sql, data], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _from_bytes(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


def _budget(noise: Noise, spent: float) -> dict[str, float]:
    return {"epsilon": noise.budget_epsilon, "spent": round(spent, 9),
            "remaining": round(max(noise.budget_epsilon - spent, 0.0), 9)}


class PrivacyGuard:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.auditor = Auditor(store)

    def before_run(self, agreement_id: str, scenario: Scenario, rewritten: Rewritten,
                   key: str) -> Release | None:
        noise = scenario.noise
        if rewritten.noise is None or noise is None:
            return None
        found = ledger.cached(self.store, agreement_id, key)
        if found is None:
            ledger.check_affordable(self.store, agreement_id, noise, key)
            return None
        return self._answer(found, noise, ledger.balance(self.store, agreement_id).spent,
                            charged=0.0)

    def release(self, raw: pa.Table, rewritten: Rewritten, *, agreement_id: str,
                scenario: Scenario, job_id: str, key: str, noun: str) -> Release:
        if rewritten.noise is not None and scenario.noise is not None:
            return self._noisy(raw, rewritten, scenario.noise, agreement_id, job_id, key)
        released = postcheck(raw, rewritten)
        privacy: dict[str, Any] = {}
        if rewritten.audited:
            sets = released_sets(released, rewritten)
            stored, earlier = self.auditor.check_and_record(agreement_id, job_id, sets,
                                                            k=rewritten.k or 2, noun=noun)
            privacy["query_auditing"] = {"sets_checked": len(sets), "new_sets_stored": stored,
                                         "earlier_sets": earlier}
        return Release(released.table, released.suppressed_groups, privacy)

    def _noisy(self, raw: pa.Table, rewritten: Rewritten, noise: Noise, agreement_id: str,
               job_id: str, key: str) -> Release:
        assert rewritten.noise is not None
        noisy, report = apply_noise(raw, rewritten.noise)
        released = postcheck(noisy, rewritten)
        stored = NoisyAnswer(
            agreement_id=agreement_id, cache_key=key, job_id=job_id,
            epsilon=rewritten.noise.epsilon, answer=_to_bytes(released.table),
            report=json.dumps({"noise": report.as_dict(),
                               "suppressed_groups": released.suppressed_groups}))
        kept, spent = ledger.charge(self.store, agreement_id, noise, stored)
        return self._answer(kept, noise, spent, charged=kept.epsilon if kept is stored else 0.0)

    @staticmethod
    def _answer(answer: NoisyAnswer, noise: Noise, spent: float, *, charged: float) -> Release:
        report = json.loads(answer.report)
        privacy = {**report["noise"], "epsilon_charged": charged,
                   "cached": not charged, "first_answered_by_job": answer.job_id,
                   "budget": _budget(noise, spent)}
        return Release(_from_bytes(answer.answer), int(report["suppressed_groups"]), privacy)
