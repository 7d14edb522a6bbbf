"""The process (bubblewrap) backend: the same checks where they apply.

Probes run under exactly the sandbox's confinement: the backend's own bubblewrap
command line and rlimits, as a sandbox uid, with the probe in place of the agent.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gateway.errors import ResourceExhausted, StatementCancelled
from sandbox.runtime.base import SandboxSpec, StartRequest
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.process import ProcessBackend

from .conftest import EGRESS_PROBE, Dataset, Listeners, assert_no_egress, spec_for
from .test_docker_isolation import DOCKER_SOCKET_PROBE, PIDS_PROBE, SECRET_PROBE

pytestmark = pytest.mark.bwrap

ENDLESS = "SELECT count(*) FROM range(1000000000000) t(a) WHERE a % 7 = 3"


def run_probe(pool: WarmPool, spec: SandboxSpec, code: str, *args: str) -> tuple[int, str]:
    backend = pool.backend
    assert isinstance(backend, ProcessBackend)
    uid = backend._allocate_uid()
    socket_dir = pool.settings.run_dir / f"probe-{secrets.token_hex(4)}"
    socket_dir.mkdir(mode=0o711)
    fds: list[int] = []
    try:
        argv = backend.argv(StartRequest("probe", spec, socket_dir, {}),
                            [str(backend.python), "-c", code, *args], fds)
        done = subprocess.run(argv, user=uid, group=uid, extra_groups=[], pass_fds=fds,
                              capture_output=True, timeout=60, check=False)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")
    finally:
        backend._release(uid, fds)
        socket_dir.rmdir()


def test_statements_run_and_stream(process_pool: WarmPool, flights: Dataset) -> None:
    sandbox = process_pool.acquire(spec_for("agr-p", flights))
    try:
        result = process_pool.execute(
            sandbox, 'SELECT carrier, count(*) n FROM "ds_flights".main.data GROUP BY 1 ORDER BY 1')
        table = result.read_all()
        assert table.column("carrier").to_pylist() == ["AA", "DL", "UA", "WN"]
        assert sum(table.column("n").to_pylist()) == 50_000
        from sandbox.agent import code_digest

        assert sandbox.agent_code == code_digest()
    finally:
        process_pool.release(sandbox)


IDENTITY_PROBE = r"""
import json, os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps({"uid": os.getuid(), "pids": pids,
                  "cap": status["CapEff"].strip(), "nnp": status["NoNewPrivs"].strip(),
                  "root": sorted(os.listdir("/")), "run": sorted(os.listdir("/run"))}))
"""


def test_namespaces_uid_and_filesystem(process_pool: WarmPool, flights: Dataset) -> None:
    code, out = run_probe(process_pool, spec_for("agr-p", flights), IDENTITY_PROBE)
    assert code == 0, out
    seen = json.loads(out)
    assert seen["uid"] != 0
    assert seen["cap"] == "0000000000000000" and seen["nnp"] == "1"
    assert max(seen["pids"]) < 10  # its own pid namespace: no host process is visible
    assert set(seen["root"]) <= {"bin", "data", "dev", "lib", "lib64", "opt", "proc", "root",
                                 "run", "sbin", "tmp", "usr"}, seen["root"]
    assert seen["run"] == ["dsb"]  # the host's /run (and the Docker socket) is hidden


def test_data_mount_is_read_only(process_pool: WarmPool, flights: Dataset) -> None:
    before = flights.mount.path.read_bytes()
    probe = r"""
import os
out = []
for path in ("/data/flights.duckdb", "/run/dsb/x", "/x", "/usr/x"):
    try:
        with open(path, "ab") as f:
            f.write(b"x")
        out.append(path + ":written")
    except OSError as exc:
        out.append(f"{path}:{exc.errno}")
try:
    os.unlink("/data/flights.duckdb"); out.append("unlink:done")
except OSError as exc:
    out.append(f"unlink:{exc.errno}")
print(" ".join(out))
"""
    code, out = run_probe(process_pool, spec_for("agr-p", flights), probe)
    assert code == 0, out
    assert not any(item.endswith(("written", "done")) for item in out.split()), out
    assert flights.mount.path.read_bytes() == before


def test_no_outbound_connection(process_pool: WarmPool, flights: Dataset,
                                host_listeners: Listeners) -> None:
    code, out = run_probe(process_pool, spec_for("agr-p", flights), EGRESS_PROBE,
                          json.dumps(host_listeners.targets()))
    assert code == 0, out
    outcomes = json.loads(out)
    assert len(outcomes) == len(host_listeners.targets()) >= 6
    assert_no_egress(outcomes)
    time.sleep(0.3)
    assert host_listeners.received == []


def test_no_docker_socket(process_pool: WarmPool, flights: Dataset) -> None:
    code, out = run_probe(process_pool, spec_for("agr-p", flights), DOCKER_SOCKET_PROBE)
    assert code == 0, out
    assert set(json.loads(out).values()) == {"2"}, out


def test_pids_limit_holds(process_pool: WarmPool, flights: Dataset) -> None:
    code, out = run_probe(process_pool, spec_for("agr-p", flights, pids=24), PIDS_PROBE)
    verdict, count, *errno = out.split()
    assert verdict == "refused" and errno == ["11"], out
    assert int(count) < 24


ADDRESS_SPACE_PROBE = r"""
import mmap
maps = []
try:
    for _ in range(256):
        maps.append(mmap.mmap(-1, 64 << 20))  # reserved, never touched: no real memory
    print("mapped", len(maps) * 64)
except (OSError, MemoryError):
    print("refused", len(maps) * 64)
"""


def test_memory_limit_holds(process_pool: WarmPool, flights: Dataset) -> None:
    spec = spec_for("agr-p", flights, memory_mb=64)
    code, out = run_probe(process_pool, spec, ADDRESS_SPACE_PROBE)
    verdict, mapped = out.split()
    assert verdict == "refused", out
    limit_mb = 2048 + 64 + process_pool.settings.agent_memory_mb
    assert int(mapped) <= limit_mb
    # And through the agent: a statement past the scenario's memory ends cleanly.
    sandbox = process_pool.acquire(spec)
    try:
        with pytest.raises(ResourceExhausted):
            process_pool.execute(sandbox, "SELECT count(DISTINCT a || b) FROM (SELECT range a, "
                                 "repeat('x', 40) || range b FROM range(20000000))").read_all()
    finally:
        process_pool.release(sandbox)


def test_key_and_secret_absent_from_environment_and_processes(
        process_pool: WarmPool, flights: Dataset) -> None:
    sandbox = process_pool.acquire(spec_for("agr-p", flights))
    try:
        needles = [flights.key, sandbox._secret.hex()]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                for needle in needles:
                    assert needle.encode() not in data, (pid, part)
        meta = (process_pool.settings.run_dir / f"{sandbox.id}.json").read_text()
        assert all(n not in meta for n in needles)
        # Inside, as the sandbox sees itself.
        code, out = run_probe(process_pool, sandbox.spec, SECRET_PROBE,
                              *(n[::-1] for n in needles))
        assert code == 0 and out.strip() == "hits:", out
    finally:
        process_pool.release(sandbox)


def test_stopping_an_agreement_within_a_second(process_pool: WarmPool, flights: Dataset,
                                               weather: Dataset) -> None:
    busy = process_pool.acquire(spec_for("agr-p-stop", flights))
    idle = process_pool.acquire(spec_for("agr-p-stop", weather))
    process_pool.release(idle)
    result = process_pool.execute(busy, ENDLESS)
    errors: list[BaseException] = []
    ended = threading.Event()

    def consume() -> None:
        try:
            result.read_all()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.2)
    started = time.monotonic()
    assert process_pool.stop_agreement("agr-p-stop") == 2
    # Both process trees gone and the running statement ended, all within one second.
    while any(process_pool.backend.exit_info(s.handle) is None for s in (busy, idle)):
        assert time.monotonic() - started < 1.0, "a sandbox still runs after 1 s"
        time.sleep(0.01)
    assert ended.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    assert isinstance(errors[0], StatementCancelled)
    process_pool.release(busy)
