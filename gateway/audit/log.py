"""``AuditLog``: append events, seal them with signed checkpoints, hand out receipts.

Fail closed: ``append`` returns only after the event is committed, and raises
``AuditError`` for anything else, so a caller that releases results only after
``append`` returned never releases an unaudited result.

Sealing happens inside an append, under the writer lock, *before* the new event is
inserted, whenever the unsealed tail has reached ``checkpoint_every_events`` events or
the last checkpoint is ``checkpoint_every_s`` old. Hence the unsealed tail never exceeds
``checkpoint_every_events`` (``verify`` may rely on it), and a failed checkpoint fails
the append that triggered it. A periodic ``checkpoint_if_due`` seals a quiet log.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from gateway.audit import merkle
from gateway.audit.checkpoints import (
    Checkpoint,
    CheckpointFile,
    CheckpointStatement,
    key_id,
    sign,
)
from gateway.audit.events import (
    GENESIS,
    TS_FORMAT,
    AuditEvent,
    AuditEventIn,
    canonical_json,
    datasets_text,
    event_from_row,
    hash_message,
    message_from_row,
    now_ts,
)
from gateway.audit.receipts import InclusionProof, Receipt, ReceiptCheck, verify_receipt
from gateway.audit.writer import SELECT_EVENTS, Backend, Row, Tx, backend_for
from gateway.errors import AuditError, AuditIntegrityError, NotFound
from gateway.store import Store


@dataclass(frozen=True)
class CheckpointPolicy:
    """When to seal: whichever comes first."""

    every_events: int = 1000
    every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.every_events < 1 or self.every_s <= 0:
            raise ValueError("checkpoint_every_events must be >= 1 and checkpoint_every_s > 0")


class AuditLog:
    def __init__(self, store: Store, checkpoint_path: Path, private_key: Ed25519PrivateKey,
                 policy: CheckpointPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or CheckpointPolicy()
        self.checkpoints = CheckpointFile(checkpoint_path)
        self._key = private_key
        self._key_id = key_id(private_key.public_key())
        self._backend: Backend = backend_for(store.engine)
        self._started = time.time()
        self._last_seen: tuple[Checkpoint | None, float] = (None, self._started)

    def close(self) -> None:
        self._backend.close()

    # -- writing -----------------------------------------------------------------------

    def append(self, event: AuditEventIn) -> Receipt:
        """Commit one event durably and return its (not yet sealed) receipt."""
        # Everything that does not depend on the head is done before taking the lock.
        a = event.actor
        s = event.subjects
        action = event.action.value
        try:
            body = event.details.model_dump(mode="json", exclude_none=True)
            datasets, details = datasets_text(s), canonical_json(body)
            with self._backend.locked() as tx:
                seq, prev = tx.head()
                self._seal_if_due(tx, seq, prev)
                seq += 1
                now = datetime.now(UTC)
                ts = now.strftime(TS_FORMAT)
                hash_ = hash_message(message_from_row(
                    seq, ts, action, a.user, a.role, a.organisation, s.agreement, s.job,
                    datasets, details, prev))
                tx.insert((seq, ts, action, a.user, a.role, a.organisation, s.agreement, s.job,
                           datasets, details, prev, hash_))
                tx.set_head(seq, hash_)
        except AuditError:
            raise
        except Exception as exc:
            raise AuditError(f"audit event not recorded: {exc}") from exc
        # Built from the validated input rather than re-parsed from the row: the same
        # values, a quarter of the append's cost saved.
        stored = AuditEvent.model_construct(seq=seq, ts=now, action=event.action, actor=a,
                                            subjects=s, details=body, prev_hash=prev,
                                            hash=hash_)
        return Receipt(seq=seq, event_hash=hash_, event=stored)

    def checkpoint(self) -> Checkpoint | None:
        """Seal everything appended so far now; None if nothing was unsealed."""
        with self._backend.locked() as tx:
            seq, head = tx.head()
            return self._seal(tx, seq, head)

    def checkpoint_if_due(self) -> Checkpoint | None:
        with self._backend.locked() as tx:
            seq, head = tx.head()
            return self._seal_if_due(tx, seq, head)

    def _seal_if_due(self, tx: Tx, head_seq: int, head_hash: str) -> Checkpoint | None:
        last = self.checkpoints.last()
        sealed = last.statement.seq_to if last else 0
        if head_seq <= sealed:
            if head_seq < sealed:
                self._refuse_truncated(last, head_seq)
            return None
        if head_seq - sealed >= self.policy.every_events or \
                time.time() - self._sealed_at(last) >= self.policy.every_s:
            return self._seal(tx, head_seq, head_hash)
        return None

    def _sealed_at(self, last: Checkpoint | None) -> float:
        if last is None:
            return self._started
        if self._last_seen[0] is not last:
            ts = datetime.strptime(last.statement.ts, TS_FORMAT).replace(tzinfo=UTC)
            self._last_seen = (last, ts.timestamp())
        return self._last_seen[1]

    def _seal(self, tx: Tx, head_seq: int, head_hash: str) -> Checkpoint | None:
        last = self.checkpoints.last()
        if last is None and head_seq > self.policy.every_events:
            raise AuditIntegrityError(
                f"{self.checkpoints.path} has no checkpoint but the log holds {head_seq} events; "
                "restore the checkpoint file from backup and run `dsb audit verify`")
        first = last.statement.seq_to + 1 if last else 1
        if head_seq < first - 1:
            self._refuse_truncated(last, head_seq)
        if head_seq < first:
            return None
        rows = tx.events(first, head_seq)
        self._check_segment(rows, first, head_seq, head_hash,
                            last.statement.head_hash if last else GENESIS)
        statement = CheckpointStatement(
            index=last.statement.index + 1 if last else 0, seq_from=first, seq_to=head_seq,
            head_hash=head_hash,
            merkle_root=merkle.root([bytes.fromhex(r[-1]) for r in rows]).hex(),
            prev_checkpoint=last.statement.digest() if last else GENESIS,
            ts=now_ts(), key_id=self._key_id)
        checkpoint = sign(statement, self._key)
        tx.make_durable()
        try:
            self.checkpoints.append(checkpoint)
        except OSError as exc:
            raise AuditError(f"cannot write checkpoint to {self.checkpoints.path}: {exc}") from exc
        return checkpoint

    @staticmethod
    def _check_segment(rows: list[Row], first: int, last: int, head_hash: str,
                       prev: str) -> None:
        """Never sign what does not verify: the segment must continue the sealed chain."""
        if len(rows) != last - first + 1:
            raise AuditIntegrityError(
                f"events {first}..{last} are not all present; run `dsb audit verify`")
        for row in rows:
            seq, ts, action, user, role, org, agreement, job, datasets, details, _, stored = row
            recomputed = hash_message(message_from_row(
                seq, ts, action, user, role, org, agreement, job, datasets, details, prev))
            if row[10] != prev or stored != recomputed:
                raise AuditIntegrityError(
                    f"event {row[0]} does not verify; refusing to sign it. "
                    "Run `dsb audit verify`")
            prev = row[11]
        if prev != head_hash:
            raise AuditIntegrityError("audit_head does not name the newest event")

    def _refuse_truncated(self, last: Checkpoint | None, head_seq: int) -> None:
        assert last is not None
        raise AuditIntegrityError(
            f"checkpoint {last.statement.index} seals events up to {last.statement.seq_to} "
            f"but the log ends at {head_seq}: the database lost its tail; run `dsb audit verify`")

    # -- receipts ----------------------------------------------------------------------

    def receipt(self, seq: int) -> Receipt:
        """The receipt of event ``seq``, with checkpoint and proof once it is sealed."""
        with self.store.engine.connect() as conn:
            row = conn.execute(text(f"{SELECT_EVENTS} WHERE seq = :s"), {"s": seq}).first()
            if row is None:
                raise NotFound(f"no audit event {seq}")
            event = event_from_row(tuple(row))
            covering = self._covering(seq)
            if covering is None:
                return Receipt(seq=seq, event_hash=event.hash, event=event)
            st = covering.statement
            hashes = [bytes.fromhex(h) for (h,) in conn.execute(
                text("SELECT hash FROM audit_events WHERE seq BETWEEN :a AND :b ORDER BY seq"),
                {"a": st.seq_from, "b": st.seq_to})]
        if len(hashes) != st.seq_to - st.seq_from + 1:
            raise AuditIntegrityError(f"events of checkpoint {st.index} are missing; "
                                      "run `dsb audit verify`")
        proof = InclusionProof(
            leaf_index=seq - st.seq_from, tree_size=len(hashes),
            path=tuple(p.hex() for p in merkle.inclusion_proof(hashes, seq - st.seq_from)))
        return Receipt(seq=seq, event_hash=event.hash, event=event, checkpoint=covering,
                       proof=proof)

    def check_receipt(self, receipt: Receipt) -> ReceiptCheck:
        """Verify a receipt offline, then that this log still holds what it proves.

        A valid receipt the log contradicts is evidence the log was rewritten:
        ``AuditIntegrityError``, not ``ReceiptInvalid``.
        """
        check = verify_receipt(receipt, self._key.public_key())
        assert receipt.checkpoint is not None
        held = self._covering(receipt.seq)
        if held != receipt.checkpoint:
            raise AuditIntegrityError(
                f"receipt {receipt.seq} carries a validly signed checkpoint "
                f"{receipt.checkpoint.statement.index} that the checkpoint file no longer holds")
        try:
            current = self.receipt(receipt.seq)
        except NotFound:
            raise AuditIntegrityError(f"event {receipt.seq}, proven by a valid receipt, is "
                                      "missing from the log") from None
        if current.event_hash != receipt.event_hash:
            raise AuditIntegrityError(f"event {receipt.seq} differs from its valid receipt")
        return check

    def _covering(self, seq: int) -> Checkpoint | None:
        checkpoints = self.checkpoints.checkpoints()
        ends = [c.statement.seq_to for c in checkpoints]
        i = bisect.bisect_left(ends, seq)
        if i < len(checkpoints) and checkpoints[i].statement.seq_from <= seq:
            return checkpoints[i]
        return None
