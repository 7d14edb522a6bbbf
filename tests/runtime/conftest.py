"""Fixtures for the sandbox runtime tests: real engines only, no mocks.

Tests marked ``docker`` need a Docker engine and the SQL image; they skip (saying why)
only when no engine answers. An engine without the image is a failure, not a skip: CI
runs scripts/ensure-docker and images/build sql first. Tests marked ``bwrap`` need
bubblewrap and root (the process backend switches to unprivileged uids).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

from sandbox.engine import DatasetMount
from sandbox.runtime.base import SandboxLimits, SandboxSpec
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.settings import RuntimeSettings

ROWS = 50_000
SIOCGIFADDR = 0x8915


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a Docker engine and the dsb-sql image")
    config.addinivalue_line("markers", "bwrap: needs bubblewrap and root (process backend)")


# -- engines ---------------------------------------------------------------------------


def _docker_reason() -> str | None:
    try:
        import docker
    except ImportError:
        return "the `docker` Python package is not installed"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except docker.errors.DockerException as exc:
        return f"no Docker engine answers ({exc}); run scripts/ensure-docker"
    return None


DOCKER_REASON = _docker_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bwrap_reason = None
    if shutil.which("bwrap") is None:
        bwrap_reason = "bubblewrap is not installed (apt-get install bubblewrap)"
    elif os.geteuid() != 0:
        bwrap_reason = "the process backend needs root to switch to sandbox uids"
    for item in items:
        if DOCKER_REASON and item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason=DOCKER_REASON))
        if bwrap_reason and item.get_closest_marker("bwrap"):
            item.add_marker(pytest.mark.skip(reason=bwrap_reason))


# -- data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    mount: DatasetMount

    @property
    def key(self) -> str:
        assert self.mount.key is not None
        return self.mount.key


def _write_encrypted(path: Path, key: str, table: pa.Table) -> None:
    from gateway.datasets.files import write_table

    write_table(path, key, table)
    os.chmod(path, 0o644)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # World-traversable: the process backend binds files as an unprivileged uid.
    path = Path(tempfile.mkdtemp(prefix="dsb-rt-data-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def flights(data_dir: Path) -> Dataset:
    """An encrypted dataset file with a random key (so a leak of it is recognisable)."""
    key = "dk-" + secrets.token_hex(16)
    path = data_dir / "flights.duckdb"
    table = pa.table({
        "id": pa.array(range(ROWS), pa.int64()),
        "carrier": pa.array([("AA", "UA", "DL", "WN")[i % 4] for i in range(ROWS)]),
        "delay": pa.array([(i * 7) % 120 - 10 for i in range(ROWS)], pa.int32()),
    })
    _write_encrypted(path, key, table)
    return Dataset(DatasetMount("flights", path, key))


@pytest.fixture(scope="session")
def weather(data_dir: Path) -> Dataset:
    key = "dk-" + secrets.token_hex(16)
    path = data_dir / "weather.duckdb"
    table = pa.table({"day": list(range(365)), "rain": [i % 3 for i in range(365)]})
    _write_encrypted(path, key, table)
    return Dataset(DatasetMount("weather", path, key))


def spec_for(agreement: str, *datasets: Dataset, **limits: int | float) -> SandboxSpec:
    base = {"memory_mb": 128, "cpus": 1.0, "pids": 64, "timeout_ms": 10_000}
    base.update(limits)
    return SandboxSpec(agreement, tuple(d.mount for d in datasets),
                       SandboxLimits(**base))  # type: ignore[arg-type]


# -- runtimes --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    # Short path (socket paths are limited to 108 bytes), private to this test session.
    path = Path(f"/tmp/dsb-rt-{secrets.token_hex(4)}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(run_dir: Path) -> RuntimeSettings:
    return RuntimeSettings(run_dir=run_dir, idle_s=60, max_live=8, start_timeout_s=20,
                           grace_ms=1500)


@pytest.fixture
def docker_pool(settings: RuntimeSettings) -> Iterator[WarmPool]:
    from sandbox.runtime.docker import DockerBackend

    if DOCKER_REASON:
        pytest.skip(DOCKER_REASON)
    try:
        backend = DockerBackend(settings)
    except Exception as exc:  # noqa: BLE001 - an engine without the image is a CI error
        pytest.fail(f"{exc} — CI must run `images/build sql` before the tests")
    pool = WarmPool(backend, settings)
    _check_image_is_current(pool)
    yield pool
    pool.close()


_IMAGE_CHECKED: list[str] = []


def _check_image_is_current(pool: WarmPool) -> None:
    """Fail (once) if the image's agent is not the one in this tree: tests would lie."""
    if _IMAGE_CHECKED:
        return
    from sandbox.agent import code_digest

    sandbox = pool.acquire(SandboxSpec("agr-image-check", ()))
    try:
        running = sandbox.agent_code
    finally:
        pool.release(sandbox)
    if running != code_digest():
        pytest.fail(f"the image {pool.settings.image} runs another agent than this source "
                    f"tree ({running} != {code_digest()}): run `images/build sql`")
    _IMAGE_CHECKED.append(running)


@pytest.fixture
def process_pool(settings: RuntimeSettings) -> Iterator[WarmPool]:
    from sandbox.runtime.process import ProcessBackend

    pool = WarmPool(ProcessBackend(settings), settings)
    yield pool
    pool.close()


# -- the host side of egress tests -----------------------------------------------------


def host_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this host: loopback, the main one, each bridge's.

    Asked of the kernel directly (SIOCGIFADDR per interface), so no iproute2 is needed.
    """
    addresses = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            addresses.add(socket.inet_ntoa(reply[20:24]))
    return sorted(addresses)


@dataclass
class Listeners:
    """TCP and UDP listeners this test started, one pair per host address."""

    tcp: dict[str, int] = field(default_factory=dict)
    udp: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, str]] = field(default_factory=list)
    _sockets: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def targets(self) -> list[tuple[str, str, int]]:
        return ([("tcp", a, p) for a, p in self.tcp.items()]
                + [("udp", a, p) for a, p in self.udp.items()])


@pytest.fixture
def host_listeners() -> Iterator[Listeners]:
    listeners = Listeners()
    for address in host_ipv4_addresses():
        tcp = socket.create_server((address, 0))
        tcp.settimeout(0.2)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((address, 0))
        udp.settimeout(0.2)
        listeners.tcp[address] = tcp.getsockname()[1]
        listeners.udp[address] = udp.getsockname()[1]
        listeners._sockets += [tcp, udp]

    def watch(sock: socket.socket, proto: str) -> None:
        while not listeners._stop.is_set():
            try:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    conn.close()
                else:
                    _, peer = sock.recvfrom(64)
            except (TimeoutError, OSError):
                continue
            listeners.received.append((proto, str(peer)))

    threads = [threading.Thread(target=watch, args=(s, "tcp" if s.type == socket.SOCK_STREAM
                                                    else "udp"), daemon=True)
               for s in listeners._sockets]
    for t in threads:
        t.start()
    yield listeners
    listeners._stop.set()
    for t in threads:
        t.join(timeout=1)
    for s in listeners._sockets:
        s.close()


# A probe run inside a sandbox: tries every target, prints one JSON line of outcomes.
EGRESS_PROBE = r"""
import json, socket, sys
results = {}
for proto, host, port in json.loads(sys.argv[1]):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(1.0)
    try:
        if proto == "tcp":
            s.connect((host, port))
            results[f"{proto}:{host}:{port}"] = "connected"
        else:
            s.sendto(b"x", (host, port))
            results[f"{proto}:{host}:{port}"] = "sent"
    except OSError as exc:
        results[f"{proto}:{host}:{port}"] = type(exc).__name__ + ":" + str(exc.errno)
    finally:
        s.close()
print(json.dumps(results))
"""


def assert_no_egress(outcomes: dict[str, str]) -> None:
    """Every host address unreachable; loopback is the sandbox's own, not the host's."""
    for target, outcome in outcomes.items():
        proto, address, _ = target.split(":")
        if address == "127.0.0.1":
            # TCP is refused by the sandbox's own loopback; a UDP datagram may be "sent"
            # into it — the host's listener must still receive nothing.
            assert outcome.startswith("ConnectionRefusedError") or (
                proto == "udp" and outcome == "sent"), (target, outcome)
        else:
            assert outcome == "OSError:101", (target, outcome)  # ENETUNREACH
