"""Tables of the governance workflows (created by migration 0005)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.db import Base
from gateway.store.models import utcnow

TS = DateTime(timezone=True)


class Objection(Base):
    """A data error reported on a dataset (optionally a field and a row range).

    While ``status`` is ``open`` the dataset carries a mark in the catalog and in the
    provenance of every result that used it.
    """

    __tablename__ = "objections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(String(128), index=True)
    field: Mapped[str] = mapped_column(String(128), default="")
    row_range: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text)
    filed_by: Mapped[str] = mapped_column(String(128))
    filed_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    answer: Mapped[str] = mapped_column(Text, default="")
    answered_by: Mapped[str] = mapped_column(String(128), default="")
    answered_at: Mapped[dt.datetime | None] = mapped_column(TS, default=None)


class Complaint(Base):
    """A claim that a dataset infringes a trade secret or someone's privacy."""

    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # trade_secret | privacy | other
    description: Mapped[str] = mapped_column(Text)
    filed_by: Mapped[str] = mapped_column(String(128))
    filed_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)
    # open -> suspended -> withdrawn | restored | restored_after_fix
    status: Mapped[str] = mapped_column(String(24), default="open", index=True)
    resolution: Mapped[str] = mapped_column(Text, default="")
    resolved_by: Mapped[str] = mapped_column(String(128), default="")
    resolved_at: Mapped[dt.datetime | None] = mapped_column(TS, default=None)


class MisuseRecord(Base):
    """A violation a supervisor recorded against a user or an organisation."""

    __tablename__ = "misuse_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(16))  # user | organisation
    subject: Mapped[str] = mapped_column(String(255), index=True)
    violation: Mapped[str] = mapped_column(Text)
    measure: Mapped[str] = mapped_column(String(16))  # warn | restrict | close
    affected: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of agreement ids
    recorded_by: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)
    published: Mapped[bool] = mapped_column(Boolean, default=False)


class UsageReport(Base):
    """A holder's periodic report on how an agreement's data was used."""

    __tablename__ = "usage_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(128), index=True)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    summary: Mapped[str] = mapped_column(Text)
    outputs: Mapped[str] = mapped_column(Text, default="")
    filed_by: Mapped[str] = mapped_column(String(128))
    filed_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow, index=True)
