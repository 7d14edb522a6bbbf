"""Tables of the audit trail.

``audit_events`` holds exactly the values an event's hash covers, nothing derived, so
that changing any stored value breaks a hash. ``audit_head`` is one row (id 1) naming
the newest event: appenders lock it (PostgreSQL) and read it instead of scanning.
Checkpoints are not here on purpose: they live in a separate append-only file so that
whoever can rewrite the database cannot also rewrite what was signed.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.db import Base

# 64-bit on PostgreSQL (years of events); INTEGER on SQLite, where that is the rowid.
SEQ = BigInteger().with_variant(Integer(), "sqlite")

# Column order shared by the fast SQL in writer.py / verify.py and events.event_from_row.
EVENT_COLUMNS = ("seq", "ts", "action", "actor_user", "actor_role", "actor_org", "agreement_id",
                 "job_id", "datasets", "details", "prev_hash", "hash")


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(27), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    actor_user: Mapped[str] = mapped_column(String(128), nullable=False)
    actor_role: Mapped[str] = mapped_column(String(32), nullable=False)
    actor_org: Mapped[str] = mapped_column(String(255), nullable=False)
    agreement_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    datasets: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (
        Index("ix_audit_events_actor_user", "actor_user"),
        Index("ix_audit_events_agreement_id", "agreement_id"),
        Index("ix_audit_events_job_id", "job_id"),
        Index("ix_audit_events_ts", "ts"),
    )


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(SEQ, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)

    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_head_single_row"),)
