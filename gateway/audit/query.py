"""Reading the trail for supervisors: filter by user, agreement, dataset, action, time.

Filters run on the hashed columns themselves (there is no unhashed copy to disagree
with them), so what ``show`` finds is what ``verify`` checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, select

from gateway.audit.events import Action, AuditEvent, canonical_json, event_from_row, format_ts
from gateway.audit.models import EVENT_COLUMNS, AuditEventRow
from gateway.errors import AuditIntegrityError
from gateway.store import Store

_PAGE = 5_000


class AuditFilter(BaseModel):
    user: str | None = None
    agreement: str | None = None
    dataset: str | None = None
    action: Action | None = None
    job: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def statement(self) -> Select[Any]:
        t = AuditEventRow
        stmt = select(t)
        if self.user is not None:
            stmt = stmt.where(t.actor_user == self.user)
        if self.agreement is not None:
            stmt = stmt.where(t.agreement_id == self.agreement)
        if self.action is not None:
            stmt = stmt.where(t.action == self.action.value)
        if self.job is not None:
            stmt = stmt.where(t.job_id == self.job)
        if self.since is not None:
            stmt = stmt.where(t.ts >= format_ts(self.since))  # fixed-width UTC text sorts by time
        if self.until is not None:
            stmt = stmt.where(t.ts < format_ts(self.until))
        if self.dataset is not None:
            # A coarse LIKE on the canonical text narrows the scan; `matches` decides.
            needle = canonical_json(self.dataset)
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(t.datasets.like(f'%"id":{escaped}%', escape="\\"))
        return stmt

    def matches(self, event: AuditEvent) -> bool:
        return self.dataset is None or any(d.id == self.dataset for d in event.subjects.datasets)


def select_events(store: Store, where: AuditFilter | None = None, *, limit: int | None = None,
                  newest_first: bool = False) -> Iterator[AuditEvent]:
    """Matching events in sequence order (or newest first), read page by page."""
    where = where or AuditFilter()
    order = AuditEventRow.seq.desc() if newest_first else AuditEventRow.seq.asc()
    columns = [getattr(AuditEventRow, c) for c in EVENT_COLUMNS]
    base = where.statement().with_only_columns(*columns).order_by(order)
    after: int | None = None
    produced = 0
    while True:
        stmt = base
        if after is not None:
            stmt = stmt.where(AuditEventRow.seq < after if newest_first
                              else AuditEventRow.seq > after)
        with store.session() as session:
            rows = session.execute(stmt.limit(_PAGE)).all()
        if not rows:
            return
        for row in rows:
            try:
                event = event_from_row(tuple(row))
            except ValueError:  # pydantic's ValidationError and json's errors included
                raise AuditIntegrityError(f"event {row[0]} cannot be read back (its stored "
                                          "values were altered); run `dsb audit verify`"
                                          ) from None
            if where.matches(event):
                yield event
                produced += 1
                if limit is not None and produced >= limit:
                    return
        after = rows[-1][0]
