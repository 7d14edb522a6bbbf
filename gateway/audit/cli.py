"""`dsb audit` commands: verify, show, export, checkpoint, receipts.

Exit status: 0 when everything holds, 1 when the trail does not verify or a command
fails (reported as ``error[<code>]: <message>``, never a stack trace).
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError, ProgrammingError

from gateway.audit.config import AuditSettings, open_audit_log
from gateway.audit.events import Action, AuditEvent, format_ts
from gateway.audit.query import AuditFilter, select_events
from gateway.audit.receipts import Receipt, verify_receipt
from gateway.audit.verify import VerifyReport, verify_log
from gateway.cli_errors import reports_errors
from gateway.errors import AuditError, KeyMaterialError
from gateway.policy.signing import load_public_key
from gateway.settings import Settings
from gateway.store import Store, open_store

app = typer.Typer(no_args_is_help=True, help="Inspect and verify the audit trail.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The shared DsbError report, plus a hint when the audit tables are missing."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (OperationalError, ProgrammingError) as exc:
            err.print(f"error[audit_unavailable]: cannot read the audit tables ({exc.orig}); "
                      "run `dsb db upgrade`", markup=False, highlight=False)
            raise typer.Exit(1) from None

    return reports_errors(wrapper)


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    # Reading commands never migrate: verifying must not change what it verifies.
    store = open_store(settings.db_url, migrate=False)
    try:
        yield store
    finally:
        store.engine.dispose()


def _public_key(settings: Settings, given: Path | None) -> Ed25519PublicKey:
    path = given or settings.platform_public_key_path
    if not path.is_file():
        raise KeyMaterialError(f"no platform public key at {path}; pass --public-key, or "
                               "run `dsb keys platform` on a new installation")
    return load_public_key(path)


PublicKeyOpt = Annotated[Path | None, typer.Option(
    "--public-key", help="Platform public key (default: DSB_SIGNING_PUBLIC_KEY_FILE, else the "
    ".pub beside the signing key).")]
UserOpt = Annotated[str | None, typer.Option(help="Only events by this user.")]
AgreementOpt = Annotated[str | None, typer.Option(help="Only events under this agreement.")]
DatasetOpt = Annotated[str | None, typer.Option(help="Only events touching this dataset.")]
ActionOpt = Annotated[Action | None, typer.Option(help="Only this action.")]
SinceOpt = Annotated[datetime | None, typer.Option(help="From this time (inclusive, UTC).")]
UntilOpt = Annotated[datetime | None, typer.Option(help="Before this time (exclusive, UTC).")]


def _filter(user: str | None, agreement: str | None, dataset: str | None,
            action: Action | None, since: datetime | None, until: datetime | None) -> AuditFilter:
    return AuditFilter(user=user, agreement=agreement, dataset=dataset, action=action,
                       since=since, until=until)


@app.command()
@_reports_errors
def verify(
    public_key: PublicKeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every event and checkpoint; exit 1 naming the first broken one."""
    settings = Settings()
    key = _public_key(settings, public_key)
    with _store(settings) as store:
        report = verify_log(store.engine, settings.checkpoints_path, key,
                            max_unsealed=AuditSettings().checkpoint_every_events)
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: VerifyReport) -> None:
    out.print(f"{report.events} events, {report.checkpoints} checkpoints, sealed through "
              f"event {report.sealed_through}, {report.unsealed} unsealed "
              f"({report.seconds:.2f} s)", highlight=False)
    if report.ok:
        out.print("[green]OK[/green]: the audit trail verifies", highlight=False)
        return
    first = report.problems[0]
    err.print(f"[red]TAMPERED[/red]: {first.message}", highlight=False)
    for problem in report.problems[1:]:
        err.print(f"  also: {problem.message}", highlight=False, markup=False)
    if report.problems_not_listed:
        err.print(f"  and {report.problems_not_listed} more problems", highlight=False)


@app.command()
@_reports_errors
def show(
    user: UserOpt = None, agreement: AgreementOpt = None, dataset: DatasetOpt = None,
    action: ActionOpt = None, since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
) -> None:
    """Table of events, newest first."""
    table = Table("seq", "time (UTC)", "user", "role", "organisation", "action", "agreement",
                  "datasets", "job", "details", expand=False)
    with _store(Settings()) as store:
        for e in select_events(store, _filter(user, agreement, dataset, action, since, until),
                               limit=limit, newest_first=True):
            table.add_row(str(e.seq), format_ts(e.ts)[:-4], e.actor.user, e.actor.role,
                          e.actor.organisation, e.action.value, e.subjects.agreement or "",
                          ", ".join(f"{d.id}@{d.version}" if d.version is not None else d.id
                                    for d in e.subjects.datasets),
                          e.subjects.job or "", _summary(e.details))
    Console().print(table)  # made here, so that it sizes itself to the terminal it prints on


def _summary(details: dict[str, object]) -> str:
    text = json.dumps(details, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:79] + "…"


_CSV_FIELDS = ("seq", "ts", "action", "user", "role", "organisation", "agreement", "job",
               "datasets", "details", "prev_hash", "hash")


@app.command()
@_reports_errors
def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] =
    ExportFormat.jsonl,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="File to write (default: stdout).")] = None,
    user: UserOpt = None, agreement: AgreementOpt = None, dataset: DatasetOpt = None,
    action: ActionOpt = None, since: SinceOpt = None, until: UntilOpt = None,
) -> None:
    """Write events in sequence order, with their hashes so the export can be re-verified."""
    where = _filter(user, agreement, dataset, action, since, until)
    stream = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        with _store(Settings()) as store:
            events = select_events(store, where)
            if fmt is ExportFormat.jsonl:
                for event in events:
                    stream.write(event.model_dump_json() + "\n")
            else:
                writer = csv.writer(stream)
                writer.writerow(_CSV_FIELDS)
                for event in events:
                    writer.writerow(_csv_row(event))
    finally:
        if output:
            stream.close()


def _csv_row(e: AuditEvent) -> list[object]:
    datasets = json.dumps([d.model_dump() for d in e.subjects.datasets], ensure_ascii=False)
    return [e.seq, format_ts(e.ts), e.action.value, e.actor.user, e.actor.role,
            e.actor.organisation, e.subjects.agreement or "", e.subjects.job or "", datasets,
            json.dumps(e.details, ensure_ascii=False, sort_keys=True), e.prev_hash, e.hash]


@app.command()
@_reports_errors
def checkpoint() -> None:
    """Seal the unsealed tail now (needs the platform private key)."""
    settings = Settings()
    with _store(settings) as store:
        log = open_audit_log(settings, store)
        try:
            sealed = log.checkpoint()
        finally:
            log.close()
    if sealed is None:
        out.print("nothing to seal", highlight=False)
    else:
        st = sealed.statement
        out.print(f"checkpoint {st.index}: events {st.seq_from}..{st.seq_to}", highlight=False)


@app.command()
@_reports_errors
def receipt(seq: Annotated[int, typer.Argument(min=1, help="Event sequence number.")]) -> None:
    """Print the receipt of one event (with its proof once sealed) as JSON."""
    settings = Settings()
    with _store(settings) as store:
        log = open_audit_log(settings, store)
        try:
            out.print_json(log.receipt(seq).model_dump_json())
        finally:
            log.close()


@app.command("verify-receipt")
@_reports_errors
def verify_receipt_cmd(
    file: Annotated[Path, typer.Argument(help="Receipt JSON as handed out with a result.")],
    public_key: PublicKeyOpt = None,
) -> None:
    """Check a receipt against the platform public key alone (no database needed)."""
    try:
        held = Receipt.model_validate_json(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise AuditError(f"{file} is not a receipt: {exc}", code="receipt_invalid") from None
    check = verify_receipt(held, _public_key(Settings(), public_key))
    out.print(f"OK: event {check.seq} is sealed by checkpoint {check.checkpoint_index} "
              f"(events up to {check.checkpoint_seq_to})", highlight=False)
