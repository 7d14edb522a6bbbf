"""`dsb sql` commands."""

import typer

app = typer.Typer(no_args_is_help=True, help="Rewrite and run SQL locally under a scenario.")
