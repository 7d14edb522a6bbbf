"""A multi-worker gateway on PostgreSQL, run as operators run it (uvicorn --workers N).

Shared by the deployment tests and ``benches/scale.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from pg_support import free_port  # noqa: E402

from gateway.demo import read_tokens  # noqa: E402

AGREEMENT = "agr-acme-flights-aggregate"
SQL = "SELECT carrier, count(*) AS flights, avg(arr_delay) AS delay FROM flights GROUP BY carrier"


def installation(root: Path, database_url: str, queries_per_day: int = 100_000) -> dict[str, str]:
    """Demo installation on ``database_url``; returns the gateway's environment.

    The policy tree is a copy with a larger daily quota: scenarios are not signed (the
    agreements that name them are), so raising a limit here keeps signatures valid.
    """
    policies = root / "policies"
    shutil.copytree(ROOT / "policies", policies)
    scenario = policies / "scenarios" / "flights-aggregate.yaml"
    scenario.write_text(scenario.read_text().replace("queries_per_day: 2000",
                                                     f"queries_per_day: {queries_per_day}"))
    env = {**os.environ, "DSB_HOME": str(root / "home"), "DSB_POLICY_DIR": str(policies),
           "DSB_DATABASE_URL": database_url}
    subprocess.run([str(Path(sys.executable).parent / "dsb"), "demo", "init"], env=env, check=True,
                   cwd=ROOT, capture_output=True, timeout=300)
    return env


def tokens(env: dict[str, str]) -> dict[str, str]:
    """The demo tokens of the installation in ``env``, by user id."""
    return read_tokens(Path(env["DSB_HOME"]))


@dataclass
class Gateway:
    env: dict[str, str]
    workers: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> Gateway:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--no-access-log"],
            env=self.env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gateway did not answer: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        # SIGTERM to the uvicorn supervisor: workers run their shutdown (sandboxes stop).
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
