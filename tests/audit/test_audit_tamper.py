"""Every kind of tampering, on a real SQLite file, is found and named precisely.

The installation holds 45 events sealed by checkpoints 0..3 (events 1..40; a checkpoint
every 10 events) and an unsealed tail 41..45. Two attackers: a naive one edits rows; a
rechaining one also recomputes every later hash (all anyone can do without the platform
key), which only the signed checkpoints can catch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from audit_support import Installation, Raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from gateway.audit import Kind
from gateway.audit.cli import app
from gateway.audit.events import hash_message, message_from_row

COLUMNS = ("seq, ts, action, actor_user, actor_role, actor_org, agreement_id, job_id, "
           "datasets, details, prev_hash, hash")


def rechain(con: Raw, start: int) -> None:
    """Recompute hashes from ``start`` on, as an attacker without the key would."""
    prev = con.execute("SELECT hash FROM audit_events WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                       (start,)).fetchone()
    prev_hash = prev[0] if prev else "0" * 64
    rows = con.execute(f"SELECT {COLUMNS} FROM audit_events WHERE seq >= ? ORDER BY seq",
                       (start,)).fetchall()
    for row in rows:
        seq, ts, action, user, role, org, agreement, job, datasets, details = row[:10]
        new = hash_message(message_from_row(seq, ts, action, user, role, org, agreement, job,
                                            datasets, details, prev_hash))
        con.execute("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?",
                    (prev_hash, new, row[0]))
        prev_hash = new
    last = con.execute("SELECT max(seq) FROM audit_events").fetchone()[0]
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", (last, prev_hash))


def shift_up(con: Raw, start: int) -> None:
    for (seq,) in con.execute("SELECT seq FROM audit_events WHERE seq >= ? ORDER BY seq DESC",
                              (start,)).fetchall():
        con.execute("UPDATE audit_events SET seq = seq + 1 WHERE seq = ?", (seq,))


def insert_forged(con: Raw, seq: int) -> None:
    """A well-formed event at ``seq`` linking to ``seq - 1``."""
    prev = con.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq - 1,)).fetchone()[0]
    ts, user = "2026-01-01T00:00:00.000000Z", "mallory"
    forged = hash_message(message_from_row(seq, ts, "query.executed", user, "researcher", "",
                                           "agr-1", None, "[]", "{}", prev))
    con.execute(f"INSERT INTO audit_events ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (seq, ts, "query.executed", user, "researcher", "", "agr-1", None, "[]", "{}",
                 prev, forged))


def change_field(i: Installation) -> None:
    i.sql().execute("UPDATE audit_events SET details = replace(details, 'SELECT', 'select') "
                    "WHERE seq = 17")


def change_field_rechained(i: Installation) -> None:
    con = i.sql()
    con.execute("UPDATE audit_events SET actor_user = 'bob' WHERE seq = 17")
    rechain(con, 17)


def delete_event(i: Installation) -> None:
    i.sql().execute("DELETE FROM audit_events WHERE seq = 23")


def delete_event_rechained(i: Installation) -> None:
    con = i.sql()
    con.execute("DELETE FROM audit_events WHERE seq = 23")
    for seq in range(24, 46):
        con.execute("UPDATE audit_events SET seq = ? WHERE seq = ?", (seq - 1, seq))
    rechain(con, 23)


def reorder(i: Installation) -> None:
    con = i.sql()
    con.execute("UPDATE audit_events SET seq = -12 WHERE seq = 12")
    con.execute("UPDATE audit_events SET seq = 12 WHERE seq = 13")
    con.execute("UPDATE audit_events SET seq = 13 WHERE seq = -12")


def reorder_rechained(i: Installation) -> None:
    reorder(i)
    rechain(i.sql(), 12)


def insert(i: Installation) -> None:
    con = i.sql()
    shift_up(con, 25)
    insert_forged(con, 25)


def insert_rechained(i: Installation) -> None:
    insert(i)
    rechain(i.sql(), 26)


def insert_at_tail(i: Installation) -> None:
    insert_forged(i.sql(), 46)


def truncate_tail(i: Installation) -> None:
    con = i.sql()
    con.execute("DELETE FROM audit_events WHERE seq > 35")
    row = con.execute("SELECT seq, hash FROM audit_events WHERE seq = 35").fetchone()
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", row)


def replace_signature(i: Installation) -> None:
    lines = i.checkpoints.read_text().splitlines()
    cp = json.loads(lines[1])
    statement = json.dumps(cp["statement"], sort_keys=True, separators=(",", ":")).encode()
    cp["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(statement)).decode()
    lines[1] = json.dumps(cp)
    i.checkpoints.write_text("\n".join(lines) + "\n")


def alter_checkpoint(i: Installation) -> None:
    lines = i.checkpoints.read_text().splitlines()
    cp = json.loads(lines[2])
    cp["statement"]["seq_to"] = 29  # claims less was sealed; signature no longer covers it
    lines[2] = json.dumps(cp)
    i.checkpoints.write_text("\n".join(lines) + "\n")


def remove_checkpoint(i: Installation) -> None:
    lines = i.checkpoints.read_text().splitlines()
    del lines[1]
    i.checkpoints.write_text("\n".join(lines) + "\n")


def remove_all_checkpoints(i: Installation) -> None:
    i.checkpoints.unlink()


@dataclass(frozen=True)
class Case:
    tamper: Callable[[Installation], None]
    kind: Kind
    seq: int | None = None
    checkpoint: int | None = None


CASES = {
    "change_field": Case(change_field, Kind.event_changed, seq=17),
    "change_field_rechained": Case(change_field_rechained, Kind.checkpoint_head, seq=20,
                                   checkpoint=1),
    "delete_event": Case(delete_event, Kind.events_missing, seq=23),
    "delete_event_rechained": Case(delete_event_rechained, Kind.checkpoint_head, seq=30,
                                   checkpoint=2),
    "reorder": Case(reorder, Kind.chain_broken, seq=12),
    "reorder_rechained": Case(reorder_rechained, Kind.checkpoint_head, seq=20, checkpoint=1),
    "insert": Case(insert, Kind.chain_broken, seq=25),
    "insert_rechained": Case(insert_rechained, Kind.checkpoint_head, seq=30, checkpoint=2),
    "insert_at_tail": Case(insert_at_tail, Kind.head_mismatch, seq=46),
    "truncate_tail": Case(truncate_tail, Kind.truncated, seq=36, checkpoint=3),
    "replace_signature": Case(replace_signature, Kind.checkpoint_signature, checkpoint=1),
    "alter_checkpoint": Case(alter_checkpoint, Kind.checkpoint_signature, checkpoint=2),
    "remove_checkpoint": Case(remove_checkpoint, Kind.checkpoint_chain, checkpoint=2),
    "remove_all_checkpoints": Case(remove_all_checkpoints, Kind.unsealed_tail, seq=1),
}


@pytest.fixture
def sealed(install: Installation) -> Installation:
    install.fill(45)
    report = install.verify()
    assert report.ok, report.problems
    assert (report.events, report.checkpoints, report.sealed_through) == (45, 4, 40)
    return install


@pytest.mark.parametrize("name", CASES)
def test_tampering_is_found_and_located(sealed: Installation, name: str) -> None:
    case = CASES[name]
    case.tamper(sealed)

    report = sealed.verify()

    assert not report.ok
    first = report.problems[0]
    assert first.kind is case.kind, report.problems
    if case.seq is not None:
        assert first.seq == case.seq, report.problems
    if case.checkpoint is not None:
        assert first.checkpoint == case.checkpoint, report.problems

    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code == 1, result.output
    assert "TAMPERED" in result.output
    assert first.message in result.output.replace("\n", "")


def test_moved_event_is_named(sealed: Installation) -> None:
    reorder(sealed)
    kinds = {(p.kind, p.seq) for p in sealed.verify().problems}
    assert (Kind.event_moved, 12) in kinds and (Kind.event_moved, 13) in kinds


def test_untampered_log_verifies_via_cli(sealed: Installation) -> None:
    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code == 0, result.output
    assert "45 events, 4 checkpoints" in result.output
