"""Signed checkpoints and the append-only file that keeps them.

A checkpoint seals the events ``seq_from..seq_to`` (the segment since the previous
checkpoint): it names the chain hash of ``seq_to`` (which commits to the whole history)
and the Merkle root of the segment's event hashes (which gives short inclusion proofs
for receipts). Checkpoints chain too (``prev_checkpoint``), so a line removed from the
middle of the file is noticed. The file sits outside the database: truncating the
database's tail leaves signed checkpoints that name events no longer there.

One line per checkpoint: ``{"signature": <base64 Ed25519>, "statement": {...}}``; the
signature covers the canonical JSON of the statement.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.audit.events import canonical_json
from gateway.errors import AuditIntegrityError

CHECKPOINT_FORMAT = "dsb-audit-checkpoint/1"
_HEX64 = r"^[0-9a-f]{64}$"


class CheckpointStatement(BaseModel):
    """What the platform key signs."""

    model_config = ConfigDict(frozen=True)

    format: str = CHECKPOINT_FORMAT
    index: int = Field(ge=0)
    seq_from: int = Field(ge=1)
    seq_to: int = Field(ge=1)
    head_hash: str = Field(pattern=_HEX64)
    merkle_root: str = Field(pattern=_HEX64)
    prev_checkpoint: str = Field(pattern=_HEX64)
    ts: str
    key_id: str

    def canonical(self) -> bytes:
        return canonical_json(self.model_dump(mode="json")).encode()

    def digest(self) -> str:
        """What the next checkpoint names as ``prev_checkpoint``."""
        return hashlib.sha256(self.canonical()).hexdigest()


class Checkpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    statement: CheckpointStatement
    signature: str

    def line(self) -> bytes:
        return (canonical_json(self.model_dump(mode="json")) + "\n").encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint naming the key in each statement (SHA-256 of the raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(statement: CheckpointStatement, key: Ed25519PrivateKey) -> Checkpoint:
    return Checkpoint(statement=statement,
                      signature=base64.b64encode(key.sign(statement.canonical())).decode())


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    if checkpoint.statement.key_id != key_id(public_key):
        return False
    try:
        public_key.verify(base64.b64decode(checkpoint.signature, validate=True),
                          checkpoint.statement.canonical())
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Line:
    """One line of the file: parsed, or the reason it could not be."""

    number: int
    checkpoint: Checkpoint | None
    error: str = ""


class CheckpointFile:
    """Appends with one ``write`` + ``fsync``; reads the last line cheaply for appenders.

    Callers serialise appends (the audit writer lock), so the file is never written by
    two appenders at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[int, int, Checkpoint | None] | None = None  # (inode, size, last)
        # Parsed so far, for receipts: (inode, bytes consumed, checkpoints).
        self._parsed: tuple[int, int, list[Checkpoint]] = (-1, 0, [])

    def append(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = checkpoint.line()
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._cached = (st.st_ino, st.st_size, checkpoint)

    def last(self) -> Checkpoint | None:
        """The newest checkpoint; ``AuditIntegrityError`` if the last line is not one."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._cached = None
            return None
        if self._cached is not None and self._cached[:2] == (st.st_ino, st.st_size):
            return self._cached[2]
        last = self._read_last_line(st.st_size)
        self._cached = (st.st_ino, st.st_size, last)
        return last

    def _read_last_line(self, size: int) -> Checkpoint | None:
        if size == 0:
            return None
        with self.path.open("rb") as f:
            chunk = 4096
            while True:
                start = max(0, size - chunk)
                f.seek(start)
                data = f.read(size - start)
                body = data[:-1] if data.endswith(b"\n") else data
                cut = body.rfind(b"\n")
                if cut >= 0 or start == 0:
                    text = body[cut + 1:]
                    break
                chunk *= 4
        try:
            return Checkpoint.model_validate_json(text)
        except ValidationError:
            raise AuditIntegrityError(
                f"the last line of {self.path} is not a checkpoint; run `dsb audit verify`"
            ) from None

    def checkpoints(self) -> list[Checkpoint]:
        """Every well-formed checkpoint, reading only lines added since the last call.

        Lines that do not parse are skipped here; ``read_all`` (used by verify) reports them.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._parsed = (-1, 0, [])
            return []
        inode, offset, known = self._parsed
        if inode != st.st_ino or st.st_size < offset:
            inode, offset, known = st.st_ino, 0, []
        if st.st_size > offset:
            with self.path.open("rb") as f:
                f.seek(offset)
                data = f.read(st.st_size - offset)
            complete = data[:data.rfind(b"\n") + 1]  # a line being written waits
            known = list(known)
            for raw in complete.splitlines():
                try:
                    known.append(Checkpoint.model_validate(json.loads(raw)))
                except (ValueError, ValidationError):
                    continue
            offset += len(complete)
        self._parsed = (inode, offset, known)
        return known

    def read_all(self) -> list[Line]:
        if not self.path.exists():
            return []
        lines: list[Line] = []
        with self.path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    lines.append(Line(number, Checkpoint.model_validate(json.loads(raw))))
                except (ValueError, ValidationError) as exc:
                    lines.append(Line(number, None, f"not a checkpoint: {exc.__class__.__name__}"))
        return lines
