"""What an audit event says, and the exact bytes its hash covers.

The hash of event ``n`` is ``SHA-256(message)`` where ``message`` is the canonical JSON
(UTF-8, sorted object keys, no whitespace, no NaN) of the array::

    ["dsb-audit/1", seq, ts, action, user, role, organisation, agreement, job,
     datasets, details, prev_hash]

``ts`` is UTC with microseconds (``2026-11-27T00:21:24.123456Z``), ``datasets`` a list of
``{"id", "version"}`` objects, ``details`` an object, ``prev_hash`` the hex hash of event
``n - 1`` (64 zeros for the first event). Anyone can recompute it with a JSON library
and SHA-256; nothing here depends on the database.

``datasets`` and ``details`` are stored as canonical JSON text, so the verifier splices
the stored text into the message instead of re-serialising it (see ``message_from_row``):
that is what makes verifying a million events take seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "dsb-audit/1"
GENESIS = "0" * 64
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# One encoder object: json.dumps() with options builds a new encoder per call, which
# costs as much as the encoding itself for an event.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                            allow_nan=False)
canonical_json: Callable[[Any], str] = _ENCODER.encode
# The C string escaper that encoder uses for every str (ensure_ascii=False): calling it
# per field builds the same text as encoding the list, at a third of the cost.
encode_string: Callable[[str], str] = json.encoder.encode_basestring


class Action(StrEnum):
    """Every act the regulations ask to be traceable."""

    query_submitted = "query.submitted"
    query_rewritten = "query.rewritten"
    query_rejected = "query.rejected"
    query_executed = "query.executed"
    query_failed = "query.failed"
    sandbox_spawned = "sandbox.spawned"
    sandbox_stopped = "sandbox.stopped"
    agreement_granted = "agreement.granted"
    agreement_suspended = "agreement.suspended"
    agreement_resumed = "agreement.resumed"
    agreement_revoked = "agreement.revoked"
    agreement_expired = "agreement.expired"
    dataset_published = "dataset.published"
    dataset_suspended = "dataset.suspended"
    dataset_resumed = "dataset.resumed"
    dataset_withdrawn = "dataset.withdrawn"
    export_requested = "export.requested"
    export_approved = "export.approved"
    export_denied = "export.denied"
    objection_filed = "objection.filed"
    objection_answered = "objection.answered"
    complaint_filed = "complaint.filed"
    complaint_answered = "complaint.answered"
    misuse_recorded = "misuse.recorded"
    misuse_published = "misuse.published"
    usage_report_filed = "usage.report_filed"
    audit_exported = "audit.exported"
    login = "auth.login"
    login_failed = "auth.login_failed"


class Actor(BaseModel):
    model_config = ConfigDict(frozen=True)

    user: str = Field(min_length=1, max_length=128)
    role: str = Field(min_length=1, max_length=32)
    organisation: str = Field(default="", max_length=255)


class DatasetRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=128)
    version: int | None = None


class Subjects(BaseModel):
    model_config = ConfigDict(frozen=True)

    agreement: str | None = Field(default=None, max_length=128)
    datasets: tuple[DatasetRef, ...] = ()
    job: str | None = Field(default=None, max_length=128)


class Details(BaseModel):
    """Known details get names and types; anything else JSON-able may ride along."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sql: str | None = None
    rewritten_sql: str | None = None
    rejection_code: str | None = None
    rows_returned: int | None = None
    result_digest: str | None = None
    duration_ms: int | None = None
    reason: str | None = None


class AuditEventIn(BaseModel):
    """What a caller records; the log adds sequence number, time and hashes."""

    actor: Actor
    action: Action
    subjects: Subjects = Subjects()
    details: Details = Details()


class AuditEvent(BaseModel):
    """An event as stored: everything its hash covers, plus the hash."""

    seq: int = Field(ge=1)
    ts: datetime
    action: Action
    actor: Actor
    subjects: Subjects
    details: dict[str, Any]
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC text (sorts by time); a naive time is taken to be UTC already."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime(TS_FORMAT)


def now_ts() -> str:
    return datetime.now(UTC).strftime(TS_FORMAT)


def datasets_text(subjects: Subjects) -> str:
    return canonical_json([{"id": d.id, "version": d.version} for d in subjects.datasets])


def details_text(details: Details | dict[str, Any]) -> str:
    body = details.model_dump(mode="json", exclude_none=True) if isinstance(details, Details) \
        else details
    return canonical_json(body)


def message_from_row(seq: int, ts: str, action: str, user: str, role: str, organisation: str,
                     agreement: str | None, job: str | None, datasets: str, details: str,
                     prev_hash: str) -> bytes:
    """The hashed bytes, built from stored columns (``datasets``/``details`` as JSON text).

    Equal to ``canonical_json([...])`` of the parsed values because the stored text is
    itself canonical and ``prev_hash`` is hex (nothing to escape).
    """
    esc = encode_string
    return (f'["{FORMAT}",{int(seq)},{esc(ts)},{esc(action)},{esc(user)},{esc(role)},'
            f'{esc(organisation)},{"null" if agreement is None else esc(agreement)},'
            f'{"null" if job is None else esc(job)},{datasets},{details},"{prev_hash}"]'
            ).encode()


def hash_message(message: bytes) -> str:
    return hashlib.sha256(message).hexdigest()


def event_message(event: AuditEvent) -> bytes:
    """The hashed bytes of a parsed event, by the definition (no stored text needed)."""
    return canonical_json([
        FORMAT, event.seq, format_ts(event.ts), event.action.value, event.actor.user,
        event.actor.role, event.actor.organisation, event.subjects.agreement,
        event.subjects.job, [{"id": d.id, "version": d.version} for d in event.subjects.datasets],
        event.details, event.prev_hash,
    ]).encode()


def event_from_row(row: tuple[Any, ...]) -> AuditEvent:
    """Row order: seq, ts, action, user, role, organisation, agreement, job, datasets,
    details, prev_hash, hash (the order of ``models.EVENT_COLUMNS``)."""
    seq, ts, action, user, role, org, agreement, job, datasets, details, prev, hsh = row
    return AuditEvent(
        seq=seq, ts=datetime.strptime(ts, TS_FORMAT).replace(tzinfo=UTC), action=Action(action),
        actor=Actor(user=user, role=role, organisation=org),
        subjects=Subjects(agreement=agreement, job=job,
                          datasets=tuple(DatasetRef(**d) for d in json.loads(datasets))),
        details=json.loads(details), prev_hash=prev, hash=hsh,
    )
