"""Bad input and faults on the Docker backend: none of them crashes or stalls the caller."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.errors import (
    EngineError,
    QueryRejected,
    ResourceExhausted,
    SandboxFailed,
    StatementCancelled,
    StatementTimeout,
)
from sandbox.protocol import Kind, seal, send_frame
from sandbox.runtime.base import Progress
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.settings import RuntimeSettings

from .conftest import Dataset, spec_for

pytestmark = pytest.mark.docker

# Runs until interrupted: DuckDB checks for interrupts between chunks.
ENDLESS = "SELECT count(*) FROM range(1000000000000) t(a) WHERE a % 7 = 3"


def running(pool: WarmPool, ref: str) -> bool:
    state = pool.backend.client.api.inspect_container(ref)["State"]  # type: ignore[attr-defined]
    return bool(state["Running"])


def test_warm_sandbox_is_reused_and_spec_change_replaces_it(
        docker_pool: WarmPool, flights: Dataset, weather: Dataset) -> None:
    spec = spec_for("agr-warm", flights)
    first = docker_pool.acquire(spec)
    docker_pool.release(first)
    started = time.perf_counter()
    again = docker_pool.acquire(spec)
    assert again is first and time.perf_counter() - started < 0.05
    docker_pool.release(again)
    # Another dataset set for the same agreement: a new sandbox; the old one goes.
    other = docker_pool.acquire(spec_for("agr-warm", flights, weather))
    assert other is not first
    docker_pool.release(other)
    assert first not in docker_pool.live()


def test_lru_eviction_and_max_live(flights: Dataset, settings: RuntimeSettings) -> None:
    from sandbox.runtime.docker import DockerBackend

    small = settings.model_copy(update={"max_live": 2})
    pool = WarmPool(DockerBackend(small), small)
    try:
        a = pool.acquire(spec_for("agr-a", flights))
        pool.release(a)
        b = pool.acquire(spec_for("agr-b", flights))
        pool.release(b)
        again = pool.acquire(a.spec)
        assert again is a
        pool.release(again)  # a is now the most recently used
        c = pool.acquire(spec_for("agr-c", flights))
        assert {s.id for s in pool.live()} == {a.id, c.id}  # b, least recently used, went
        d = pool.acquire(spec_for("agr-d", flights))  # evicts a (c is leased)
        with pytest.raises(ResourceExhausted, match="DSB_SANDBOX_MAX_LIVE"):
            pool.acquire(spec_for("agr-e", flights))  # c and d are both leased
        pool.release(c)
        pool.release(d)
    finally:
        pool.close()


def test_idle_sandbox_is_stopped_after_its_idle_time(docker_pool: WarmPool,
                                                     flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-idle", flights), idle_s=0.5)
    docker_pool.release(sandbox)
    deadline = time.monotonic() + 5
    while sandbox in docker_pool.live() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox not in docker_pool.live()


def test_timeout_interrupts_and_the_sandbox_stays_usable(docker_pool: WarmPool,
                                                         flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights, timeout_ms=5000))
    try:
        started = time.monotonic()
        with pytest.raises(StatementTimeout) as caught:
            docker_pool.execute(sandbox, ENDLESS, timeout_ms=400).read_all()
        assert caught.value.code == "timeout"
        assert 0.35 < time.monotonic() - started < 2.0
        # A caller may shorten the scenario's timeout but never lengthen it.
        result = docker_pool.execute(sandbox, "SELECT 1 AS one", timeout_ms=10**9)
        assert result.timeout_ms == 5000 and result.read_all().num_rows == 1
    finally:
        docker_pool.release(sandbox)


def test_memory_exhaustion_is_resource_exhausted_and_replaced(docker_pool: WarmPool,
                                                              flights: Dataset) -> None:
    spec = spec_for("agr-mem", flights, memory_mb=64)
    sandbox = docker_pool.acquire(spec)
    with pytest.raises(ResourceExhausted) as caught:
        docker_pool.execute(sandbox, "SELECT count(DISTINCT a || b) FROM (SELECT range a, "
                            "repeat('x', 40) || range b FROM range(20000000))").read_all()
    assert caught.value.code == "resource_exhausted"
    docker_pool.release(sandbox)
    fresh = docker_pool.acquire(spec)
    try:
        assert fresh is not sandbox
        assert docker_pool.execute(fresh, "SELECT 1").read_all().num_rows == 1
    finally:
        docker_pool.release(fresh)


def test_killed_container_mid_statement_is_sandbox_failed_then_replaced(
        docker_pool: WarmPool, flights: Dataset) -> None:
    spec = spec_for("agr-kill", flights)
    sandbox = docker_pool.acquire(spec)
    result = docker_pool.execute(sandbox, ENDLESS)
    client = docker_pool.backend.client  # type: ignore[attr-defined]
    threading.Timer(0.3, lambda: client.api.kill(sandbox.handle.ref)).start()
    started = time.monotonic()
    with pytest.raises(SandboxFailed, match="replaced"):
        result.read_all()
    assert time.monotonic() - started < 3
    docker_pool.release(sandbox)
    fresh = docker_pool.acquire(spec)
    try:
        assert fresh is not sandbox
        assert docker_pool.execute(fresh, "SELECT 2").read_all().num_rows == 1
    finally:
        docker_pool.release(fresh)


def test_container_killed_while_idle_is_noticed(docker_pool: WarmPool, flights: Dataset) -> None:
    spec = spec_for("agr-kill-idle", flights)
    sandbox = docker_pool.acquire(spec)
    docker_pool.release(sandbox)
    docker_pool.backend.client.api.kill(sandbox.handle.ref)  # type: ignore[attr-defined]
    time.sleep(0.2)
    fresh = docker_pool.acquire(spec)
    try:
        assert fresh is not sandbox
        assert docker_pool.execute(fresh, "SELECT 3").read_all().num_rows == 1
    finally:
        docker_pool.release(fresh)


def test_cancel_and_progress(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    seen: list[Progress] = []
    try:
        result = docker_pool.execute(
            sandbox, 'SELECT count(*) FROM "ds_flights".main.data a, range(100000000) r '
            "WHERE (a.id + r.range) % 1000003 = 0", on_progress=seen.append)
        threading.Timer(0.8, docker_pool.cancel, args=(sandbox,)).start()
        started = time.monotonic()
        with pytest.raises(StatementCancelled):
            result.read_all()
        assert time.monotonic() - started < 2.5
        assert seen and all(p.statement_id == result.statement_id for p in seen)
        assert any(p.percent > 0 for p in seen), seen
        assert docker_pool.execute(sandbox, "SELECT 4").read_all().num_rows == 1
    finally:
        docker_pool.release(sandbox)


def test_only_one_select_runs(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        for sql in ("COPY (SELECT 1) TO '/tmp/x.csv'", "CREATE TEMP MACRO count(x) AS 1",
                    "SET VARIABLE x = 1", "SELECT 1; SELECT 2", "ATTACH ':memory:' AS m",
                    "EXPLAIN SELECT 1", "PRAGMA enable_profiling", "CALL pragma_version()"):
            with pytest.raises(QueryRejected) as caught:
                docker_pool.execute(sandbox, sql).read_all()
            assert caught.value.code == "sandbox_select_only", sql
        # File access from a SELECT fails in the engine; the message stays generic.
        with pytest.raises(EngineError) as engine_error:
            docker_pool.execute(sandbox, "SELECT * FROM read_text('/etc/passwd')").read_all()
        assert engine_error.value.message == "the statement failed in the engine"
        assert "passwd" in engine_error.value.detail or engine_error.value.detail
        assert docker_pool.execute(sandbox, "SELECT 5").read_all().num_rows == 1
    finally:
        docker_pool.release(sandbox)


def test_frames_without_the_gateways_mac_end_the_sandbox(docker_pool: WarmPool,
                                                         flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        forged = seal(b"\0" * 32, Kind.EXEC, sandbox._seq + 1, {"id": "x", "sql": "SELECT 1"})
        send_frame(sandbox._wsock, Kind.EXEC, forged)
        deadline = time.monotonic() + 3
        while running(docker_pool, sandbox.handle.ref) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(docker_pool, sandbox.handle.ref)
        assert not sandbox.alive()
    finally:
        docker_pool.release(sandbox)


def test_replayed_frame_ends_the_sandbox(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        docker_pool.execute(sandbox, "SELECT 1").read_all()
        replay = seal(sandbox._secret, Kind.EXEC, sandbox._seq, {"id": "y", "sql": "SELECT 1"})
        send_frame(sandbox._wsock, Kind.EXEC, replay)
        deadline = time.monotonic() + 3
        while running(docker_pool, sandbox.handle.ref) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(docker_pool, sandbox.handle.ref)
    finally:
        docker_pool.release(sandbox)


def test_stopping_an_agreement_stops_its_sandboxes_within_a_second(
        docker_pool: WarmPool, flights: Dataset, weather: Dataset) -> None:
    busy = docker_pool.acquire(spec_for("agr-stop", flights))
    idle = docker_pool.acquire(spec_for("agr-stop", weather))
    docker_pool.release(idle)
    bystander = docker_pool.acquire(spec_for("agr-other", flights))
    result = docker_pool.execute(busy, ENDLESS)
    outcome: list[BaseException] = []
    ended = threading.Event()

    def consume() -> None:
        try:
            result.read_all()
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    assert docker_pool.stop_agreement("agr-stop") == 2
    # Both containers stopped and the running statement ended, all within one second.
    while running(docker_pool, busy.handle.ref) or running(docker_pool, idle.handle.ref):
        assert time.monotonic() - started < 1.0, "a sandbox still runs after 1 s"
        time.sleep(0.01)
    assert ended.wait(max(0.0, 1.0 - (time.monotonic() - started))), "the statement ran on"
    assert isinstance(outcome[0], StatementCancelled)
    docker_pool.release(busy)
    try:
        assert docker_pool.execute(bystander, "SELECT 6").read_all().num_rows == 1
    finally:
        docker_pool.release(bystander)


ORPHAN_GATEWAY = r"""
import sys, time
from pathlib import Path
from sandbox.engine import DatasetMount
from sandbox.runtime import RuntimeSettings, SandboxSpec, WarmPool
from sandbox.runtime.docker import DockerBackend
settings = RuntimeSettings(run_dir=Path(sys.argv[1]))
pool = WarmPool(DockerBackend(settings), settings)
key = sys.stdin.readline().strip()
mount = DatasetMount("flights", Path(sys.argv[2]), key)
sandbox = pool.acquire(SandboxSpec("agr-orphan", (mount,)))
print(sandbox.handle.ref, flush=True)
time.sleep(60)
"""


def test_orphans_of_a_dead_gateway_are_listed_and_reaped(
        docker_pool: WarmPool, flights: Dataset, settings: RuntimeSettings) -> None:
    mine = docker_pool.acquire(spec_for("agr-mine", flights))
    # A gateway process that dies without cleaning up.
    gateway = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_GATEWAY, str(settings.run_dir), str(flights.mount.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert gateway.stdout is not None and gateway.stdin is not None
        gateway.stdin.write(flights.key.encode() + b"\n")
        gateway.stdin.close()
        ref = gateway.stdout.readline().decode().strip()
        assert ref, "the child gateway did not start a sandbox"
        assert ref not in {o.ref for o in docker_pool.list_orphans()}  # its owner lives
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=5)
        orphans = {o.ref: o for o in docker_pool.list_orphans()}
        assert ref in orphans and orphans[ref].agreement_id == "agr-orphan"
        assert mine.handle.ref not in orphans
        assert docker_pool.reap_orphans() >= 1
        assert ref not in {r.ref for r in docker_pool.backend.list_sandboxes()}
    finally:
        gateway.kill()
        docker_pool.release(mine)


def test_gateway_does_not_trust_the_agent_to_keep_max_rows(docker_pool: WarmPool,
                                                           flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        result = docker_pool.execute(sandbox, 'SELECT id FROM "ds_flights".main.data')
        result.max_rows = 100  # as if the agent ignored the cap it was given
        with pytest.raises(SandboxFailed, match="more rows than max_rows"):
            result.read_all()
        assert sandbox.dead
    finally:
        docker_pool.release(sandbox)


FILL_MEMORY = r"""
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
"""


def test_agent_killed_by_the_kernel_oom_killer_is_resource_exhausted(
        docker_pool: WarmPool, flights: Dataset) -> None:
    spec = spec_for("agr-oom", flights, memory_mb=64)
    sandbox = docker_pool.acquire(spec)
    result = docker_pool.execute(sandbox, ENDLESS)
    client = docker_pool.backend.client  # type: ignore[attr-defined]
    # From the host, make the agent the OOM killer's first choice, then fill the
    # sandbox's memory: the kernel takes the agent, as it would if a statement had blown
    # up the agent itself (the sandbox cannot lower scores: no capabilities).
    agent_pid = client.api.inspect_container(sandbox.handle.ref)["State"]["Pid"]
    Path(f"/proc/{agent_pid}/oom_score_adj").write_text("1000")
    client.containers.get(sandbox.handle.ref).exec_run(["python3", "-c", FILL_MEMORY],
                                                       detach=True)
    started = time.monotonic()
    with pytest.raises(ResourceExhausted, match="ran out of memory"):
        result.read_all()
    assert time.monotonic() - started < 5
    state = docker_pool.backend.client.api.inspect_container(sandbox.handle.ref)["State"]  # type: ignore[attr-defined]
    assert state["OOMKilled"] is True and sandbox.dead
    docker_pool.release(sandbox)
    fresh = docker_pool.acquire(spec)
    try:
        assert fresh is not sandbox
        assert docker_pool.execute(fresh, "SELECT 7").read_all().num_rows == 1
    finally:
        docker_pool.release(fresh)


def test_run_releases_the_sandbox_when_the_result_is_done(docker_pool: WarmPool,
                                                          flights: Dataset) -> None:
    spec = spec_for("agr-run", flights)
    with docker_pool.run(spec, 'SELECT count(*) AS n FROM "ds_flights".main.data') as result:
        assert result.read_all().column("n").to_pylist() == [50_000]
    (sandbox,) = [s for s in docker_pool.live() if s.agreement_id == "agr-run"]
    assert not sandbox.leased
    # Closing a result early cancels the statement and still releases the sandbox.
    with docker_pool.run(spec, ENDLESS) as result:
        pass
    assert not sandbox.leased and sandbox.alive()
    with pytest.raises(StatementTimeout):
        docker_pool.run(spec, ENDLESS, timeout_ms=200).read_all()
    assert not sandbox.leased
