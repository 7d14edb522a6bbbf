"""`dsb audit` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect and verify the audit trail.")
