"""Tables of the privacy guard (created by migration 0008).

- ``privacy_budgets``: one row per agreement that released anything under noise or
  auditing: epsilon spent so far. Every release of an agreement updates its row first,
  which serialises releases of one agreement across threads, workers and gateways (a
  row lock on PostgreSQL, the write lock on SQLite).
- ``noisy_answers``: the noisy answer of each (agreement, rewritten SQL, dataset
  versions), returned again instead of drawing fresh noise, so repeating a query cannot
  average the noise away.
- ``audit_entities``: per agreement, a dense number for each keyed entity hash seen, so
  sets are stored as small, compressible numbers.
- ``released_sets``: each distinct set of (entity, rows) an agreement's releases were
  computed over, with a 64-bucket signature for fast comparison.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, DateTime, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, deferred, mapped_column

from gateway.store.db import Base
from gateway.store.models import utcnow

TS = DateTime(timezone=True)


class PrivacyBudget(Base):
    __tablename__ = "privacy_budgets"

    agreement_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    epsilon_spent: Mapped[float] = mapped_column(Float, default=0.0)
    noisy_releases: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)


class NoisyAnswer(Base):
    __tablename__ = "noisy_answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    cache_key: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(36))
    epsilon: Mapped[float] = mapped_column(Float)
    answer: Mapped[bytes] = deferred(mapped_column(LargeBinary))  # Arrow IPC stream
    report: Mapped[str] = mapped_column(Text)  # JSON: noise scales, suppressed groups
    created_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)


class AuditEntity(Base):
    __tablename__ = "audit_entities"

    agreement_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity: Mapped[int] = mapped_column(BigInteger)  # 64-bit keyed hash, as signed


class ReleasedSet(Base):
    __tablename__ = "released_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(32))
    measure: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)  # distinct entities
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    members: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    job_id: Mapped[str] = mapped_column(String(36))
    label: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)
