"""Signed agreements: Ed25519 over the canonical form; any change after signing is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.errors import SignatureError
from gateway.policy.loading import load_model
from gateway.policy.models import Agreement
from gateway.policy.signing import generate_keypair, load_private_key, sign, trusted_keys, verify
from gateway.settings import Settings

runner = CliRunner()
DEMO = Path("policies/agreements/agr-lin-residents-sandbox.yaml")


def _agreement() -> Agreement:
    agreement, _ = load_model(DEMO, Agreement)
    return agreement.model_copy(update={"signature": None})


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keypair(tmp_path / "k.key", tmp_path / "trusted" / "k.pub")
    return tmp_path / "k.key", tmp_path / "trusted"


def test_demo_agreements_verify_with_the_committed_demo_key() -> None:
    agreement, _ = load_model(DEMO, Agreement)
    verify(agreement, trusted_keys(Path("policies/keys")))


def test_signed_agreement_verifies_and_any_change_is_refused(keys: tuple[Path, Path]) -> None:
    private, trusted = keys
    signed = sign(_agreement(), load_private_key(private), "k")
    verify(signed, trusted_keys(trusted))
    for change in ({"purpose": "something else"}, {"valid_until": signed.valid_until.replace(
            year=2099)}, {"scenario": "residents-aggregate"}, {"security_measures": []}):
        tampered = signed.model_copy(update=change)
        with pytest.raises(SignatureError, match="does not match its content"):
            verify(tampered, trusted_keys(trusted))


def test_unsigned_and_untrusted_are_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    _, trusted = keys
    with pytest.raises(SignatureError, match="is not signed"):
        verify(_agreement(), trusted_keys(trusted))
    generate_keypair(tmp_path / "other.key", tmp_path / "elsewhere" / "other.pub")
    rogue = sign(_agreement(), load_private_key(tmp_path / "other.key"), "other")
    with pytest.raises(SignatureError, match="not trusted"):
        verify(rogue, trusted_keys(trusted))
    # A rogue key that claims a trusted key id fails on the signature itself.
    impostor = sign(_agreement(), load_private_key(tmp_path / "other.key"), "k")
    with pytest.raises(SignatureError, match="does not match"):
        verify(impostor, trusted_keys(trusted))


def test_reformatting_the_yaml_keeps_the_signature(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    reordered = dict(reversed(list(data.items())))
    path = tmp_path / DEMO.name
    path.write_text(yaml.safe_dump(reordered, default_flow_style=True))
    agreement, _ = load_model(path, Agreement)
    verify(agreement, trusted_keys(Path("policies/keys")))


def test_cli_keys_init_sign_verify_and_tamper(home: Settings, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSB_TRUSTED_KEYS_DIR", str(tmp_path / "trusted"))
    result = runner.invoke(app, ["keys", "init", "--provider", "acme-provider"])
    assert result.exit_code == 0, result.output
    assert (home.private_keys / "acme-provider.key").stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["keys", "init", "--provider", "acme-provider"])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output

    file = tmp_path / "a.yaml"
    file.write_text(DEMO.read_text().split("signature:")[0])
    unsigned = runner.invoke(app, ["agreement", "verify", str(file)])
    assert unsigned.exit_code == 1 and "error[bad_signature]" in unsigned.output

    signed = runner.invoke(app, ["agreement", "sign", str(file), "--key-id", "acme-provider"])
    assert signed.exit_code == 0, signed.output
    assert runner.invoke(app, ["agreement", "verify", str(file)]).exit_code == 0

    file.write_text(file.read_text().replace("valid_until: '2027-12-31'",
                                             "valid_until: '2037-12-31'"))
    tampered = runner.invoke(app, ["agreement", "verify", str(file)])
    assert tampered.exit_code == 1
    assert "changed after signing" in tampered.output
