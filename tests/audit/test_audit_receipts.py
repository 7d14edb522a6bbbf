"""A user verifies their receipt with the platform public key alone; forgeries fail."""

from __future__ import annotations

import pytest
from audit_support import Installation, query_event
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gateway.audit import Receipt, verify_receipt
from gateway.audit.checkpoints import CheckpointStatement, key_id, sign
from gateway.audit.cli import app
from gateway.audit.receipts import InclusionProof
from gateway.errors import AuditIntegrityError, ReceiptInvalid


@pytest.fixture
def alice_receipt(install: Installation) -> Receipt:
    install.fill(3, user="bob")
    seq = install.log.append(query_event(99, user="alice")).seq
    install.fill(2, user="bob")
    unsealed = install.log.receipt(seq)
    assert not unsealed.sealed
    with pytest.raises(ReceiptInvalid, match="not sealed"):
        verify_receipt(unsealed, install.public_key)
    install.log.checkpoint()
    return install.log.receipt(seq)


def test_receipt_verifies_offline_without_other_users_events(
        install: Installation, alice_receipt: Receipt) -> None:
    check = verify_receipt(Receipt.model_validate_json(alice_receipt.model_dump_json()),
                           install.public_key)
    assert check.seq == alice_receipt.seq == 4
    assert "bob" not in alice_receipt.model_dump_json()
    assert install.log.check_receipt(alice_receipt) == check


def test_receipt_of_every_position_verifies(install: Installation) -> None:
    install.fill(23)
    install.log.checkpoint()
    for seq in range(1, 24):
        verify_receipt(install.log.receipt(seq), install.public_key)
    install.fill(4)  # checkpoints written after the reads above are found too
    assert not install.log.receipt(27).sealed
    install.log.checkpoint()
    check = verify_receipt(install.log.receipt(27), install.public_key)
    assert (check.checkpoint_index, check.checkpoint_seq_to) == (3, 27)


def _statement_with(r: Receipt, **changes: object) -> CheckpointStatement:
    assert r.checkpoint is not None
    return r.checkpoint.statement.model_copy(update=changes)


FORGERIES = {
    "other SQL": lambda r, k: r.model_copy(update={"event": r.event.model_copy(
        update={"details": {**r.event.details, "sql": "SELECT 1"}})}),
    "other user": lambda r, k: r.model_copy(update={"event": r.event.model_copy(
        update={"actor": r.event.actor.model_copy(update={"user": "carol"})})}),
    "other position": lambda r, k: r.model_copy(update={"seq": r.seq + 1}),
    "other hash": lambda r, k: r.model_copy(update={"event_hash": "ab" * 32}),
    "shifted leaf": lambda r, k: r.model_copy(update={"proof": InclusionProof(
        leaf_index=r.proof.leaf_index + 1, tree_size=r.proof.tree_size, path=r.proof.path)}),
    "bent path": lambda r, k: r.model_copy(update={"proof": r.proof.model_copy(
        update={"path": ("00" * 32, *r.proof.path[1:])})}),
    "resized tree": lambda r, k: r.model_copy(update={"proof": r.proof.model_copy(
        update={"tree_size": r.proof.tree_size + 1})}),
    "re-signed by another key": lambda r, k: r.model_copy(update={
        "checkpoint": sign(_statement_with(r), k)}),
    "self-consistent with another key": lambda r, k: r.model_copy(update={
        "checkpoint": sign(_statement_with(r, key_id=key_id(k.public_key())), k)}),
    "altered statement": lambda r, k: r.model_copy(update={"checkpoint": r.checkpoint
        .model_copy(update={"statement": _statement_with(r, seq_to=r.checkpoint.statement
                                                         .seq_to + 1)})}),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_receipt_is_refused(install: Installation, alice_receipt: Receipt,
                                   name: str) -> None:
    forged = FORGERIES[name](alice_receipt, Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptInvalid):
        verify_receipt(forged, install.public_key)
    with pytest.raises(ReceiptInvalid):
        install.log.check_receipt(forged)


def test_receipt_outlives_a_rewritten_log(install: Installation,
                                          alice_receipt: Receipt) -> None:
    """A valid receipt is a witness: a log that dropped its event and checkpoint is caught."""
    con = install.sql()
    con.execute("DELETE FROM audit_events")
    con.execute("UPDATE audit_head SET seq = 0, hash = ?", ("0" * 64,))
    install.checkpoints.unlink()
    assert install.verify().ok  # nothing left to contradict itself...
    with pytest.raises(AuditIntegrityError):  # ...but the user's receipt contradicts it
        install.log.check_receipt(alice_receipt)


def test_cli_receipt_round_trip(install: Installation, alice_receipt: Receipt,
                                tmp_path: object) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["receipt", str(alice_receipt.seq)])
    assert shown.exit_code == 0, shown.output
    path = install.settings.home / "receipt.json"
    path.write_text(shown.stdout)
    ok = runner.invoke(app, ["verify-receipt", str(path)])
    assert ok.exit_code == 0 and "OK: event 4" in ok.output, ok.output
    forged = FORGERIES["other SQL"](alice_receipt, None)
    path.write_text(forged.model_dump_json())
    bad = runner.invoke(app, ["verify-receipt", str(path)])
    assert bad.exit_code == 1 and "receipt_invalid" in bad.output, bad.output
