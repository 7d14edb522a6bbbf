"""The sandbox runtime interface and the pieces every backend shares.

    SandboxRuntime (public; implemented by pool.WarmPool over a Backend)
        acquire(spec) -> Sandbox        warm if possible, else started cold
        execute(sandbox, sql, ...) -> StatementResult   Arrow record batches, streamed
        cancel(sandbox)                 interrupt the running statement
        release(sandbox)                back to the warm pool (or retired if broken)
        stop_agreement(agreement_id)    kill every sandbox of an agreement, now
        list_orphans() / reap_orphans() sandboxes a previous gateway left behind
    Backend (docker.DockerBackend, swarm.SwarmBackend, process.ProcessBackend)
        start / kill / remove / exit_info / verify_peer / list_sandboxes

A backend only starts and stops isolated processes; everything said over the socket
(handshake, statements, results) is in ``session`` and identical for all backends.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sandbox.engine import DatasetMount

if TYPE_CHECKING:
    from gateway.policy.models import Limits
    from sandbox.runtime.result import StatementResult
    from sandbox.runtime.session import Sandbox

# Labels (docker) / metadata keys (process) that mark what we started.
LABEL_SANDBOX = "dsb.sandbox"
LABEL_AGREEMENT = "dsb.agreement"
LABEL_OWNER = "dsb.owner"
LABEL_SPEC = "dsb.spec"
# Notebook containers (started by the hub's spawner, not by a runtime backend).
LABEL_NOTEBOOK_AGREEMENT = "dsb.notebook.agreement"
LABEL_NOTEBOOK_USER = "dsb.notebook.user"


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandbox, from the scenario's ``limits``.

    ``memory_mb`` is what a statement may use (DuckDB's memory_limit); the sandbox as a
    whole gets ``memory_mb`` plus the backend's fixed allowance for the agent itself.
    """

    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 64
    timeout_ms: int = 30_000

    @classmethod
    def from_scenario(cls, limits: Limits) -> SandboxLimits:
        return cls(memory_mb=limits.memory_mb, cpus=limits.cpus, pids=limits.pids,
                   timeout_ms=limits.timeout_ms)

    @property
    def threads(self) -> int:
        return max(1, math.ceil(self.cpus))


@dataclass(frozen=True)
class SandboxSpec:
    """What a sandbox is for: one agreement, its dataset files (with keys), its limits."""

    agreement_id: str
    datasets: tuple[DatasetMount, ...]
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        ids = [d.dataset_id for d in self.datasets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"dataset mounted twice in one sandbox: {sorted(ids)}")

    def fingerprint(self) -> str:
        """Identity of the spec: a warm sandbox is reused only for an equal fingerprint.

        Keys enter only as a hash, so the fingerprint can be a container label.
        """
        h = hashlib.sha256()
        h.update(self.agreement_id.encode())
        for d in sorted(self.datasets, key=lambda d: d.dataset_id):
            key_hash = hashlib.sha256((d.key or "").encode()).hexdigest()
            h.update(f"\0{d.dataset_id}\0{d.path.resolve()}\0{key_hash}".encode())
        h.update(repr(self.limits).encode())
        return h.hexdigest()[:16]


def start_ticks(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot: tells a pid's reuse apart."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; the rest is plain.
    return raw.rsplit(")", 1)[1].split()[19]


def sandbox_data_path(dataset_id: str) -> str:
    """Where a dataset file appears inside every sandbox."""
    return f"/data/{dataset_id}.duckdb"


SANDBOX_SOCKET_DIR = "/run/dsb"
SOCKET_NAME = "agent.sock"


@dataclass(frozen=True)
class Progress:
    statement_id: str
    percent: float  # 0..100, or -1 when the engine cannot tell
    elapsed_ms: float


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ExitInfo:
    """How a sandbox ended; ``oom_killed`` distinguishes memory exhaustion from a crash."""

    exit_code: int | None
    oom_killed: bool = False
    detail: str = ""


@dataclass(frozen=True)
class StartRequest:
    sandbox_id: str
    spec: SandboxSpec
    socket_dir: Path
    labels: dict[str, str]


@dataclass
class BackendHandle:
    """A started sandbox as the backend knows it; ``ref`` is its container id or name."""

    ref: str
    sandbox_id: str
    # Backend-private state (the Popen object for the process backend).
    extra: object = None


@dataclass(frozen=True)
class SandboxRecord:
    """A sandbox found by its labels, whoever started it."""

    ref: str
    sandbox_id: str
    agreement_id: str
    owner: str
    running: bool


class Backend(ABC):
    """Starts and stops isolated agents; knows nothing of the protocol."""

    name: ClassVar[str]

    @abstractmethod
    def start(self, request: StartRequest) -> BackendHandle:
        """Start the agent; it will connect to ``<socket_dir>/agent.sock`` by itself."""

    @abstractmethod
    def verify_peer(self, handle: BackendHandle, pid: int, uid: int) -> bool:
        """True if the process that connected (SO_PEERCRED) is this sandbox's agent."""

    @abstractmethod
    def exit_info(self, handle: BackendHandle) -> ExitInfo | None:
        """None while the sandbox runs; how it ended otherwise (also if it is gone)."""

    @abstractmethod
    def kill(self, handle: BackendHandle) -> None:
        """Stop the sandbox now (SIGKILL). Idempotent: a gone sandbox is not an error."""

    @abstractmethod
    def remove(self, handle: BackendHandle) -> None:
        """Free what the sandbox holds (container, state). Idempotent."""

    @abstractmethod
    def list_sandboxes(self, *, agreement_id: str | None = None) -> list[SandboxRecord]:
        """Every sandbox this backend can see on the machine, by label."""

    @abstractmethod
    def kill_record(self, record: SandboxRecord) -> None:
        """Kill and remove a sandbox known only from its labels (orphans, other gateways)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release client resources (connections); sandboxes are not touched."""


class SandboxRuntime(ABC):
    """What the gateway uses: warm sandboxes per agreement, statements, stop and reap."""

    @abstractmethod
    def acquire(self, spec: SandboxSpec, *, idle_s: float | None = None) -> Sandbox:
        """A ready sandbox leased to the caller until ``release``.

        ``idle_s`` sets how long it stays warm after release (per agreement).
        Raises SandboxFailed if one cannot be started, ResourceExhausted if the maximum
        number of live sandboxes is reached and none can be evicted.
        """

    @abstractmethod
    def execute(
        self,
        sandbox: Sandbox,
        sql: str,
        *,
        timeout_ms: int | None = None,
        batch_rows: int | None = None,
        max_rows: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> StatementResult:
        """Run one already-rewritten SELECT; the result streams as Arrow record batches."""

    def run(self, spec: SandboxSpec, sql: str, *, timeout_ms: int | None = None,
            batch_rows: int | None = None, max_rows: int | None = None,
            on_progress: ProgressCallback | None = None,
            idle_s: float | None = None) -> StatementResult:
        """acquire + execute; the sandbox is released as soon as the result is finished
        (read to the end, failed, or closed — use it as a context manager)."""
        sandbox = self.acquire(spec, idle_s=idle_s)
        try:
            result = self.execute(sandbox, sql, timeout_ms=timeout_ms, batch_rows=batch_rows,
                                  max_rows=max_rows, on_progress=on_progress)
        except BaseException:
            self.release(sandbox)
            raise
        result.add_finish_callback(lambda: self.release(sandbox))
        return result

    @abstractmethod
    def cancel(self, sandbox: Sandbox) -> None:
        """Interrupt the statement running in ``sandbox`` (it ends with ``cancelled``)."""

    @abstractmethod
    def release(self, sandbox: Sandbox) -> None:
        """Return a leased sandbox: warm for its idle time, or removed if it broke."""

    @abstractmethod
    def stop_agreement(self, agreement_id: str) -> int:
        """Kill every sandbox of the agreement (running statements end); returns how many."""

    @abstractmethod
    def list_orphans(self) -> Sequence[SandboxRecord]:
        """Sandboxes on this machine not owned by this runtime (e.g. before a restart)."""

    @abstractmethod
    def reap_orphans(self) -> int:
        """Kill and remove every orphan; returns how many."""

    @abstractmethod
    def close(self) -> None:
        """Stop every sandbox this runtime owns."""
