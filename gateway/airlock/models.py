"""Table of airlock export requests (created by migration 0006)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.store.db import Base
from gateway.store.models import utcnow

TS = DateTime(timezone=True)


class ExportRequest(Base):
    """One file asking to leave a sandbox; ``content`` is kept until a decision and after,
    so what was approved is exactly what is released (``sha256`` pins it)."""

    __tablename__ = "export_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agreement_id: Mapped[str] = mapped_column(String(128), index=True)
    requested_by: Mapped[str] = mapped_column(String(128), index=True)
    requested_at: Mapped[dt.datetime] = mapped_column(TS, default=utcnow)
    filename: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    check_verdict: Mapped[str] = mapped_column(String(16))
    check_report: Mapped[str] = mapped_column(Text)  # JSON of CheckResult.as_dict()
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[dt.datetime | None] = mapped_column(TS, default=None)
    decision_note: Mapped[str] = mapped_column(Text, default="")
