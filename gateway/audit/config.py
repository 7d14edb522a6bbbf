"""Audit settings (``DSB_AUDIT_*``) and the one place that wires an ``AuditLog``."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.audit.log import AuditLog, CheckpointPolicy
from gateway.errors import KeyMaterialError
from gateway.policy.signing import load_private_key, load_public_key
from gateway.settings import Settings
from gateway.store import Store


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSB_AUDIT_", extra="ignore")

    checkpoint_every_events: int = Field(
        default=1000, ge=1,
        description="Seal the log after at most this many unsealed events; also the longest "
                    "unsealed tail `dsb audit verify` accepts.")
    checkpoint_every_s: float = Field(
        default=60.0, gt=0,
        description="Seal the log when the last checkpoint is older than this many seconds "
                    "(checked on append and by `AuditLog.checkpoint_if_due`).")

    def policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(every_events=self.checkpoint_every_events,
                                every_s=self.checkpoint_every_s)


def open_audit_log(settings: Settings, store: Store,
                   audit: AuditSettings | None = None) -> AuditLog:
    """The gateway's log: checkpoints to ``settings.checkpoints_path``, signed with the
    platform key (``dsb keys platform``)."""
    audit = audit or AuditSettings()
    return AuditLog(store, settings.checkpoints_path,
                    load_private_key(settings.platform_key_path), audit.policy())


def platform_public_key(settings: Settings) -> Ed25519PublicKey:
    """The key checkpoints verify against: the .pub file, else derived from the private key
    (a deployment that holds only the private key as a secret needs no second file)."""
    public = settings.platform_public_key_path
    if public.is_file():
        return load_public_key(public)
    if settings.platform_key_path.is_file():
        return load_private_key(settings.platform_key_path).public_key()
    raise KeyMaterialError(f"no platform public key at {public} and no private key at "
                           f"{settings.platform_key_path}; pass --public-key, or run "
                           "`dsb keys platform` on a new installation")
