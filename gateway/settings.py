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
    database_password_file: Path | None = Field(
        default=None,
        description="File holding the database password, put into database_url at start-up "
        "(a compose or swarm secret; keeps the password out of the environment).",
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the master key that wraps dataset keys."
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key that signs audit checkpoints (default: "
        "<keys_dir>/platform.key). Its public half is read from signing_public_key_file, "
        "else derived from the private key.",
    )
    signing_public_key_file: Path | None = Field(
        default=None, description="Public half of the signing key (default: the signing key's "
        "path with the suffix .pub)."
    )
    data_dir: Path | None = Field(default=None, description="Encrypted dataset files.")
    keys_dir: Path | None = Field(default=None, description="Private keys made by `dsb keys`.")
    checkpoint_file: Path | None = Field(
        default=None,
        description="Append-only file of signed audit checkpoints (default: <home>/audit/"
        "checkpoints.jsonl); keep it on other storage than the database.",
    )
    max_nesting_depth: int = Field(
        default=64, ge=8, le=100,
        description="Levels of parentheses, brackets and CASE a submitted statement may nest "
        "(default: gateway.rewrite.context.MAX_NESTING_DEPTH); deeper ones are refused with "
        "too_complex. Above 100 the parser itself runs out of stack.",
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
        if self.signing_key_file is None:
            self.signing_key_file = self.keys_dir / "platform.key"
        if self.signing_public_key_file is None:
            self.signing_public_key_file = self.signing_key_file.with_suffix(".pub")
        if self.database_password_file is not None:
            self.database_url = _with_password(self.database_url, self.database_password_file)
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
        """Ed25519 key that signs audit checkpoints (DSB_SIGNING_KEY_FILE)."""
        assert self.signing_key_file is not None
        return self.signing_key_file

    @property
    def platform_public_key_path(self) -> Path:
        """Public half of the checkpoint signing key (may be absent: derive it then)."""
        assert self.signing_public_key_file is not None
        return self.signing_public_key_file

    @property
    def checkpoints_path(self) -> Path:
        assert self.checkpoint_file is not None
        return self.checkpoint_file


def _with_password(url: str, password_file: Path) -> str:
    from sqlalchemy.engine import make_url

    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the database password file {password_file}: "
                         f"{exc.strerror} (DSB_DATABASE_PASSWORD_FILE)") from None
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def get_settings() -> Settings:
    return Settings()
