"""Throughput of the gateway with 1, 2 and 4 uvicorn workers on one PostgreSQL.

    .venv/bin/python benches/scale.py                   # 1, 2, 4 workers, 20 s each
    .venv/bin/python benches/scale.py --seconds 10 --clients 16

Each run: a fresh demo installation on a throw-away PostgreSQL (Debian's binaries,
loopback), a real ``uvicorn gateway.asgi:app --workers N``, ``--clients`` HTTP clients
submitting a small aggregate query through warm sandboxes for ``--seconds``. Prints
queries/s and the ratio to 1 worker (the same-run baseline), and checks that every
answered query has its ``query.executed`` audit event.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "deploy")]
from gateway_support import AGREEMENT, SQL, Gateway, installation, tokens  # noqa: E402
from pg_support import TempPostgres, postgres_missing  # noqa: E402


def run(workers: int, seconds: float, clients: int) -> tuple[float, int, int]:
    """(queries/s, answered, query.executed events) for ``workers`` workers."""
    server = TempPostgres().start()
    try:
        with tempfile.TemporaryDirectory(prefix="dsb-scale-") as tmp:
            env = installation(Path(tmp), server.url, queries_per_day=10_000_000)
            gateway = Gateway(env, workers=workers).start(Path(tmp) / "gateway.log")
            try:
                token = tokens(env)["acme-analyst"]
                answered = _load(gateway.url, token, seconds, clients)
            finally:
                gateway.stop()
            engine = create_engine(server.url)
            with engine.connect() as conn:
                events = conn.execute(text("SELECT count(*) FROM audit_events WHERE action = "
                                           "'query.executed'")).scalar_one()
            engine.dispose()
    finally:
        server.stop()
    return answered[0] / seconds, answered[1], int(events)


def _load(url: str, token: str, seconds: float, clients: int) -> tuple[int, int]:
    """(answered in the measured window, answered in total including warm-up)."""
    counts = [0, 0]
    lock = threading.Lock()
    start = threading.Event()
    warm = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for _ in range(3):  # warm-up: sandboxes spawn in every worker
                http.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL})
            with lock:
                counts[1] += 3
            warm.wait()
            start.wait()
            while time.monotonic() < stop_at[0]:
                r = http.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL})
                r.raise_for_status()
                with lock:
                    counts[0] += 1
                    counts[1] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    warm.wait()  # every worker has spawned its sandboxes before the clock starts
    stop_at[0] = time.monotonic() + seconds
    start.set()
    for t in threads:
        t.join()
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    if reason := postgres_missing():
        sys.exit(reason)
    baseline: float | None = None
    print(f"{'workers':>7} {'queries/s':>10} {'ratio':>6} {'answered':>9} {'audited':>8}")
    for workers in args.workers:
        qps, answered, events = run(workers, args.seconds, args.clients)
        baseline = baseline or qps
        print(f"{workers:>7} {qps:>10.1f} {qps / baseline:>6.2f} {answered:>9} {events:>8}",
              flush=True)
        if events != answered:
            sys.exit(f"{answered} queries answered but {events} query.executed events")


if __name__ == "__main__":
    main()
