"""Secrets as files: `dsb keys deployment`, and the settings that read them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.audit.config import platform_public_key
from gateway.cli import app
from gateway.settings import Settings


def test_keys_deployment_makes_each_secret_once(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    first = CliRunner().invoke(app, ["keys", "deployment", str(target)])
    assert first.exit_code == 0, first.output
    names = {"master.key", "signing.key", "signing.pub", "db-password"}
    assert {p.name for p in target.iterdir()} == names
    for name in names - {"signing.pub"}:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    again = CliRunner().invoke(app, ["keys", "deployment", str(target)])
    assert again.exit_code == 0 and "all present" in again.output
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_settings_read_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CliRunner().invoke(app, ["keys", "deployment", str(tmp_path)])
    monkeypatch.setenv("DSB_DATABASE_URL", "postgresql+psycopg://dsb@db:5432/dsb")
    monkeypatch.setenv("DSB_DATABASE_PASSWORD_FILE", str(tmp_path / "db-password"))
    monkeypatch.setenv("DSB_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    settings = Settings(home=tmp_path / "home")
    password = (tmp_path / "db-password").read_text().strip()
    assert settings.db_url == f"postgresql+psycopg://dsb:{password}@db:5432/dsb"
    assert settings.platform_key_path == tmp_path / "signing.key"
    assert settings.platform_public_key_path == tmp_path / "signing.pub"
    # Without the .pub file (a deployment holding only the private key as a secret) the
    # public key is derived: the same key either way.
    from_file = platform_public_key(settings)
    (tmp_path / "signing.pub").unlink()
    assert platform_public_key(settings) == from_file


def test_a_missing_password_file_names_the_setting(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSB_DATABASE_URL", "postgresql+psycopg://dsb@db:5432/dsb")
    monkeypatch.setenv("DSB_DATABASE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="DSB_DATABASE_PASSWORD_FILE"):
        Settings(home=tmp_path)
