"""Provenance of a result, and the citation line users paste into their work."""

from __future__ import annotations

import json
from typing import Any

from gateway.policy.loading import PolicySet
from gateway.store.db import Store
from gateway.store.models import Job


def provenance(policies: PolicySet, job: Job, store: Store | None = None) -> dict[str, Any]:
    versions: list[dict[str, Any]] = json.loads(job.datasets or "[]")
    # Open objections to a dataset travel with every result drawn from it (issue 8).
    marks = _objection_marks(store, [e["id"] for e in versions])
    datasets = []
    for entry in versions:
        dataset = policies.datasets.get(entry["id"])
        datasets.append({
            **entry,
            "title": dataset.title if dataset else "",
            "provider": dataset.provider.name if dataset else "",
            "citation": dataset.citation() if dataset else "",
            "objections": marks.get(entry["id"], []),
        })
    full = json.loads(job.receipt) if job.receipt else None
    # The full receipt (with the event, and once sealed the signed checkpoint and the
    # Merkle proof) is at /v1/jobs/{id}/receipt; results carry the part that names it.
    receipt = {"seq": full["seq"], "event_hash": full["event_hash"],
               "url": f"/v1/jobs/{job.id}/receipt"} if full else None
    return {
        "job": job.id,
        "agreement": job.agreement_id,
        "datasets": datasets,
        "receipt": receipt,
        "citation": citation(datasets, job, receipt),
    }


def _objection_marks(store: Store | None, ids: list[str]) -> dict[str, list[dict[str, str]]]:
    if store is None:
        return {}
    from gateway.governance.workflows import open_marks

    return open_marks(store, ids)


def citation(datasets: list[dict[str, Any]], job: Job, receipt: dict[str, Any] | None) -> str:
    sources = "; ".join(d["citation"] for d in datasets if d.get("citation"))
    when = (job.finished_at or job.created_at).date().isoformat()
    audit = f", audit event #{receipt['seq']}" if receipt and "seq" in receipt else ""
    return (f"Source: {sources}. Accessed {when} under data-use agreement {job.agreement_id} "
            f"(job {job.id}{audit}).")


def header_value(value: Any) -> str:
    """HTTP headers are Latin-1: JSON with every non-ASCII character escaped."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
