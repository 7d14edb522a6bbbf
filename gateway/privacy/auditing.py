"""Query auditing: refuse a release that, with an earlier one, isolates fewer than k entities.

Two releases of the same measure (``sum(income)`` over two groups, say) can be
subtracted. If the entities whose rows differ between the two sets number from 1 to
k-1, the difference is about those few entities: the differencing and tracker attacks
of SECURITY-NOTES, and the complement of a suppressed group (the sum of the released
groups against a total). Such a release is refused with ``differencing_risk``.

Fast path, with thousands of earlier sets: a set is an entity -> rows map; each element
(entity, rows) is hashed to 64 bits and xor-ed into one of 64 buckets, the signature.
If d entities differ, at most 2d elements differ, so at most 2d buckets do: a stored
set whose size (entity count) is within k-1 of the new one and whose signature differs
in at most 2(k-1) buckets is a candidate, and only candidates (rare) are compared
exactly. The filter never drops a risky pair: it only proves sets far apart.

What is compared: entities with their row counts, so one flight removed from an aircraft
with others in the group is a difference too. Not seen: two releases that swap rows of
one entity for as many other rows of it (same count); noise covers that.

    >>> a = np.array([1, 2, 3], dtype=np.uint64); r = np.ones(3, dtype=np.uint64)
    >>> entities_differing(a, r, a[:2], r[:2])
    1
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from gateway.errors import DifferencingRisk
from gateway.privacy import ledger
from gateway.privacy.models import AuditEntity, ReleasedSet
from gateway.privacy.sets import EntitySet
from gateway.store.db import Store
from gateway.store.models import utcnow

BUCKETS = 64
SHIFT = np.uint64(64 - 6)  # top 6 bits of an element pick its bucket


def _mix(idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """splitmix64 of (entity number, rows): one 64-bit element per entity of a set."""
    with np.errstate(over="ignore"):
        z = (idx.astype(np.uint64) << np.uint64(32)) ^ rows.astype(np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def signature(idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    elements = _mix(idx, rows)
    sig = np.zeros(BUCKETS, dtype=np.uint64)
    np.bitwise_xor.at(sig, (elements >> SHIFT).astype(np.intp), elements)
    return sig


def entities_differing(a_idx: np.ndarray, a_rows: np.ndarray, b_idx: np.ndarray,
                       b_rows: np.ndarray) -> int:
    """Entities whose row counts differ between two sets (absent = 0 rows)."""
    every = np.union1d(a_idx, b_idx)
    a = np.zeros(len(every), dtype=np.uint64)
    b = np.zeros(len(every), dtype=np.uint64)
    a[np.searchsorted(every, a_idx)] = a_rows
    b[np.searchsorted(every, b_idx)] = b_rows
    return int(np.count_nonzero(a != b))


def _narrow(values: np.ndarray) -> np.ndarray:
    top = int(values.max()) if len(values) else 0
    kind = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return values.astype(kind)


def encode(idx: np.ndarray, rows: np.ndarray) -> bytes:
    """Sorted entity numbers as gaps, then rows, each in the narrowest integer type:
    mostly one byte per entity before compression, a fraction of it after."""
    gaps = _narrow(np.diff(idx.astype(np.int64), prepend=0))
    counts = _narrow(rows)
    head = np.array([len(idx), gaps.itemsize, counts.itemsize], dtype=np.uint32).tobytes()
    return zlib.compress(head + gaps.tobytes() + counts.tobytes(), 6)


def decode(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    raw = zlib.decompress(blob)
    size, gap_bytes, row_bytes = np.frombuffer(raw[:12], dtype=np.uint32).tolist()
    kinds = {1: np.uint8, 2: np.uint16, 4: np.uint32}
    gaps = np.frombuffer(raw, dtype=kinds[gap_bytes], count=size, offset=12)
    rows = np.frombuffer(raw, dtype=kinds[row_bytes], count=size,
                         offset=12 + size * gap_bytes)
    return np.cumsum(gaps, dtype=np.int64), rows.astype(np.uint64)


@dataclass
class Prepared:
    """A new set in this agreement's entity numbering, ready to compare and store."""

    source: EntitySet
    idx: np.ndarray  # int64, sorted
    rows: np.ndarray  # uint64
    sig: np.ndarray
    fingerprint: str


@dataclass
class _Measure:
    """Signatures of one measure's stored sets, in growable arrays."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(64, dtype=np.int64))
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(64, dtype=np.int64))
    sigs: np.ndarray = field(default_factory=lambda: np.zeros((64, BUCKETS), dtype=np.uint64))
    count: int = 0

    def add(self, set_id: int, size: int, sig: np.ndarray) -> None:
        if self.count == len(self.ids):
            grow = len(self.ids) * 2
            self.ids = np.resize(self.ids, grow)
            self.sizes = np.resize(self.sizes, grow)
            self.sigs = np.resize(self.sigs, (grow, BUCKETS))
        self.ids[self.count], self.sizes[self.count] = set_id, size
        self.sigs[self.count] = sig
        self.count += 1

    def candidates(self, size: int, sig: np.ndarray, k: int) -> np.ndarray:
        """Ids of stored sets that might differ from (size, sig) in 1..k-1 entities."""
        near = np.flatnonzero(np.abs(self.sizes[:self.count] - size) < k)
        if len(near) == 0:
            return near
        differing = np.count_nonzero(self.sigs[near] != sig, axis=1)
        return np.asarray(self.ids[near[differing <= 2 * (k - 1)]], dtype=np.int64)


@dataclass
class AgreementIndex:
    """What one process knows of an agreement's released sets (refreshed from the store)."""

    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    next_number: int = 0
    measures: dict[str, _Measure] = field(default_factory=dict)
    fingerprints: set[str] = field(default_factory=set)
    last_set: int = 0

    def refresh(self, session: Session, agreement_id: str) -> None:
        rows = session.execute(
            select(AuditEntity.idx, AuditEntity.entity)
            .where(AuditEntity.agreement_id == agreement_id,
                   AuditEntity.idx >= self.next_number).order_by(AuditEntity.idx)).all()
        if rows:
            numbers = np.array([r[0] for r in rows], dtype=np.int64)
            hashes = np.array([r[1] for r in rows], dtype=np.int64).view(np.uint64)
            self._learn(hashes, numbers)
        for set_id, measure, size, sig, fingerprint in session.execute(
                select(ReleasedSet.id, ReleasedSet.measure, ReleasedSet.size,
                       ReleasedSet.signature, ReleasedSet.fingerprint)
                .where(ReleasedSet.agreement_id == agreement_id,
                       ReleasedSet.id > self.last_set).order_by(ReleasedSet.id)):
            self.measures.setdefault(measure, _Measure()).add(
                set_id, size, np.frombuffer(sig, dtype=np.uint64))
            self.fingerprints.add(fingerprint)
            self.last_set = set_id

    def _learn(self, hashes: np.ndarray, numbers: np.ndarray) -> None:
        merged = np.concatenate([self.hashes, hashes])
        order = np.argsort(merged, kind="stable")
        self.hashes = merged[order]
        self.numbers = np.concatenate([self.numbers, numbers])[order]
        self.next_number = max(self.next_number, int(numbers.max()) + 1)

    def number(self, entities: np.ndarray, fresh: dict[int, int]) -> np.ndarray:
        """This agreement's numbers for keyed hashes; unknown ones get new numbers in
        ``fresh`` (stored with the release)."""
        pos = np.searchsorted(self.hashes, entities)
        pos_clipped = np.minimum(pos, max(len(self.hashes) - 1, 0))
        known = (pos < len(self.hashes)) & (self.hashes[pos_clipped] == entities) \
            if len(self.hashes) else np.zeros(len(entities), dtype=bool)
        out = np.empty(len(entities), dtype=np.int64)
        out[known] = self.numbers[pos_clipped[known]]
        for i in np.flatnonzero(~known):
            entity = int(entities[i])
            if entity not in fresh:
                fresh[entity] = self.next_number + len(fresh)
            out[i] = fresh[entity]
        return out

    def prepare(self, entity_set: EntitySet, fresh: dict[int, int]) -> Prepared:
        idx = self.number(entity_set.entities, fresh)
        order = np.argsort(idx)
        idx, rows = idx[order], entity_set.rows[order]
        digest = hashlib.blake2b(entity_set.measure.encode() + b"\0" + idx.tobytes()
                                 + rows.tobytes(), digest_size=16).hexdigest()
        return Prepared(entity_set, idx, rows, signature(idx, rows), digest)


@dataclass(frozen=True)
class Conflict:
    new: EntitySet
    differing: int
    earlier_job: str
    earlier_label: str


def describe(measure: str) -> str:
    if measure == "*":
        return "row counts"
    if measure.startswith("distinct "):
        return f"distinct counts of {measure.removeprefix('distinct ')}"
    if measure.startswith("order "):
        return f"order statistics of {measure.removeprefix('order ')}"
    return f"aggregates of {measure}"


class Auditor:
    """Checks and records an agreement's releases; one per gateway process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._indexes: dict[str, AgreementIndex] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, agreement_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(agreement_id, threading.Lock())

    def check_and_record(self, agreement_id: str, job_id: str, sets: list[EntitySet], *,
                         k: int, noun: str) -> tuple[int, int]:
        """Refuse (``DifferencingRisk``) or store the new distinct sets.

        Returns (sets stored now, sets of earlier releases checked against).
        """
        if not sets:
            return 0, 0
        with self._lock(agreement_id), self.store.session() as session:
            ledger.lock(session, agreement_id)  # one release of an agreement at a time
            index = self._indexes.setdefault(agreement_id, AgreementIndex())
            index.refresh(session, agreement_id)
            earlier = sum(m.count for m in index.measures.values())
            fresh: dict[int, int] = {}
            new: dict[str, Prepared] = {}
            # This result's own sets, indexed like the stored ones: comparing each with
            # every other was quadratic (7,000 groups took 78 s, past the timeout).
            local: dict[str, _Measure] = {}
            for entity_set in sets:
                prepared = index.prepare(entity_set, fresh)
                if prepared.fingerprint in index.fingerprints or prepared.fingerprint in new:
                    continue  # the same set released before: subtracting gives nothing
                conflict = self._conflict(session, index, prepared, list(new.values()), local,
                                          k)
                if conflict is not None:
                    raise DifferencingRisk(self._message(conflict, k, noun))
                local.setdefault(prepared.source.measure, _Measure()).add(
                    len(new), prepared.source.size, prepared.sig)
                new[prepared.fingerprint] = prepared
            self._store(session, agreement_id, job_id, fresh, list(new.values()))
        return len(new), earlier

    @staticmethod
    def _conflict(session: Session, index: AgreementIndex, new: Prepared,
                  same_query: list[Prepared], local: dict[str, _Measure], k: int
                  ) -> Conflict | None:
        measure = index.measures.get(new.source.measure)
        for set_id in (measure.candidates(new.source.size, new.sig, k) if measure else []):
            row = session.get(ReleasedSet, int(set_id))
            assert row is not None
            idx, rows = decode(row.members)
            differing = entities_differing(idx, rows, new.idx, new.rows)
            if 0 < differing < k:
                return Conflict(new.source, differing, f"released by job {row.job_id}",
                                row.label)
        mine = local.get(new.source.measure)
        for position in (mine.candidates(new.source.size, new.sig, k) if mine else []):
            other = same_query[int(position)]
            differing = entities_differing(other.idx, other.rows, new.idx, new.rows)
            if 0 < differing < k:
                return Conflict(new.source, differing, "in this same result",
                                other.source.label)
        return None

    @staticmethod
    def _message(conflict: Conflict, k: int, noun: str) -> str:
        # How many entities differ is not said: that number is itself about fewer than k.
        return (
            f"differencing risk (query auditing): {describe(conflict.new.measure)} over "
            f"{conflict.new.label} of this result and over {conflict.earlier_label} "
            f"({conflict.earlier_job}) would differ only in the rows of fewer than k={k} "
            f"{noun}: subtracting one answer from the other would reveal them. Nothing was "
            "released. To get an answer, keep the filters of the earlier query, change them "
            f"so that at least {k} {noun} differ, or group more coarsely.")

    @staticmethod
    def _store(session: Session, agreement_id: str, job_id: str, fresh: dict[int, int],
               new: list[Prepared]) -> None:
        # Core bulk inserts: the first release of an agreement numbers every entity it
        # saw (thousands of rows), one ORM object each would cost more than the check.
        signed = np.array(list(fresh), dtype=np.uint64).view(np.int64).tolist()
        if signed:
            session.execute(insert(AuditEntity), [
                {"agreement_id": agreement_id, "idx": number, "entity": entity}
                for entity, number in zip(signed, fresh.values(), strict=True)])
        if new:
            now = utcnow()
            session.execute(insert(ReleasedSet), [{
                "agreement_id": agreement_id, "fingerprint": p.fingerprint,
                "measure": p.source.measure, "size": p.source.size,
                "signature": p.sig.tobytes(), "members": encode(p.idx, p.rows),
                "job_id": job_id, "label": p.source.label, "created_at": now} for p in new])
