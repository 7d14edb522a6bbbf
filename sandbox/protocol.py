"""Wire protocol between the gateway and the agent inside a sandbox.

The only channel into a sandbox is one Unix stream socket. The gateway listens on it;
the agent connects once at start-up, and the gateway removes the socket file as soon as
it has accepted, so nothing else can connect afterwards. Frames are::

    kind (1 byte) | length (4 bytes, big-endian) | payload

Gateway → agent
    HELLO   first frame, once: JSON with the per-sandbox secret, the datasets (path in
            the sandbox and encryption key) and the engine limits. Secrets travel only
            here, never in the environment, arguments, labels or files.
    EXEC    MAC (32) | sequence (8) | JSON statement
    CANCEL  MAC (32) | sequence (8) | JSON {"id": ...}
Agent → gateway
    READY, PROGRESS, DONE, ERROR   JSON
    SCHEMA  an Arrow IPC schema message;  BATCH  an Arrow IPC record batch message

EXEC and CANCEL carry HMAC-SHA256(secret, kind | sequence | body) and a sequence number
that must grow by exactly one per frame, so a frame that was not made by the holder of
the secret, or is replayed or reordered, is refused.

Standard library only: this module is copied into the SQL image next to the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
from enum import Enum
from typing import Any

HEADER = struct.Struct("!cI")
MAC_SIZE = 32
SEQ = struct.Struct("!Q")
# Control frames (gateway → agent) are small: the SQL text is the biggest part.
MAX_CONTROL_BYTES = 4 << 20
# Agent → gateway: a single Arrow batch; the agent slices bigger batches to fit.
MAX_DATA_BYTES = 64 << 20
SECRET_BYTES = 32


class Kind(bytes, Enum):
    HELLO = b"H"
    EXEC = b"E"
    CANCEL = b"C"
    READY = b"R"
    PROGRESS = b"P"
    SCHEMA = b"S"
    BATCH = b"B"
    DONE = b"D"
    ERROR = b"X"


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame, or went away mid-frame."""


class PeerClosed(ProtocolError):
    """The peer closed the connection between frames."""


def send_frame(sock: socket.socket, kind: Kind, payload: bytes | memoryview) -> None:
    header = HEADER.pack(kind.value, len(payload))
    if len(payload) < 64 << 10:
        sock.sendall(header + payload)
    else:
        # Large Arrow batches: avoid copying the payload just to prepend 5 bytes.
        sock.sendall(header)
        sock.sendall(payload)


def send_json(sock: socket.socket, kind: Kind, body: dict[str, Any]) -> None:
    send_frame(sock, kind, json.dumps(body, separators=(",", ":")).encode())


def _recv_exactly(sock: socket.socket, size: int, *, at_start: bool) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if at_start and got == 0:
                raise PeerClosed("connection closed")
            raise ProtocolError("connection closed in the middle of a frame")
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket, max_bytes: int) -> tuple[Kind, bytes]:
    raw_kind, length = HEADER.unpack(_recv_exactly(sock, HEADER.size, at_start=True))
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {raw_kind!r}") from None
    if length > max_bytes:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {max_bytes}")
    return kind, _recv_exactly(sock, length, at_start=False) if length else b""


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    return body


def _mac(secret: bytes, kind: Kind, seq: int, body: bytes) -> bytes:
    return hmac.new(secret, kind.value + SEQ.pack(seq) + body, hashlib.sha256).digest()


def seal(secret: bytes, kind: Kind, seq: int, body: dict[str, Any]) -> bytes:
    """Payload of an authenticated gateway → agent frame."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    return _mac(secret, kind, seq, raw) + SEQ.pack(seq) + raw


def open_sealed(secret: bytes, kind: Kind, expected_seq: int, payload: bytes) -> dict[str, Any]:
    """Verify an authenticated frame; raises ProtocolError unless MAC and sequence match."""
    if len(payload) < MAC_SIZE + SEQ.size:
        raise ProtocolError("authenticated frame too short")
    mac, (seq,), raw = (
        payload[:MAC_SIZE],
        SEQ.unpack(payload[MAC_SIZE : MAC_SIZE + SEQ.size]),
        payload[MAC_SIZE + SEQ.size :],
    )
    # Compare the MAC first and in constant time; only then look at the sequence.
    if not hmac.compare_digest(mac, _mac(secret, kind, seq, raw)):
        raise ProtocolError("frame not authenticated by the gateway")
    if seq != expected_seq:
        raise ProtocolError(f"frame sequence {seq}, expected {expected_seq} (replayed?)")
    return decode_json(raw)
