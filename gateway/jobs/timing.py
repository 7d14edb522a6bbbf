"""Where a job's time goes: wall time per stage, sent as a ``Server-Timing`` header.

``benches/api.py`` reads the header of every answer and prints the p50 of each stage, so
the breakdown is measured on the real path under load, not in a separate profile run.

    >>> timer = StageTimer()
    >>> with timer.stage("rewrite"):
    ...     pass
    >>> timer.header().startswith("rewrite;dur=")
    True
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Milliseconds per named stage of one job; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, start)

    def add(self, name: str, since: float) -> None:
        """Charge the time from ``since`` (``time.perf_counter()``) to ``name``."""
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - since) * 1000

    def header(self) -> str:
        return ", ".join(f"{name};dur={ms:.2f}" for name, ms in self.ms.items())


def parse_header(value: str) -> dict[str, float]:
    """``Server-Timing`` back into milliseconds per stage (for the benchmarks)."""
    out = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if name and rest:
            out[name] = float(rest)
    return out
