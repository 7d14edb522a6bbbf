"""Sandbox start-up and statement overhead, against baselines measured in the same run.

- cold: time until a new sandbox is ready (container started, agent connected and
  authenticated, encrypted dataset attached) vs ``docker run --rm IMAGE true``.
  Target ratio <= 1.5.
- warm: round trip of a statement in a warm sandbox (send, execute, stream Arrow back)
  vs the same statement on an in-process locked-down DuckDB. Target <= 5 ms added, p50.
- stop: time for ``stop_agreement`` to kill an agreement's sandboxes (target < 1 s).

    .venv/bin/python benches/spawn.py [--cold 10] [--warm 300] [--backend docker|process]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from gateway.datasets.files import write_table
from gateway.datasets.keys import new_data_key
from sandbox.engine import DatasetMount, EngineLimits, open_engine, source_table
from sandbox.runtime import RuntimeSettings, SandboxLimits, SandboxSpec, WarmPool
from sandbox.runtime.select import select_backend

ROWS = 200_000
STATEMENTS = {
    "select 1": "SELECT 1 AS one",
    "aggregate": "SELECT carrier, count(*) AS n, avg(delay) AS d FROM {t} GROUP BY carrier",
}


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def docker_cli() -> str:
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=10, help="cold starts of each kind")
    parser.add_argument("--warm", type=int, default=300, help="warm round trips per statement")
    parser.add_argument("--backend", choices=("docker", "process"), default="docker")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="dsb-bench-", dir="/var/tmp"))
    folder.chmod(0o755)
    run_dir = Path(tempfile.mkdtemp(prefix="dsb-b-", dir="/tmp"))
    try:
        key = new_data_key()
        path = folder / "flights.duckdb"
        write_table(path, key, pa.table({
            "id": pa.array(range(ROWS), pa.int64()),
            "carrier": pa.array([("AA", "UA", "DL", "WN")[i % 4] for i in range(ROWS)]),
            "delay": pa.array([(i * 7) % 120 - 10 for i in range(ROWS)], pa.int32()),
        }))
        path.chmod(0o644)
        mount = DatasetMount("flights", path, key)
        limits = SandboxLimits(memory_mb=512, cpus=1.0, pids=64, timeout_ms=30_000)
        settings = RuntimeSettings(runtime=args.backend, run_dir=run_dir, max_live=4)
        pool = WarmPool(select_backend(settings), settings)
        try:
            run(pool, settings, mount, limits, args)
        finally:
            pool.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def run(pool: WarmPool, settings: RuntimeSettings, mount: DatasetMount,
        limits: SandboxLimits, args: argparse.Namespace) -> None:
    # -- cold: interleaved with the baseline so both see the same machine load ----------
    cold: list[float] = []
    baseline: list[float] = []
    for i in range(args.cold + 1):
        if args.backend == "docker":
            start = time.perf_counter()
            subprocess.run([docker_cli(), "run", "--rm", "--entrypoint", "true", settings.image],
                           check=True, capture_output=True)
            base = time.perf_counter() - start
        spec = SandboxSpec(f"agr-bench-{i}", (mount,), limits)
        start = time.perf_counter()
        sandbox = pool.acquire(spec, idle_s=0)
        ready = time.perf_counter() - start
        pool.release(sandbox)  # idle 0: removed in the background
        if i == 0:
            continue  # first of each pays for page cache and image layer warm-up
        cold.append(ready)
        if args.backend == "docker":
            baseline.append(base)
    print(f"cold sandbox ready ({args.backend}), p50: {p50_ms(cold):7.1f} ms")
    if baseline:
        print(f"docker run --rm IMAGE true,  p50: {p50_ms(baseline):7.1f} ms")
        print(f"  ratio cold/baseline: {p50_ms(cold) / p50_ms(baseline):.2f}  (target <= 1.5)")

    # -- warm round trips vs in-process DuckDB ----------------------------------------
    spec = SandboxSpec("agr-bench-warm", (mount,), limits)
    sandbox = pool.acquire(spec)
    con = open_engine([mount], EngineLimits(memory_mb=limits.memory_mb, threads=limits.threads))
    try:
        for name, template in STATEMENTS.items():
            sql = template.format(t=source_table(mount.dataset_id))

            def via_sandbox(sql: str = sql) -> pa.Table:
                return pool.execute(sandbox, sql).read_all()

            def in_engine(sql: str = sql) -> pa.Table:
                return con.execute(sql).to_arrow_table()

            in_sandbox = timed(via_sandbox, args.warm)
            in_process = timed(in_engine, args.warm)
            added = p50_ms(in_sandbox) - p50_ms(in_process)
            print(f"warm '{name}': sandbox p50 {p50_ms(in_sandbox):6.2f} ms, in-process p50 "
                  f"{p50_ms(in_process):6.2f} ms, added {added:5.2f} ms  (target <= 5 ms)")
    finally:
        con.close()
        pool.release(sandbox)

    # -- stopping an agreement --------------------------------------------------------
    stops = []
    for i in range(3):
        agreement = f"agr-bench-stop-{i}"
        held = [pool.acquire(SandboxSpec(agreement, (mount,), limits)) for _ in range(2)]
        start = time.perf_counter()
        pool.stop_agreement(agreement)
        stops.append(time.perf_counter() - start)
        for sandbox in held:
            pool.release(sandbox)
    print(f"stop_agreement (2 sandboxes), p50: {p50_ms(stops):6.1f} ms  (target < 1000 ms)")


if __name__ == "__main__":
    main()
