"""The audit chain at a glance: head, last signed checkpoint, how much is unsealed.

Cheap (one row and the checkpoint file's last line), for the console header and
``/metrics``; the full verification stays ``audit_bridge.verify``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.audit.events import TS_FORMAT
from gateway.audit.models import AuditHead
from gateway.services import Services


@dataclass(frozen=True)
class ChainStatus:
    head_seq: int
    sealed_seq: int
    checkpoint_at: dt.datetime | None

    @property
    def unsealed(self) -> int:
        return self.head_seq - self.sealed_seq


def chain_status(svc: Services) -> ChainStatus:
    with svc.store.session() as session:
        head = session.get(AuditHead, 1)
        head_seq = head.seq if head is not None else 0
    last = svc.audit.checkpoints.last() if svc.audit is not None else None
    if last is None:
        return ChainStatus(head_seq, 0, None)
    at = dt.datetime.strptime(last.statement.ts, TS_FORMAT).replace(tzinfo=dt.UTC) \
        if last.statement.ts.endswith("Z") else dt.datetime.fromisoformat(last.statement.ts)
    return ChainStatus(head_seq, last.statement.seq_to, at)
