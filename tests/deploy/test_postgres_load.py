"""Many gateway workers on one PostgreSQL: a linear audit chain, and a restart survived.

2,000 real queries (warm sandboxes) from 8 clients over 4 uvicorn workers; PostgreSQL
is restarted a third of the way in. Clients retry on 503 + Retry-After and must never
see a 500; afterwards every job that was answered has exactly one ``query.executed``
event, no job id appears twice, and the chain verifies against its signed checkpoints.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from gateway_support import AGREEMENT, SQL, Gateway, installation, tokens
from pg_support import TempPostgres
from sqlalchemy import create_engine, text

from gateway.audit.verify import verify_log
from gateway.policy.signing import load_public_key
from gateway.settings import Settings

pytestmark = pytest.mark.slow

QUERIES = 2_000
CLIENTS = 8
RESTART_AT = QUERIES // 3
RETRYABLE_JOB_FAILURES = {"store_unavailable", "sandbox_failed"}


class Load:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.done = 0
        self.lock = threading.Lock()
        self.restarted = threading.Event()
        self.statuses: Counter[tuple[int, str]] = Counter()
        self.jobs: list[str] = []
        self.retry_after: set[str] = set()
        self.failed_closed: list[str] = []

    def one(self, client: httpx.Client) -> None:
        """Submit until answered; a 503 must say how long to wait and is retried."""
        for _attempt in range(60):
            r = client.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL})
            code = r.json().get("code", "") if r.status_code != 200 else ""
            with self.lock:
                self.statuses[(r.status_code, code)] += 1
            if r.status_code == 200 and "X-DSB-Job" not in r.headers:
                # The store dropped while the job ran: it failed closed, retryably. On
                # this shared 2-core machine a sandbox is now and then OOM-killed under
                # load: also a retryable failure (the sandbox is replaced), never a 500.
                assert r.json()["error"]["code"] in RETRYABLE_JOB_FAILURES, r.text
                with self.lock:
                    self.failed_closed.append(r.json()["id"])
                continue
            if r.status_code == 200:
                with self.lock:
                    self.jobs.append(r.headers["X-DSB-Job"])
                    self.done += 1
                return
            if r.status_code == 202:  # the store dropped while the job ran: poll it
                job = r.json()["id"]
                if self._poll(client, job):
                    with self.lock:
                        self.jobs.append(job)
                        self.done += 1
                    return
                continue
            assert r.status_code == 503, r.text
            assert "Traceback" not in r.text
            self.retry_after.add(r.headers.get("Retry-After", ""))
            time.sleep(min(float(r.headers["Retry-After"]), 1.0))
        raise AssertionError("a query was never answered")

    def _poll(self, client: httpx.Client, job: str) -> bool:
        for _ in range(100):
            r = client.get(f"/v1/jobs/{job}")
            if r.status_code == 200 and r.json()["status"] == "succeeded":
                return True
            if r.status_code == 200 and r.json()["status"] in ("failed", "cancelled"):
                return False
            time.sleep(0.2)
        return False

    def client_loop(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            for _ in range(n):
                self.one(client)


def test_four_workers_2000_queries_with_postgres_restart(pg: TempPostgres, tmp_path: Path) -> None:
    env = installation(tmp_path, pg.url)
    gateway = Gateway(env, workers=4).start(tmp_path / "gateway.log")
    try:
        load = Load(gateway.url, tokens(env)["acme-analyst"])
        load.client_loop(CLIENTS)  # warm the sandbox pool of each worker a little
        started = time.monotonic()

        def restart_midway() -> None:
            while load.done < RESTART_AT:
                time.sleep(0.02)
            pg.restart(down_s=1.0)
            load.restarted.set()

        with ThreadPoolExecutor(CLIENTS + 1) as pool:
            restarter = pool.submit(restart_midway)
            loops = [pool.submit(load.client_loop, (QUERIES - CLIENTS) // CLIENTS)
                     for _ in range(CLIENTS)]
            for future in loops:
                future.result()
            restarter.result()
        elapsed = time.monotonic() - started
    finally:
        gateway.stop()
    print(f"\n{QUERIES} queries in {elapsed:.1f}s; responses {dict(load.statuses)}, "
          f"{len(load.failed_closed)} jobs failed closed by the restart")

    assert load.restarted.is_set()
    assert not any(status >= 500 and status != 503 for status, _ in load.statuses)
    unavailable = {code for status, code in load.statuses if status == 503}
    assert unavailable <= {"store_unavailable"}, unavailable
    assert load.retry_after <= {"2"}
    assert len(load.jobs) == QUERIES and len(set(load.jobs)) == QUERIES

    settings = Settings(home=Path(env["DSB_HOME"]), policy_dir=Path(env["DSB_POLICY_DIR"]),
                        database_url=pg.url)
    engine = create_engine(pg.url)
    with engine.connect() as conn:
        executed = Counter(row[0] for row in conn.execute(text(
            "SELECT job_id FROM audit_events WHERE action = 'query.executed'")))
        rewritten = {row[0] for row in conn.execute(text(
            "SELECT job_id FROM audit_events WHERE action = 'query.rewritten'"))}
        ended = {row[0] for row in conn.execute(text(
            "SELECT job_id FROM audit_events WHERE action IN ('query.executed', 'query.failed')"))}
        unfinished = list(conn.execute(text(
            "SELECT id, status FROM jobs WHERE status NOT IN ('succeeded', 'failed', "
            "'cancelled', 'rejected')")))
        seqs = [row[0] for row in conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the chain has a gap"
    missing = [job for job in load.jobs if executed[job] != 1]
    assert not missing, f"{len(missing)} answered jobs lack their event: {missing[:3]}"
    assert max(executed.values()) == 1, "an event was recorded twice"
    # A job the restart interrupted is still closed in the trail (failed), never left open.
    assert rewritten <= ended, f"accepted jobs without an outcome: {list(rewritten - ended)[:3]}"
    assert not unfinished, unfinished[:3]
    assert settings.platform_key_path.exists()
    report = verify_log(engine, settings.checkpoints_path,
                        load_public_key(settings.platform_key_path.with_suffix(".pub")))
    engine.dispose()
    assert report.ok, report.problems[:5]
