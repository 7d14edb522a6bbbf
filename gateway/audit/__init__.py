"""Tamper-evident audit trail: hash chain, signed checkpoints, receipts.

    events.py       what an event says and the exact bytes its hash covers
    models.py       the tables (audit_events, audit_head)
    writer.py       serialised appenders (SQLite flock + BEGIN IMMEDIATE, PostgreSQL row lock)
    merkle.py       RFC 6962 tree hash and inclusion proofs
    checkpoints.py  signed checkpoints and their append-only file
    log.py          AuditLog: append, checkpoint, receipts
    receipts.py     receipt model and offline verification
    verify.py       whole-trail verification with a precise report
    query.py        filters for supervisors
    config.py       DSB_AUDIT_* settings and open_audit_log
    cli.py          `dsb audit`
"""

from gateway.audit.events import (
    Action,
    Actor,
    AuditEvent,
    AuditEventIn,
    DatasetRef,
    Details,
    Subjects,
)
from gateway.audit.log import AuditLog, CheckpointPolicy
from gateway.audit.query import AuditFilter, select_events
from gateway.audit.receipts import InclusionProof, Receipt, ReceiptCheck, verify_receipt
from gateway.audit.verify import Kind, Problem, VerifyReport, verify_log

__all__ = [
    "Action",
    "Actor",
    "AuditEvent",
    "AuditEventIn",
    "AuditFilter",
    "AuditLog",
    "CheckpointPolicy",
    "DatasetRef",
    "Details",
    "InclusionProof",
    "Kind",
    "Problem",
    "Receipt",
    "ReceiptCheck",
    "Subjects",
    "VerifyReport",
    "select_events",
    "verify_log",
    "verify_receipt",
]
