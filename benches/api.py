"""Gateway API benchmarks, each against a baseline measured in the same run.

    .venv/bin/python benches/api.py                  # all three, TPC-H SF1
    .venv/bin/python benches/api.py --scale 0.1 --seconds 10

(a) TPC-H through the API (records mode, every column allowed, warm sandbox) versus the
    same query in plain in-process DuckDB on the same data: median of per-query ratios
    (target <= 1.10).
(b) Small queries per second with ``--clients`` concurrent HTTP clients against a real
    uvicorn gateway (target >= 300/s on this 2-core machine), and the number of
    ``query.executed`` audit events, which must equal the number of answered queries.
(c) The same small-query load against datasette serving the same table as SQLite,
    as the peer's figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "rewrite"))

from rewrite_support import tpch_build, tpch_queries  # noqa: E402

from gateway.access.accounts import Role, add_user, issue_token  # noqa: E402
from gateway.datasets.keys import create_master_key  # noqa: E402
from gateway.datasets.publish import publish  # noqa: E402
from gateway.jobs.timing import parse_header  # noqa: E402
from gateway.policy.loading import load_policies  # noqa: E402
from gateway.policy.models import Agreement, Holder  # noqa: E402
from gateway.policy.signing import generate_keypair, load_private_key, sign  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.store import open_store  # noqa: E402
from sandbox.engine import catalog_name  # noqa: E402

AGREEMENT = "agr-bench-tpch"
SMALL = "SELECT r_regionkey, r_name FROM region ORDER BY r_regionkey"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install(home: Path, scale: float) -> tuple[Settings, str, list[Any]]:
    """A gateway home whose policies add the TPC-H tables, published encrypted."""
    tree = home / "policies"
    shutil.copytree(ROOT / "policies", tree)
    datasets, scenario, plain_mounts = tpch_build(home / "tpch", scale)
    for dataset in datasets.values():
        (tree / "datasets" / f"{dataset.id}.yaml").write_text(
            yaml.safe_dump(dataset.model_dump(mode="json", by_alias=True, exclude_none=True)))
    limits = scenario.limits.model_copy(update={
        "cpus": 2, "memory_mb": 4096, "timeout_ms": 600_000, "max_rows": 10_000_000,
        "queries_per_day": 10_000_000, "result_cells": 10**9})
    scenario = scenario.model_copy(update={"id": "bench-tpch", "limits": limits})
    (tree / "scenarios" / "bench-tpch.yaml").write_text(
        yaml.safe_dump(scenario.model_dump(mode="json", by_alias=True, exclude_none=True)))
    generate_keypair(home / "bench.key", tree / "keys" / "bench.pub")
    agreement = Agreement(
        id=AGREEMENT, holder=Holder(user="bench", organisation="bench", role="enterprise"),
        scenario="bench-tpch", purpose="benchmark", valid_from=dt.date(2020, 1, 1),
        valid_until=dt.date(2099, 1, 1), security_measures=["benchmark only"])
    signed = sign(agreement, load_private_key(home / "bench.key"), "bench")
    (tree / "agreements" / f"{AGREEMENT}.yaml").write_text(
        yaml.safe_dump(signed.model_dump(mode="json", by_alias=True, exclude_none=True)))
    settings = Settings(home=home / "var", policy_dir=tree)
    create_master_key(settings.master_key_path)
    store = open_store(settings.db_url)
    policies = load_policies(tree)
    for table in datasets:
        publish(settings, store, policies, home / "tpch" / "parquet" / f"{table}.parquet", table)
    add_user(store, "bench", Role.enterprise, organisation="bench")
    return settings, issue_token(store, "bench"), plain_mounts


def start_gateway(settings: Settings, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DSB_HOME": str(settings.home), "DSB_POLICY_DIR": str(
        settings.policy_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--port",
                             str(port), "--workers", str(workers), "--log-level", "warning"],
                            env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gateway did not start")


def api_query(client: httpx.Client, sql: str) -> None:
    response = client.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": sql,
                                             "format": "arrow", "wait_ms": 30_000})
    if response.status_code == 202:
        job = response.json()["id"]
        while (state := client.get(f"/v1/jobs/{job}").json())["status"] in ("queued",
                                                                             "running"):
            time.sleep(0.01)
        if state["status"] != "succeeded":
            raise RuntimeError(state)
        response = client.get(f"/v1/jobs/{job}/result", params={"format": "arrow"})
    if response.status_code != 200:
        raise RuntimeError(response.text[:300])


def bench_tpch(base: str, token: str, mounts: list[Any], runs: int) -> None:
    plain = duckdb.connect(config={"threads": 2, "memory_limit": "4096MB"})
    for mount in mounts:
        plain.execute(f"ATTACH '{mount.path}' AS {catalog_name(mount.dataset_id)} (READ_ONLY)")
        plain.execute(f"CREATE VIEW {mount.dataset_id} AS SELECT * FROM "
                      f"{catalog_name(mount.dataset_id)}.main.data")
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                          timeout=600)
    ratios = []
    print(f"(a) TPC-H through the API vs plain DuckDB, median of {runs} runs (s)")
    print(f"{'query':>5} {'duckdb':>8} {'api':>8} {'ratio':>6}")
    for number, sql in enumerate(tpch_queries(), 1):
        api_query(client, sql)  # warm the sandbox and its buffer pool
        plain.execute(sql).to_arrow_table()
        plain_t, api_t = [], []
        for _ in range(runs):
            start = time.perf_counter()
            plain.execute(sql).to_arrow_table()
            plain_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            api_query(client, sql)
            api_t.append(time.perf_counter() - start)
        ratio = statistics.median(api_t) / statistics.median(plain_t)
        ratios.append(ratio)
        print(f"{'Q' + str(number):>5} {statistics.median(plain_t):8.3f} "
              f"{statistics.median(api_t):8.3f} {ratio:6.2f}")
    print(f"median ratio api/duckdb {statistics.median(ratios):.2f} (target <= 1.10)\n")


async def load(url: str, headers: dict[str, str], body: dict[str, Any] | None, clients: int,
               seconds: float, stages: dict[str, list[float]] | None = None
               ) -> tuple[int, int]:
    """Requests answered 200 and not; each answer's latency and ``Server-Timing`` stages
    (ms) are appended to ``stages`` when given."""
    ok = failed = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        async def worker() -> None:
            nonlocal ok, failed
            while time.monotonic() < stop:
                start = time.perf_counter()
                if body is None:
                    response = await client.get(url)
                else:
                    response = await client.post(url, json=body)
                if response.status_code == 200:
                    ok += 1
                    if stages is not None:
                        seen = parse_header(response.headers.get("server-timing", ""))
                        seen["client"] = (time.perf_counter() - start) * 1000
                        for name, ms in seen.items():
                            stages.setdefault(name, []).append(ms)
                else:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return ok, failed


def count_executed(settings: Settings) -> int:
    with sqlite3.connect(settings.db_url.removeprefix("sqlite:///")) as db:
        row = db.execute("SELECT count(*) FROM audit_events WHERE action = 'query.executed' "
                         "AND agreement_id = ?", (AGREEMENT,)).fetchone()
    return int(row[0])


def bench_small(base: str, token: str, settings: Settings, clients: int, seconds: float) -> None:
    before = count_executed(settings)
    body = {"agreement": AGREEMENT, "sql": SMALL, "wait_ms": 30_000}
    stages: dict[str, list[float]] = {}
    ok, failed = asyncio.run(load(f"{base}/v1/jobs", {"Authorization": f"Bearer {token}"},
                                  body, clients, seconds, stages))
    events = count_executed(settings) - before
    print(f"(b) small queries, {clients} clients, {seconds:.0f} s: {ok / seconds:.0f} queries/s "
          f"(target >= 300), {failed} failed; query.executed events {events} for {ok} "
          f"answered ({'equal' if events == ok else 'NOT equal'})")
    print_stages(stages)


def print_stages(stages: dict[str, list[float]]) -> None:
    """p50 per stage of the job path (the gateway's Server-Timing), and what is left of
    the client's latency: HTTP, authentication, serialisation and waiting for a worker."""
    if not stages.get("client"):
        return
    p50 = {name: statistics.median(values) for name, values in stages.items()}
    inside = sum(ms for name, ms in p50.items() if name != "client")
    parts = [f"{name} {ms:.1f}" for name, ms in p50.items() if name != "client"]
    print(f"    p50 ms per stage: {', '.join(parts)}; outside the job path "
          f"{max(p50['client'] - inside, 0):.1f}; client latency {p50['client']:.1f}")


def bench_datasette(home: Path, clients: int, seconds: float) -> None:
    if shutil.which("datasette") is None and not (Path(sys.executable).parent /
                                                   "datasette").exists():
        print("(c) datasette: not installed (pip install datasette) - skipped")
        return
    db = home / "tpch.sqlite"
    con = duckdb.connect()
    rows = con.execute(f"SELECT r_regionkey, r_name FROM read_parquet("
                       f"'{home / 'tpch' / 'parquet' / 'region.parquet'}')").fetchall()
    with sqlite3.connect(db) as lite:
        lite.execute("CREATE TABLE region (r_regionkey INTEGER, r_name TEXT)")
        lite.executemany("INSERT INTO region VALUES (?, ?)", rows)
    port = free_port()
    exe = shutil.which("datasette") or str(Path(sys.executable).parent / "datasette")
    proc = subprocess.Popen([exe, "serve", str(db), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/tpch.json?" + urlencode({"sql": SMALL,
                                                                  "_shape": "array"})
        ok, failed = asyncio.run(load(url, {}, None, clients, seconds))
        print(f"(c) datasette, same query on SQLite, {clients} clients: {ok / seconds:.0f} "
              f"queries/s ({failed} failed)")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", default="", help="letters of parts to skip, e.g. 'a'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsb-bench-api-") as tmp:
        home = Path(tmp)
        settings, token, mounts = install(home, args.scale)
        port = free_port()
        gateway = start_gateway(settings, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        try:
            if "a" not in args.skip:
                bench_tpch(base, token, mounts, args.runs)
            if "b" not in args.skip:
                bench_small(base, token, settings, args.clients, args.seconds)
            if "c" not in args.skip:
                bench_datasette(home, args.clients, args.seconds)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)


if __name__ == "__main__":
    main()
