"""Envelope encryption of dataset keys under the master key, and derived secrets.

Each dataset version has its own random data key (DuckDB's ENCRYPTION_KEY for the
file); the metadata store keeps it only wrapped with AES-256-GCM under the master key,
bound to the dataset and version as associated data so a wrapped key cannot be moved
to another version.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import KeyMaterialError
from gateway.settings import Settings

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12


def create_master_key(path: Path) -> None:
    """Write a new random master key; refuses to overwrite one (that would orphan data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyMaterialError(f"{path} exists; refusing to overwrite the master key") from None
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode() + "\n")


def load_master_key(path: Path) -> bytes:
    """The master key in ``path``; re-read only when the file changes (hot path)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    if info is not None:
        return _load_master_key(path, info.st_mtime_ns, info.st_size, info.st_ino)
    return _read_master_key(path)


@functools.lru_cache(maxsize=8)
def _load_master_key(path: Path, _mtime: int, _size: int, _inode: int) -> bytes:
    return _read_master_key(path)


def _read_master_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise KeyMaterialError(
            f"master key file {path} does not exist (DSB_MASTER_KEY_FILE); "
            "create one with `dsb keys master`",
            code="master_key_missing",
        ) from None
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise KeyMaterialError(
            f"master key file {path} does not hold a base64-encoded 32-byte key",
            code="master_key_invalid",
        )
    return key


def key_id(master: bytes) -> str:
    """Public fingerprint of a master key, stored beside each wrapped key."""
    return hashlib.sha256(b"dsb-master-key-id\0" + master).hexdigest()[:16]


def new_data_key() -> str:
    """A DuckDB ENCRYPTION_KEY: 256 random bits, URL-safe base64 text."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _aad(dataset_id: str, version: int) -> bytes:
    return f"dsb-data-key\0{dataset_id}\0{version}".encode()


def wrap(master: bytes, data_key: str, dataset_id: str, version: int) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(master).encrypt(nonce, data_key.encode(), _aad(dataset_id, version))
    return base64.b64encode(nonce + sealed).decode()


def unwrap(master: bytes, wrapped: str, dataset_id: str, version: int) -> str:
    raw = base64.b64decode(wrapped)
    try:
        plain = AESGCM(master).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(dataset_id, version)
        )
    except InvalidTag:
        raise KeyMaterialError(
            f"cannot unwrap the key of dataset {dataset_id!r} version {version}: "
            "wrong master key (DSB_MASTER_KEY_FILE) or a tampered key record",
            code="master_key_mismatch",
        ) from None
    return plain.decode()


def unwrap_cached(master: bytes, wrapped: str, dataset_id: str, version: int) -> str:
    return _unwrap_cached(master, wrapped, dataset_id, version)


@functools.lru_cache(maxsize=256)
def _unwrap_cached(master: bytes, wrapped: str, dataset_id: str, version: int) -> str:
    # Only successful unwraps are cached (lru_cache does not keep exceptions).
    return unwrap(master, wrapped, dataset_id, version)


def derive_salt(settings: Settings, scope: str) -> str:
    """Secret salt for hash masks, one per scope (an agreement id).

    Derived from the master key so it survives restarts and never needs storing; the
    same scope always masks a value the same way (joins work), other scopes differ.
    """
    master = load_master_key(settings.master_key_path)
    return hmac.new(master, b"dsb-mask-salt\0" + scope.encode(), hashlib.sha256).hexdigest()
