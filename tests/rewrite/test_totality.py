"""Every allowed function, operator and aggregate, called with extreme values of every
type in aggregate mode, fails or succeeds the same whatever the data (``totality_probe``).

The probe runs in a subprocess: a DuckDB crash on a hostile call fails this test (with
the statement that crashed), not the whole test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.rewrite.allowlists import (
    AGGREGATES,
    ANONYMOUS_AGGREGATES,
    ANONYMOUS_SCALARS,
    PARTIAL,
    PARTIAL_ANONYMOUS,
    RECORDS_ONLY_AGGREGATES,
    SCALARS,
    SYNTAX,
)

PROBE = Path(__file__).with_name("totality_probe.py")
# Allowed functions the probe does not call with a data-dependent argument: no arguments
# (pi(), current_date); no DuckDB spelling sqlglot reads as them (initcap); refused in
# aggregate mode by another rule (regexp_replace: bound_sizes; skewness, kurtosis).
NOT_PROBED = {"Pi", "CurrentDate", "Initcap", "RegexpReplace", "PercentileCont",
              "PercentileDisc"}


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True,
                          timeout=1800, cwd=PROBE.parents[2])
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        last = next((x["sql"] for x in reversed(lines) if x["kind"] == "progress"), None)
        pytest.fail(f"the probe died with code {done.returncode} (a crash on the last "
                    f"statement?):\n{last}\n{done.stderr[-2000:]}")
    summary = next(x for x in lines if x["kind"] == "summary")
    summary["findings"] = [x for x in lines if x["kind"] == "finding"]
    return summary


def test_no_failure_depends_on_the_data(probe: dict[str, Any]) -> None:
    found = [f"{f['function']}: {f['sql']}\n    {f['error']}" for f in probe["findings"]
             if f["rule"] != "total_function_fails"]
    assert not found, "data-dependent failures:\n" + "\n".join(found[:40])


def test_functions_called_total_fail_on_no_value(probe: dict[str, Any]) -> None:
    """The classification in ``allowlists``: a total function needs no ``try()``."""
    wrong = [f"{f['function']}: {f['sql']}: {f['error']}" for f in probe["findings"]
             if f["rule"] == "total_function_fails"]
    assert not wrong, "classified total, but fails:\n" + "\n".join(wrong)


def test_every_allowed_function_is_probed(probe: dict[str, Any]) -> None:
    covered = set(probe["covered"])
    scalars = {c.__name__ for c in SCALARS} | set(ANONYMOUS_SCALARS)
    aggregates = {c.__name__ for c in AGGREGATES - RECORDS_ONLY_AGGREGATES}
    aggregates |= set(ANONYMOUS_AGGREGATES)
    missing = sorted((scalars | aggregates) - covered - NOT_PROBED)
    assert not missing, f"allowed but never called by the probe: {missing}"
    assert probe["statements"] > 5000


def test_every_partial_function_is_allowed() -> None:
    """A partial function not on the allow-list would be a stale classification."""
    assert PARTIAL <= SCALARS | SYNTAX
    assert PARTIAL_ANONYMOUS <= ANONYMOUS_SCALARS
