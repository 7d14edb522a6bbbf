"""`dsb audit show` and `export` filter by user, agreement, dataset, action and time."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from audit_support import Installation, query_event
from typer.testing import CliRunner

from gateway.audit import Action, Actor, AuditEventIn, AuditFilter, Subjects, select_events
from gateway.audit.cli import app


@pytest.fixture
def mixed(install: Installation) -> Installation:
    install.fill(3, user="alice", agreement="agr-a", dataset="flights")
    install.fill(2, user="bob", agreement="agr-b", dataset="taxis")
    install.log.append(AuditEventIn(actor=Actor(user="sue", role="supervisor"),
                                    action=Action.agreement_suspended,
                                    subjects=Subjects(agreement="agr-b")))
    return install


def test_select_filters(mixed: Installation) -> None:
    def seqs(**kw: object) -> list[int]:
        return [e.seq for e in select_events(mixed.store, AuditFilter.model_validate(kw))]

    assert seqs(user="alice") == [1, 2, 3]
    assert seqs(agreement="agr-b") == [4, 5, 6]
    assert seqs(dataset="taxis") == [4, 5]
    assert seqs(dataset="tax") == []
    assert seqs(action="agreement.suspended") == [6]
    now = datetime.now(UTC)
    assert seqs(since=now - timedelta(minutes=1)) == [1, 2, 3, 4, 5, 6]
    assert seqs(until=now - timedelta(minutes=1)) == []
    assert [e.seq for e in select_events(mixed.store, limit=2, newest_first=True)] == [6, 5]


def test_show_table(mixed: Installation) -> None:
    result = CliRunner().invoke(app, ["show", "--user", "bob", "--action", "query.executed"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "taxis@2" in result.output and "alice" not in result.output


def test_export_jsonl_and_csv(mixed: Installation) -> None:
    runner = CliRunner()
    jsonl = runner.invoke(app, ["export", "--format", "jsonl", "--dataset", "flights"])
    assert jsonl.exit_code == 0, jsonl.output
    events = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[0]["details"]["sql"] == query_event(0).details.sql
    target = mixed.settings.home / "audit.csv"
    out = runner.invoke(app, ["export", "--format", "csv", "-o", str(target)])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[5]["action"] == "agreement.suspended" and len(rows[5]["hash"]) == 64


def test_checkpoint_command(mixed: Installation) -> None:
    result = CliRunner().invoke(app, ["checkpoint"])
    assert result.exit_code == 0 and "events 1..6" in result.output, result.output
    assert mixed.verify().sealed_through == 6


def test_verify_without_key_is_a_clear_error(mixed: Installation) -> None:
    mixed.settings.platform_key_path.with_suffix(".pub").unlink()
    result = CliRunner().invoke(app, ["verify"])
    assert result.exit_code == 1 and "error[" in result.output
    assert "Traceback" not in result.output


def test_show_reports_an_unreadable_event_without_a_traceback(mixed: Installation) -> None:
    mixed.sql().execute("UPDATE audit_events SET action = 'query.deleted' WHERE seq = 2")
    result = CliRunner().invoke(app, ["show"])
    assert result.exit_code == 1, result.output
    assert "error[audit_integrity]: event 2 cannot be read back" in result.output
