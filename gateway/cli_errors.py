"""How every `dsb` command reports a mistake: ``error[<code>]: <message>``, exit 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from gateway.errors import DsbError, PolicyError

P = ParamSpec("P")
R = TypeVar("R")

err = Console(stderr=True, soft_wrap=True)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a DsbError into one line per problem on stderr and exit code 1, no trace."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PolicyError as exc:
            for issue in exc.issues:
                err.print(f"[red]error[/red] {issue}", markup=True, highlight=False, soft_wrap=True)
            err.print(f"{len(exc.issues)} problem(s) found", highlight=False)
            raise typer.Exit(1) from None
        except DsbError as exc:
            err.print(f"error[{exc.code}]: {exc.message}", markup=False, highlight=False,
                      soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
