"""Ed25519 signatures over the canonical form of an agreement."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import KeyMaterialError, SignatureError
from gateway.policy.models import Agreement, Signature


def canonical_bytes(agreement: Agreement) -> bytes:
    """The signed form: validated fields (not YAML text) as sorted, compact JSON.

    Signing the model rather than the file means reformatting the YAML keeps the
    signature valid while any change of meaning breaks it.
    """
    body: dict[str, Any] = agreement.model_dump(mode="json", by_alias=True, exclude={"signature"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new key pair; refuses to overwrite an existing private key."""
    if private_path.exists():
        raise KeyMaterialError(f"{private_path} exists; refusing to overwrite a private key")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyMaterialError(f"no private key at {path}; run `dsb keys init` first") from None
    except ValueError as exc:
        raise KeyMaterialError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise KeyMaterialError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyMaterialError(f"{path} is not an Ed25519 public key")
    return key


def trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Public keys by id (file stem) from ``<directory>/<id>.pub``."""
    if not directory.is_dir():
        return {}
    return {p.stem: load_public_key(p) for p in sorted(directory.glob("*.pub"))}


def sign(agreement: Agreement, key: Ed25519PrivateKey, key_id: str) -> Agreement:
    value = base64.b64encode(key.sign(canonical_bytes(agreement))).decode()
    return agreement.model_copy(update={"signature": Signature(key_id=key_id, value=value)})


def verify(agreement: Agreement, keys: dict[str, Ed25519PublicKey]) -> None:
    """Raise ``SignatureError`` unless a trusted key signed exactly this agreement."""
    sig = agreement.signature
    if sig is None:
        raise SignatureError(
            f"agreement {agreement.id!r} is not signed; sign it with `dsb agreement sign`"
        )
    key = keys.get(sig.key_id)
    if key is None:
        raise SignatureError(
            f"agreement {agreement.id!r} is signed by key {sig.key_id!r}, which is not trusted"
        )
    try:
        key.verify(base64.b64decode(sig.value, validate=True), canonical_bytes(agreement))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"agreement {agreement.id!r}: signature does not match its content "
            "(changed after signing, or signed by another key)"
        ) from None
