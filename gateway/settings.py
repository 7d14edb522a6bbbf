"""Service settings, read from ``DSB_*`` environment variables.

Every path defaults to a place under ``DSB_HOME`` so that one variable moves a whole
installation (tests point it at a temporary directory).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSB_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Root of all state of this installation.")
    policy_dir: Path = Field(default=Path("policies"), description="Versioned policy YAML files.")
    trusted_keys_dir: Path | None = Field(
        default=None,
        description="Public keys whose signatures on agreements are trusted "
        "(default: <policy_dir>/keys). In production keep it outside the policy tree.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the metadata store (default: SQLite in home)."
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the master key that wraps dataset keys."
    )
    data_dir: Path | None = Field(default=None, description="Encrypted dataset files.")
    keys_dir: Path | None = Field(default=None, description="Private keys made by `dsb keys`.")
    checkpoint_file: Path | None = Field(
        default=None,
        description="Append-only file of signed audit checkpoints (default: <home>/audit/"
        "checkpoints.jsonl); keep it on other storage than the database.",
    )

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.trusted_keys_dir is None:
            self.trusted_keys_dir = self.policy_dir / "keys"
        if self.database_url is None:
            self.database_url = f"sqlite:///{(self.home / 'dsb.sqlite').resolve()}"
        if self.master_key_file is None:
            self.master_key_file = self.home / "keys" / "master.key"
        if self.data_dir is None:
            self.data_dir = self.home / "data"
        if self.keys_dir is None:
            self.keys_dir = self.home / "keys"
        if self.checkpoint_file is None:
            self.checkpoint_file = self.home / "audit" / "checkpoints.jsonl"
        return self

    # Typed accessors: after validation these are never None.
    @property
    def trusted_keys(self) -> Path:
        assert self.trusted_keys_dir is not None
        return self.trusted_keys_dir

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def master_key_path(self) -> Path:
        assert self.master_key_file is not None
        return self.master_key_file

    @property
    def datasets_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir

    @property
    def private_keys(self) -> Path:
        assert self.keys_dir is not None
        return self.keys_dir

    @property
    def platform_key_path(self) -> Path:
        """Ed25519 key that signs audit checkpoints (public half beside it as .pub)."""
        return self.private_keys / "platform.key"

    @property
    def checkpoints_path(self) -> Path:
        assert self.checkpoint_file is not None
        return self.checkpoint_file


def get_settings() -> Settings:
    return Settings()
