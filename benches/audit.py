"""Audit trail figures: durable append throughput (1 writer, 4 processes) and the time to
verify 1,000,000 events.

Baselines measured in the same run, on the same file system:
- append: the bare cost of a durable SQLite commit of the same row (one ``INSERT`` per
  ``BEGIN IMMEDIATE``/``COMMIT``, WAL, synchronous=NORMAL, no hashing, no lock file);
- verify: a plain scan reading every column of every event.
Targets: >= 5,000 events/s for both append figures; verify 1M events <= 10 s.

    .venv/bin/python benches/audit.py [--events 20000] [--verify-events 1000000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import tempfile
import time
from pathlib import Path

from gateway.audit import (
    Action,
    Actor,
    AuditEventIn,
    AuditLog,
    CheckpointPolicy,
    DatasetRef,
    Details,
    Subjects,
    verify_log,
)
from gateway.audit.events import (
    datasets_text,
    details_text,
    hash_message,
    message_from_row,
    now_ts,
)
from gateway.policy.signing import generate_keypair, load_private_key
from gateway.store import open_store

POLICY = CheckpointPolicy(every_events=1000, every_s=60)


def event(n: int, user: str = "alice") -> AuditEventIn:
    """A realistic executed-query event (SQL, rewritten SQL, digest: ~600 bytes)."""
    return AuditEventIn(
        actor=Actor(user=user, role="enterprise", organisation="Example Logistics Ltd"),
        action=Action.query_executed,
        subjects=Subjects(agreement="agr-2026-0042", job=f"job-{n:08d}",
                          datasets=(DatasetRef(id="flights", version=3),
                                    DatasetRef(id="airports", version=1))),
        details=Details(
            sql="SELECT origin, count(*) AS n FROM flights JOIN airports ON flights.origin = "
                f"airports.faa WHERE month = {n % 12 + 1} GROUP BY origin",
            rewritten_sql="SELECT origin, count(*) AS n FROM scenario_v.flights JOIN "
                          "scenario_v.airports ON flights.origin = airports.faa WHERE month = "
                          f"{n % 12 + 1} GROUP BY origin HAVING count(DISTINCT person) >= 10 "
                          "LIMIT 10000",
            rows_returned=3, result_digest=f"{n:064x}", duration_ms=12),
    )


def install(folder: Path) -> tuple[str, Path, Path]:
    url = f"sqlite:///{folder / 'dsb.sqlite'}"
    open_store(url).engine.dispose()
    key = folder / "platform.key"
    generate_keypair(key, key.with_suffix(".pub"))
    return url, folder / "checkpoints.jsonl", key


def open_log(url: str, checkpoints: Path, key: Path) -> AuditLog:
    return AuditLog(open_store(url, migrate=False), checkpoints, load_private_key(key), POLICY)


def append_n(url: str, checkpoints: Path, key: Path, n: int, user: str) -> None:
    log = open_log(url, checkpoints, key)
    events = [event(i, user) for i in range(n)]  # built before timing starts in the parent
    for e in events:
        log.append(e)
    log.close()


def bench_one_writer(n: int) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        url, cps, key = install(Path(tmp))
        log = open_log(url, cps, key)
        events = [event(i) for i in range(n)]
        start = time.perf_counter()
        for e in events:
            log.append(e)
        return n / (time.perf_counter() - start)


def bench_processes(n_total: int, procs: int) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        url, cps, key = install(Path(tmp))
        ctx = mp.get_context("fork")
        workers = [ctx.Process(target=append_n, args=(url, cps, key, n_total // procs, f"u{p}"))
                   for p in range(procs)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        assert all(w.exitcode == 0 for w in workers)
        report = verify_log(open_store(url, migrate=False).engine, cps,
                            load_private_key(key).public_key())
        assert report.ok, report.problems
        assert report.events == n_total // procs * procs, f"{report.events} events"
        return report.events / elapsed


def bench_bare_commits(n: int) -> float:
    """Baseline: the same row committed durably, nothing else."""
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        url, _, _ = install(Path(tmp))
        con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        con.execute("PRAGMA synchronous=NORMAL")
        e = event(0)
        row = ("x", "query.executed", "alice", "enterprise", "Example Logistics Ltd",
               "agr-2026-0042", "job", datasets_text(e.subjects), details_text(e.details),
               "0" * 64, "0" * 64)
        start = time.perf_counter()
        for seq in range(1, n + 1):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (seq, *row))
            con.execute("COMMIT")
        return n / (time.perf_counter() - start)


def build_log(url: str, checkpoints: Path, key: Path, n: int) -> None:
    """n events written in bulk (same hashing as append), sealed every 1000 by AuditLog."""
    con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    log = AuditLog(open_store(url, migrate=False), checkpoints, load_private_key(key),
                   CheckpointPolicy(every_events=n + 1, every_s=1e9))
    e = event(0)
    a, s = e.actor, e.subjects
    ds, dt = datasets_text(s), details_text(e.details)
    prev, seq = "0" * 64, 0
    while seq < n:
        rows = []
        for _ in range(min(1000, n - seq)):
            seq += 1
            ts = now_ts()
            h = hash_message(message_from_row(seq, ts, "query.executed", a.user, a.role,
                                              a.organisation, s.agreement, f"job-{seq}", ds,
                                              dt, prev))
            rows.append((seq, ts, "query.executed", a.user, a.role, a.organisation, s.agreement,
                         f"job-{seq}", ds, dt, prev, h))
            prev = h
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, prev))
        con.execute("COMMIT")
        log.checkpoint()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()


def bench_verify(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        url, cps, key = install(Path(tmp))
        start = time.perf_counter()
        build_log(url, cps, key, n)
        print(f"  (built {n:,} events with {n // 1000:,} checkpoints in "
              f"{time.perf_counter() - start:.1f} s)", flush=True)
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        start = time.perf_counter()
        cursor = con.execute("SELECT * FROM audit_events ORDER BY seq")
        while cursor.fetchmany(20_000):
            pass
        scan = time.perf_counter() - start
        report = verify_log(open_store(url, migrate=False).engine, cps,
                            load_private_key(key).public_key(), max_unsealed=1000)
        assert report.ok and report.events == n, report.problems
        return report.seconds, scan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000, help="appends per throughput run")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["append", "verify"], default=None)
    args = parser.parse_args()
    if args.only != "verify":
        bench_append(args)
    if args.only != "append":
        seconds, scan = bench_verify(args.verify_events)
        print(f"verify    {args.verify_events:,} events:              {seconds:9.2f} s "
              f"(plain scan {scan:.2f} s, ratio {seconds / scan:.1f}; target <= 10 s)",
              flush=True)


def bench_append(args: argparse.Namespace) -> None:

    bench_bare_commits(args.events // 4)  # warm-up: first file creation, imports, caches
    bare = bench_bare_commits(args.events)
    print(f"baseline  bare durable SQLite commits:     {bare:9,.0f} rows/s", flush=True)
    one = bench_one_writer(args.events)
    print(f"append    1 writer:                        {one:9,.0f} events/s "
          f"({one / bare:.2f} of baseline; target >= 5,000)", flush=True)
    many = bench_processes(args.events, args.processes)
    print(f"append    {args.processes} processes:                     {many:9,.0f} events/s "
          f"({many / bare:.2f} of baseline; target >= 5,000)", flush=True)


if __name__ == "__main__":
    main()
