"""What a process inside a Docker sandbox can reach — as if the engine were escaped.

Probes run *inside the sandbox container* with ``docker exec`` (same uid, namespaces,
capabilities, cgroups and mounts as the agent), i.e. with the powers an attacker who got
code execution out of DuckDB would have.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sandbox.runtime.pool import WarmPool
from sandbox.runtime.session import Sandbox

from .conftest import EGRESS_PROBE, Dataset, Listeners, assert_no_egress, spec_for

pytestmark = pytest.mark.docker


def exec_in(pool: WarmPool, sandbox: Sandbox, *argv: str) -> tuple[int, str]:
    container = pool.backend.client.containers.get(sandbox.handle.ref)  # type: ignore[attr-defined]
    result = container.exec_run(list(argv), demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace")


def py_in(pool: WarmPool, sandbox: Sandbox, code: str, *args: str) -> tuple[int, str]:
    return exec_in(pool, sandbox, "python3", "-c", code, *args)


def test_statement_streams_arrow_batches(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        result = docker_pool.execute(
            sandbox, 'SELECT id, carrier FROM "ds_flights"."main"."data" ORDER BY id',
            batch_rows=10_000)
        batches = list(result)
        assert [b.num_rows for b in batches] == [10_000] * 5
        assert result.rows == 50_000 and not result.truncated
        assert result.schema.names == ["id", "carrier"]
        capped = docker_pool.execute(sandbox, 'SELECT id FROM "ds_flights".main.data',
                                     max_rows=123).read_all()
        assert capped.num_rows == 123
    finally:
        docker_pool.release(sandbox)


def test_container_is_locked_down(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights, memory_mb=96, pids=40, cpus=0.5))
    try:
        attrs = docker_pool.backend.client.api.inspect_container(sandbox.handle.ref)  # type: ignore[attr-defined]
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Privileged"] is False
        assert host["PidsLimit"] == 40
        assert host["Memory"] == (96 + docker_pool.settings.agent_memory_mb) << 20
        assert host["MemorySwap"] == host["Memory"]
        assert host["NanoCpus"] == 500_000_000
        assert attrs["Config"]["User"] == "10001:10001"
        mounts = {m["Destination"]: m for m in attrs["Mounts"]}
        assert set(mounts) == {"/data/flights.duckdb", "/run/dsb"}
        assert all(m["RW"] is False for m in mounts.values())
        assert set(host["Tmpfs"]) == {"/tmp"} and "noexec" in host["Tmpfs"]["/tmp"]
        code, out = py_in(docker_pool, sandbox,
                          "import os; print(os.getuid(), os.listdir('/sys/class/net'))")
        assert (code, out.split(maxsplit=1)[0]) == (0, "10001")
        assert "'lo'" in out and "eth0" not in out
        code, out = exec_in(docker_pool, sandbox, "cat", "/proc/self/status")
        caps = {line.split(":")[0]: line.split()[1] for line in out.splitlines()
                if line.startswith("Cap")}
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
        assert "NoNewPrivs:\t1" in out
    finally:
        docker_pool.release(sandbox)


WRITE_PROBE = r"""
import os, subprocess
out = []
for path in ("/data/flights.duckdb", "/opt/dsb/app/sandbox/agent.py", "/run/dsb/x", "/x",
             "/etc/passwd"):
    try:
        with open(path, "ab") as f:
            f.write(b"x")
        out.append(f"{path}:written")
    except OSError as exc:
        out.append(f"{path}:{exc.errno}")
try:
    os.unlink("/data/flights.duckdb"); out.append("unlink:done")
except OSError as exc:
    out.append(f"unlink:{exc.errno}")
with open("/tmp/run.sh", "w") as f:
    f.write("#!/bin/sh\necho ran\n")
os.chmod("/tmp/run.sh", 0o755)
try:
    subprocess.run(["/tmp/run.sh"], check=True, capture_output=True); out.append("exec:ran")
except OSError as exc:
    out.append(f"exec:{exc.errno}")
print(" ".join(out))
"""


def test_data_mount_and_root_are_read_only(docker_pool: WarmPool, flights: Dataset) -> None:
    before = flights.mount.path.read_bytes()
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        code, out = py_in(docker_pool, sandbox, WRITE_PROBE)
        assert code == 0, out
        # EROFS (30) for read-only mounts and root; EACCES (13) where both apply.
        for item in out.split():
            assert not item.endswith(("written", "done", "ran")), out
        assert "exec:13" in out  # /tmp is noexec
    finally:
        docker_pool.release(sandbox)
    assert flights.mount.path.read_bytes() == before


def test_no_outbound_connection_to_host_addresses(
        docker_pool: WarmPool, flights: Dataset, host_listeners: Listeners) -> None:
    import socket

    # Control: the listeners do accept from the host itself, so silence below means
    # the sandbox could not reach them, not that nothing listens.
    for address, port in host_listeners.tcp.items():
        socket.create_connection((address, port), timeout=1).close()
    sent_control = len(host_listeners.tcp)
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        # Loopback, the main address and every bridge (docker0 at least).
        assert len(host_listeners.tcp) >= 3, host_listeners.tcp
        code, out = py_in(docker_pool, sandbox, EGRESS_PROBE, json.dumps(host_listeners.targets()))
        assert code == 0, out
        outcomes = json.loads(out)
        assert len(outcomes) == len(host_listeners.targets())
        assert "connected" not in outcomes.values(), outcomes
        assert_no_egress(outcomes)
    finally:
        docker_pool.release(sandbox)
    import time

    time.sleep(0.3)
    assert len(host_listeners.received) == sent_control, host_listeners.received


OTHER_SANDBOX_PROBE = r"""
import json, socket, sys
results = {}
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(1)
    s.connect("\0dsb-rt-listener"); results["abstract"] = "connected"
except OSError as exc:
    results["abstract"] = str(exc.errno)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
    results["tcp"] = "connected"
except OSError as exc:
    results["tcp"] = str(exc.errno)
import os
results["socket_left"] = os.path.exists("/run/dsb/agent.sock")
print(json.dumps(results))
"""

UP_PROBE = r"""
import socket, time
for _ in range(50):
    try:
        socket.create_connection(("127.0.0.1", 47011), 1)
        print("up")
        break
    except OSError:
        time.sleep(0.05)
"""

LISTEN_PROBE = r"""
import socket, time
a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); a.bind("\0dsb-rt-listener"); a.listen()
t = socket.create_server(("127.0.0.1", 47011)); t.listen()
print("listening", flush=True)
time.sleep(30)
"""


def test_no_connection_to_another_sandbox(docker_pool: WarmPool, flights: Dataset,
                                          weather: Dataset) -> None:
    first = docker_pool.acquire(spec_for("agr-rt-a", flights))
    second = docker_pool.acquire(spec_for("agr-rt-b", weather))
    try:
        client = docker_pool.backend.client  # type: ignore[attr-defined]
        a = client.containers.get(first.handle.ref)
        a.exec_run(["python3", "-c", LISTEN_PROBE], detach=True)
        # The listener is really up inside the first sandbox (self-check)...
        code, out = py_in(docker_pool, first, UP_PROBE)
        assert out.strip() == "up"
        # ...and unreachable from the second, by address or by abstract socket name.
        code, out = py_in(docker_pool, second, OTHER_SANDBOX_PROBE, "47011")
        result = json.loads(out)
        assert result["abstract"] != "connected" and result["tcp"] != "connected", result
        assert result["socket_left"] is False  # removed once the agent had connected
        # Neither has an address another sandbox could route to.
        for sb in (first, second):
            attrs = client.api.inspect_container(sb.handle.ref)
            assert attrs["NetworkSettings"]["Networks"].keys() == {"none"}
            assert not attrs["NetworkSettings"]["Networks"]["none"]["IPAddress"]
    finally:
        docker_pool.release(first)
        docker_pool.release(second)


DOCKER_SOCKET_PROBE = r"""
import json, os, socket
results = {}
for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
             "/run/docker/containerd/containerd.sock"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path); results[path] = "connected"
    except OSError as exc:
        results[path] = str(exc.errno)
print(json.dumps(results))
"""


def test_no_docker_socket(docker_pool: WarmPool, flights: Dataset) -> None:
    assert Path("/var/run/docker.sock").exists()  # the host has one: the test means something
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        code, out = py_in(docker_pool, sandbox, DOCKER_SOCKET_PROBE)
        results = json.loads(out)
        assert all(v == "2" for v in results.values()), results  # ENOENT: not even there
    finally:
        docker_pool.release(sandbox)


MEMORY_PROBE = r"""
chunks = []
try:
    for _ in range(2000):
        chunks.append(bytearray(1 << 20))
    print("allocated", len(chunks))
except MemoryError:
    print("memoryerror", len(chunks))
"""


def test_memory_limit_holds(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights, memory_mb=64))
    try:
        code, out = py_in(docker_pool, sandbox, MEMORY_PROBE)
        # The cgroup stops it far below 2000 MB: OOM-killed (137) or refused.
        assert code == 137 or out.startswith("memoryerror"), (code, out)
        # The agent itself is unharmed and still answers.
        answer = docker_pool.execute(sandbox, "SELECT 42 AS x").read_all()
        assert answer.column(0).to_pylist() == [42]
    finally:
        docker_pool.release(sandbox)


PIDS_PROBE = r"""
import os, sys, time
children = []
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(5); os._exit(0)
        children.append(pid)
    print("forked", len(children))
except OSError as exc:
    print("refused", len(children), exc.errno)
finally:
    for pid in children:
        os.kill(pid, 9)
"""


def test_pids_limit_holds(docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights, pids=32))
    try:
        code, out = py_in(docker_pool, sandbox, PIDS_PROBE)
        verdict, count, *errno = out.split()
        assert verdict == "refused" and errno == ["11"], out  # EAGAIN from the pids cgroup
        assert int(count) < 32
    finally:
        docker_pool.release(sandbox)


SECRET_PROBE = r"""
import os, sys
needles = [n[::-1].encode() for n in sys.argv[1:]]
hits = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    for part in ("cmdline", "environ"):
        try:
            data = open(f"/proc/{pid}/{part}", "rb").read()
        except OSError:
            continue
        hits += [f"{pid}/{part}" for n in needles if n in data]
hits += ["env" for n in needles if n in b"".join(k + b"=" + v for k, v in os.environb.items())]
for root, _, files in os.walk("/run"):
    for name in files:
        try:
            data = open(os.path.join(root, name), "rb").read()
        except OSError:
            continue
        hits += [name for n in needles if n in data]
print("hits:" + ",".join(hits))
"""


def test_key_and_secret_absent_from_inspect_env_and_processes(
        docker_pool: WarmPool, flights: Dataset) -> None:
    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        secret = sandbox._secret.hex()
        needles = [flights.key, secret]
        client = docker_pool.backend.client  # type: ignore[attr-defined]
        inspected = json.dumps(client.api.inspect_container(sandbox.handle.ref))
        inspected += json.dumps(client.api.inspect_image(docker_pool.settings.image))
        for needle in needles:
            assert needle not in inspected
        # Reversed, so that the probe's own command line does not contain them.
        code, out = py_in(docker_pool, sandbox, SECRET_PROBE, *(n[::-1] for n in needles))
        assert code == 0 and out.strip() == "hits:", out
        # Host side: no process's command line or environment holds them either.
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for part in ("cmdline", "environ"):
                try:
                    data = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                assert flights.key.encode() not in data, (pid, part)
                assert secret.encode() not in data, (pid, part)
    finally:
        docker_pool.release(sandbox)


METADATA_QUERIES = (
    "SELECT * FROM duckdb_databases()", "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_logs", "SELECT * FROM duckdb_log_contexts()",
    "SELECT * FROM pragma_database_list", "SELECT * FROM duckdb_memory()",
    "SELECT * FROM pragma_metadata_info('ds_flights')", "SELECT current_query()",
    "SELECT * FROM duckdb_secrets()", "SELECT * FROM duckdb_extensions()",
)


def test_key_is_not_readable_through_sql(docker_pool: WarmPool, flights: Dataset) -> None:
    from gateway.errors import DsbError

    sandbox = docker_pool.acquire(spec_for("agr-rt", flights))
    try:
        for sql in METADATA_QUERIES:
            try:
                text = repr(docker_pool.execute(sandbox, sql).read_all().to_pylist())
            except DsbError as exc:  # refused by the locked engine: fine, if key-free too
                text = exc.message + getattr(exc, "detail", "")
            assert flights.key not in text and sandbox._secret.hex() not in text, sql
    finally:
        docker_pool.release(sandbox)


def test_only_the_sandboxs_own_agent_passes_the_peer_check(docker_pool: WarmPool,
                                                          flights: Dataset) -> None:
    first = docker_pool.acquire(spec_for("agr-rt-a", flights))
    second = docker_pool.acquire(spec_for("agr-rt-b", flights))
    try:
        client = docker_pool.backend.client  # type: ignore[attr-defined]
        pid_of = {s.id: client.api.inspect_container(s.handle.ref)["State"]["Pid"]
                  for s in (first, second)}
        uid = docker_pool.settings.sandbox_uid
        backend = docker_pool.backend
        assert backend.verify_peer(first.handle, pid_of[first.id], uid)
        # Another sandbox's agent, or any host process (this test, as root), is refused
        # before it could be sent the secret and the keys.
        assert not backend.verify_peer(first.handle, pid_of[second.id], uid)
        assert not backend.verify_peer(first.handle, os.getpid(), os.getuid())
        assert not backend.verify_peer(first.handle, os.getpid(), uid)
    finally:
        docker_pool.release(first)
        docker_pool.release(second)
