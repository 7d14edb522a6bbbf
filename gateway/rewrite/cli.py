"""`dsb sql` commands: see what the rewriter does to a statement, and run it locally.

    dsb sql explain --scenario flights-aggregate "SELECT carrier, count(*) FROM flights GROUP BY 1"
    dsb sql run --scenario flights-records "SELECT * FROM flights LIMIT 5"

``run`` reads the published, encrypted datasets of this installation (``dsb dataset
publish``) and masks with the salt of ``--agreement`` (or a local one per scenario).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.cli_errors import reports_errors
from gateway.rewrite import RewriteContext, Rewritten, rewrite
from gateway.rewrite.compile_aggregate import describe_form
from gateway.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Rewrite and run SQL locally under a scenario.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ScenarioOpt = Annotated[str, typer.Option("--scenario", "-s", help="Scenario id to enforce.")]
SqlArg = Annotated[str, typer.Argument(help="One SQL statement (DuckDB dialect).")]


class Format(StrEnum):
    table = "table"
    json = "json"


def _context(settings: Settings, scenario_id: str, salt: str) -> RewriteContext:
    from gateway.policy.loading import load_policies

    policies = load_policies(settings.policy_dir, trusted_keys_dir=settings.trusted_keys,
                             require_signatures=False)
    scenario = policies.scenario(scenario_id)
    return RewriteContext(scenario, {d: policies.dataset(d) for d in scenario.datasets}, salt,
                          max_nesting_depth=settings.max_nesting_depth)


def _print_explanation(rewritten: Rewritten) -> None:
    err.print(f"mode: {rewritten.mode.value}; datasets: {', '.join(rewritten.datasets)}",
              markup=False, highlight=False)
    for change in rewritten.explanation:
        err.print(f"  - [{change.rule}] {change.message}", markup=False, highlight=False)


@app.command("explain")
@reports_errors
def explain(sql: SqlArg, scenario: ScenarioOpt,
            fmt: Annotated[Format, typer.Option("--format")] = Format.table) -> None:
    """Show the rewritten SQL and every change made, or why the statement is refused."""
    # The salt only changes hash values, which explain never shows: a throwaway one does.
    rewritten = rewrite(sql, _context(Settings(), scenario, secrets.token_hex(32)))
    if fmt is Format.json:
        out.print_json(json.dumps({
            "sql": rewritten.display_sql, "mode": rewritten.mode.value,
            "datasets": list(rewritten.datasets),
            "explanation": [{"rule": c.rule, "message": c.message} for c in rewritten.explanation],
            "compiled": dataclasses.asdict(rewritten.form) if rewritten.form else None,
        }))
        return
    out.print(rewritten.display_sql, markup=False, highlight=False)
    _print_explanation(rewritten)
    if rewritten.form is not None:
        out.print("\ncompiled (what each released value is computed from):", markup=False)
        for line in describe_form(rewritten.form, "  "):
            out.print(line, markup=False, highlight=False)


@app.command("run")
@reports_errors
def run(
    sql: SqlArg,
    scenario: ScenarioOpt,
    agreement: Annotated[str | None, typer.Option(
        help="Agreement whose mask salt to use (default: a local salt per scenario).")] = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Rewrite, execute on the locked-down engine, post-check, and print the result."""
    from gateway.datasets import catalog, keys
    from gateway.rewrite.run import execute
    from gateway.store import open_store
    from sandbox.engine import EngineLimits

    settings = Settings()
    salt = keys.derive_salt(settings, agreement or f"local-scenario:{scenario}")
    ctx = _context(settings, scenario, salt)
    rewritten = rewrite(sql, ctx)
    store = open_store(settings.db_url)
    mounts = catalog.mounts(settings, store, rewritten.datasets)
    limits = ctx.scenario.limits
    table, report = execute(rewritten, mounts, EngineLimits(
        memory_mb=limits.memory_mb, threads=max(1, int(limits.cpus)), timeout_ms=limits.timeout_ms))
    citations = [ctx.datasets[d].citation() for d in rewritten.datasets]
    if fmt is Format.json:
        out.print_json(json.dumps({
            "columns": list(report.columns), "rows": table.to_pylist(),
            "suppressed_groups": report.suppressed_groups, "truncated": report.truncated,
            "explanation": [{"rule": c.rule, "message": c.message} for c in rewritten.explanation],
            "sources": citations,
        }, default=str))
        return
    grid = Table(*report.columns)
    for row in table.to_pylist():
        grid.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(grid)
    _print_explanation(rewritten)
    err.print(f"{report.rows} row(s) in {report.elapsed_ms:.0f} ms"
              + (f"; {report.suppressed_groups} group(s) below k={rewritten.k} suppressed"
                 if rewritten.k is not None and rewritten.mode.value == "aggregate" else "")
              + ("; cut at the row cap" if report.truncated else ""), highlight=False)
    for citation in citations:
        err.print(f"source: {citation}", markup=False, highlight=False)
