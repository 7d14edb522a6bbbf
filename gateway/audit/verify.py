"""Check the whole trail: every event's hash and link, every checkpoint's signature,
chain, head and Merkle root, and that the database still holds what was signed.

Reading is one pass in ``seq`` order inside one read snapshot. The checkpoint file is
read *before* the snapshot opens, so every checkpoint read covers only events the
snapshot contains (checkpoints are written after the events they seal are committed).
Problems come in stream order, so ``problems[0]`` is the first broken place.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel
from sqlalchemy import Engine

from gateway.audit import merkle
from gateway.audit.checkpoints import Checkpoint, CheckpointFile, signature_valid
from gateway.audit.events import FORMAT, GENESIS, encode_string, hash_message, message_from_row
from gateway.audit.writer import SELECT_EVENTS
from gateway.errors import AuditError

MAX_PROBLEMS = 100
_BATCH = 20_000
_WINDOW = 64  # how far back/forward a diagnosis looks for a moved or skipped event


class Kind(StrEnum):
    event_changed = "event_changed"          # stored values no longer match the hash
    event_moved = "event_moved"              # an intact event sits at another position
    chain_broken = "chain_broken"            # prev_hash is not the previous event's hash
    events_missing = "events_missing"        # a gap in the sequence numbers
    truncated = "truncated"                  # signed events beyond the database's end
    checkpoint_malformed = "checkpoint_malformed"
    checkpoint_signature = "checkpoint_signature"
    checkpoint_chain = "checkpoint_chain"    # index / range / prev_checkpoint do not follow
    checkpoint_head = "checkpoint_head"      # the signed head is not the event there
    checkpoint_root = "checkpoint_root"      # the segment's Merkle root differs
    head_mismatch = "head_mismatch"          # audit_head does not name the last event
    unsealed_tail = "unsealed_tail"          # more unsealed events than the policy allows


class Problem(BaseModel):
    kind: Kind
    message: str
    seq: int | None = None
    checkpoint: int | None = None
    line: int | None = None


class VerifyReport(BaseModel):
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    checkpoints: int = 0
    sealed_through: int = 0
    unsealed: int = 0
    problems: list[Problem] = []
    problems_not_listed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.problems_not_listed += 1


def verify_log(engine: Engine, checkpoint_path: Path, public_key: Ed25519PublicKey, *,
               max_unsealed: int | None = None) -> VerifyReport:
    """Verify everything; ``max_unsealed`` (the checkpoint policy's event count) turns a
    too-long unsealed tail, the sign of removed checkpoints, into a problem."""
    started = time.perf_counter()
    report = VerifyReport()
    checkpoints = _check_checkpoints(CheckpointFile(checkpoint_path), public_key, report)
    with _snapshot(engine) as (rows, head):
        _check_events(rows, checkpoints, report)
    if head is not None and report.last_seq is not None and head != (report.last_seq,
                                                                      report.last_hash):
        report.add(Problem(kind=Kind.head_mismatch, seq=report.last_seq,
                           message=f"audit_head names event {head[0]} but the log ends at "
                                   f"event {report.last_seq}: events were removed or added "
                                   "behind the writer's back"))
    elif head is not None and report.last_seq is None and head[0] != 0:
        report.add(Problem(kind=Kind.head_mismatch, seq=head[0],
                           message=f"audit_head names event {head[0]} but the log is empty"))
    last = report.last_seq or 0
    report.unsealed = max(0, last - report.sealed_through)
    if max_unsealed is not None and report.unsealed > max_unsealed:
        report.add(Problem(kind=Kind.unsealed_tail, seq=report.sealed_through + 1,
                           message=f"events {report.sealed_through + 1}..{last} are not sealed, "
                                   f"more than the {max_unsealed} the checkpoint policy allows: "
                                   "checkpoints were removed from the file"))
    report.seconds = time.perf_counter() - started
    return report


def _check_checkpoints(file: CheckpointFile, key: Ed25519PublicKey,
                       report: VerifyReport) -> list[Checkpoint]:
    """Signature and chain of each line; returns the checkpoints whose signature holds."""
    trusted: list[Checkpoint] = []
    prev = None
    for line in file.read_all():
        report.checkpoints += 1
        cp = line.checkpoint
        if cp is None:
            report.add(Problem(kind=Kind.checkpoint_malformed, line=line.number,
                               message=f"{file.path} line {line.number}: {line.error}"))
            continue
        st = cp.statement
        where = f"checkpoint {st.index} (line {line.number}, events {st.seq_from}..{st.seq_to})"
        if not signature_valid(cp, key):
            report.add(Problem(kind=Kind.checkpoint_signature, checkpoint=st.index,
                               line=line.number, seq=st.seq_to,
                               message=f"{where}: signature does not verify with the platform "
                                       "key (replaced or altered)"))
        else:
            trusted.append(cp)
        expected = ((prev.index + 1, prev.seq_to + 1, prev.digest()) if prev is not None
                    else (0, 1, GENESIS))
        if (st.index, st.seq_from, st.prev_checkpoint) != expected or st.seq_to < st.seq_from:
            report.add(Problem(kind=Kind.checkpoint_chain, checkpoint=st.index,
                               line=line.number, seq=st.seq_from,
                               message=f"{where} does not follow the checkpoint before it "
                                       f"(expected index {expected[0]} from event "
                                       f"{expected[1]}): checkpoints were removed, inserted "
                                       "or reordered"))
        prev = st
    return trusted


@contextmanager
def _snapshot(engine: Engine) -> Iterator[tuple[Iterable[tuple[Any, ...]],
                                                tuple[int, str] | None]]:
    """Rows in seq order and the head row, from one consistent read."""
    query = f"{SELECT_EVENTS} ORDER BY seq"
    if engine.dialect.name == "sqlite":
        # The raw driver: SQLAlchemy's row wrapping would cost more than the hashing.
        database = engine.url.database or ""
        try:
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open {database}: {exc}") from exc
        try:
            conn.execute("BEGIN")
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            cursor = conn.execute(query)
            yield cursor, (tuple(head) if head else None)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit log: {exc}") from exc
        finally:
            conn.close()
        return
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as sa_conn, \
            sa_conn.begin():
        head_row = sa_conn.exec_driver_sql("SELECT seq, hash FROM audit_head WHERE id = 1").first()
        result = sa_conn.execution_options(stream_results=True, yield_per=_BATCH) \
            .exec_driver_sql(query)
        yield ((tuple(r) for r in result),
               (int(head_row[0]), str(head_row[1])) if head_row else None)


def _check_events(rows: Iterable[tuple[Any, ...]], checkpoints: list[Checkpoint],
                  report: VerifyReport) -> None:
    pending = sorted(checkpoints, key=lambda c: c.statement.seq_to)
    nxt = 0
    segment: list[tuple[int, str]] = []  # (seq, hash) since the last closed checkpoint
    expected, prev_hash = 1, GENESIS
    esc, sha = encode_string, hashlib.sha256
    count = 0
    recent: deque[tuple[int, str]] = deque(maxlen=_WINDOW)  # for diagnosis only
    for row in rows:
        seq, ts, action, user, role, org, agreement, job, datasets, details, prev, stored = row
        while nxt < len(pending) and pending[nxt].statement.seq_to < seq:
            _close(pending[nxt], segment, report, at_end=False)
            nxt += 1
        count += 1
        if count == 1:
            report.first_seq = seq
        if seq != expected:
            report.add(Problem(kind=Kind.events_missing, seq=expected,
                               message=f"events {expected}..{seq - 1} are missing (deleted)"
                               if seq - 1 > expected else f"event {expected} is missing (deleted)"))
        elif prev != prev_hash:
            report.add(_broken_link(seq, prev, recent))
        # Inlined message_from_row: this runs a million times per million events.
        message = (f'["{FORMAT}",{seq},{esc(ts)},{esc(action)},{esc(user)},{esc(role)},'
                   f'{esc(org)},{"null" if agreement is None else esc(agreement)},'
                   f'{"null" if job is None else esc(job)},{datasets},{details},"{prev}"]')
        if sha(message.encode()).hexdigest() != stored:
            report.add(_diagnose(row))
        segment.append((seq, stored))
        recent.append((seq, stored))
        expected, prev_hash = seq + 1, stored
    while nxt < len(pending):
        _close(pending[nxt], segment, report, at_end=True)
        nxt += 1
    report.events = count
    if count:
        report.last_seq, report.last_hash = expected - 1, prev_hash


def _broken_link(seq: int, prev: str, recent: deque[tuple[int, str]]) -> Problem:
    """Name inserted events when the link skips back to an earlier event."""
    for earlier, hash_ in recent:
        if hash_ == prev and earlier < seq - 1:
            span = f"event {seq - 1} was" if earlier == seq - 2 else \
                f"events {earlier + 1}..{seq - 1} were"
            return Problem(kind=Kind.chain_broken, seq=earlier + 1,
                           message=f"{span} inserted: event {seq} links to event {earlier}")
    return Problem(kind=Kind.chain_broken, seq=seq,
                   message=f"event {seq} does not link to event {seq - 1}: its prev_hash "
                           "differs from that event's hash")


def _diagnose(row: tuple[Any, ...]) -> Problem:
    """Changed in place, or an intact event renumbered (inserted/deleted/reordered)?"""
    seq, stored = row[0], row[11]
    for other in range(max(1, seq - _WINDOW), seq + _WINDOW + 1):
        if other != seq and hash_message(message_from_row(other, *row[1:11])) == stored:
            return Problem(kind=Kind.event_moved, seq=seq,
                           message=f"event {seq} was written as event {other}: events were "
                                   "inserted, deleted or reordered around it")
    return Problem(kind=Kind.event_changed, seq=seq,
                   message=f"event {seq} does not match its hash: a stored value was changed "
                           "after it was written")


def _close(cp: Checkpoint, segment: list[tuple[int, str]], report: VerifyReport, *,
           at_end: bool) -> None:
    """Compare a checkpoint with the events it seals, then drop them from ``segment``."""
    st = cp.statement
    where = f"checkpoint {st.index} (events {st.seq_from}..{st.seq_to})"
    covered = [(s, h) for s, h in segment if st.seq_from <= s <= st.seq_to]
    segment[:] = [(s, h) for s, h in segment if s > st.seq_to]
    report.sealed_through = max(report.sealed_through, st.seq_to)
    last = covered[-1][0] if covered else None
    if last is None and not at_end:
        report.add(Problem(kind=Kind.checkpoint_head, checkpoint=st.index, seq=st.seq_to,
                           message=f"{where}: none of its events are in the log"))
        return
    if at_end and (last is None or last < st.seq_to):
        end = last if last is not None else st.seq_from - 1
        report.add(Problem(kind=Kind.truncated, checkpoint=st.index, seq=end + 1,
                           message=f"{where} is signed but the log ends at event {end}: "
                                   f"events {end + 1}..{st.seq_to} were cut off (tail truncated)"))
        return
    if last != st.seq_to or covered[-1][1] != st.head_hash:
        report.add(Problem(kind=Kind.checkpoint_head, checkpoint=st.index, seq=st.seq_to,
                           message=f"{where}: event {st.seq_to} is not the signed head "
                                   f"{st.head_hash[:16]}…: the log was rewritten up to there"))
    if merkle.root([bytes.fromhex(h) for _, h in covered]).hex() != st.merkle_root:
        report.add(Problem(kind=Kind.checkpoint_root, checkpoint=st.index, seq=st.seq_from,
                           message=f"{where}: the events no longer match the signed Merkle "
                                   "root: some were changed, inserted, deleted or reordered "
                                   "since it was signed"))
