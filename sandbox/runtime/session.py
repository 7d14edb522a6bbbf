"""The gateway's side of one sandbox: start-up handshake, statements, failure mapping.

Start-up: listen on ``<socket_dir>/agent.sock``, let the backend start the agent, accept
exactly one connection, check with SO_PEERCRED that it comes from that sandbox's agent,
remove the socket file (nothing else can connect from then on), then send HELLO with
the secret and the dataset keys and wait for READY.

Every wait has a deadline and every failure leaves the sandbox marked dead, so a caller
is never stalled by a sandbox: a statement past its timeout (plus a grace for the agent
to interrupt itself) kills the sandbox; a closed channel is asked of the backend why
(OOM → ``resource_exhausted``, anything else → ``sandbox_failed``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from gateway.errors import (
    ExecutionError,
    ResourceExhausted,
    SandboxFailed,
    StatementCancelled,
)
from sandbox.protocol import (
    MAX_CONTROL_BYTES,
    SECRET_BYTES,
    Kind,
    ProtocolError,
    decode_json,
    recv_frame,
    seal,
    send_frame,
    send_json,
)
from sandbox.runtime.base import (
    SOCKET_NAME,
    Backend,
    BackendHandle,
    ExitInfo,
    ProgressCallback,
    SandboxSpec,
    StartRequest,
    sandbox_data_path,
)
from sandbox.runtime.result import ChannelLost, StatementResult

_PEERCRED = struct.Struct("3i")  # pid, uid, gid
SEND_TIMEOUT_S = 10.0


class Sandbox:
    """A live sandbox as the gateway holds it. Use through a SandboxRuntime."""

    def __init__(self, backend: Backend, handle: BackendHandle, spec: SandboxSpec,
                 socket_dir: Path, sock: socket.socket, secret: bytes) -> None:
        self.backend = backend
        self.handle = handle
        self.spec = spec
        self.socket_dir = socket_dir
        self.id = handle.sandbox_id
        self.agreement_id = spec.agreement_id
        self.fingerprint = spec.fingerprint()
        self.created = time.monotonic()
        self.last_used = self.created
        self.idle_s = 0.0
        self.leased = False
        # Set when it must not be reused: broken, out of memory, or being stopped.
        self.retired = False
        self.dead = False
        self.stopped_on_request = False
        # Reads change their timeout per call; writes (from any thread, e.g. cancel) go
        # through a duplicate with a fixed one, so neither disturbs the other.
        self._sock = sock
        self._wsock = sock.dup()
        self._wsock.settimeout(SEND_TIMEOUT_S)
        self._secret = secret
        self._seq = 0
        self._send_lock = threading.Lock()
        self._busy = threading.Lock()
        self._running: StatementResult | None = None
        self.agent_pid: int | None = None
        # Digest of the agent's modules as running in the sandbox (agent.code_digest()).
        self.agent_code = ""

    # -- start-up --------------------------------------------------------------------

    @classmethod
    def start(cls, backend: Backend, spec: SandboxSpec, *, run_dir: Path,
              labels: dict[str, str], start_timeout_s: float) -> Sandbox:
        sandbox_id = secrets.token_hex(8)
        socket_dir = run_dir / sandbox_id
        socket_dir.mkdir(mode=0o711)
        path = socket_dir / SOCKET_NAME
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        handle: BackendHandle | None = None
        sock: socket.socket | None = None
        try:
            listener.bind(str(path))
            # The agent runs as another uid; it needs write permission to connect.
            os.chmod(path, 0o666)  # noqa: S103 - only inside a 0711 dir with a random name
            listener.listen(1)
            deadline = time.monotonic() + start_timeout_s
            handle = backend.start(StartRequest(sandbox_id, spec, socket_dir, labels))
            sock = _accept(listener, backend, handle, deadline)
            path.unlink()
            secret = secrets.token_bytes(SECRET_BYTES)
            sandbox = cls(backend, handle, spec, socket_dir, sock, secret)
            try:
                sandbox._hello(deadline)
            except BaseException:
                sandbox._wsock.close()
                raise
            return sandbox
        except BaseException:
            if sock is not None:
                sock.close()
            if handle is not None:
                backend.kill(handle)
                backend.remove(handle)
            _remove_dir(socket_dir)
            raise
        finally:
            listener.close()

    def _hello(self, deadline: float) -> None:
        datasets = [{"dataset_id": d.dataset_id, "path": sandbox_data_path(d.dataset_id),
                     "key": d.key} for d in self.spec.datasets]
        limits = self.spec.limits
        send_json(self._wsock, Kind.HELLO, {
            "secret": self._secret.hex(),
            "datasets": datasets,
            "limits": {"memory_mb": limits.memory_mb, "threads": limits.threads,
                       "timeout_ms": limits.timeout_ms},
        })
        try:
            kind, body = self._recv(deadline, MAX_CONTROL_BYTES)
        except TimeoutError:
            raise SandboxFailed("the sandbox did not report ready in time "
                                "(start_timeout_s)") from None
        except ChannelLost:
            info = self._wait_exit(1.0)
            code = "unknown" if info is None else info.exit_code
            raise SandboxFailed(f"the sandbox stopped during start-up (exit code {code})") \
                from None
        message = decode_json(body)
        if kind is Kind.READY:
            self.agent_pid = int(message.get("pid", 0)) or None
            self.agent_code = str(message.get("code", ""))
            return
        detail = str(message.get("detail", message.get("message", "")))
        raise SandboxFailed(f"the sandbox could not open its datasets: {detail}")

    # -- statements ------------------------------------------------------------------

    def execute(self, sql: str, *, timeout_ms: int | None = None,
                batch_rows: int | None = None, max_rows: int | None = None,
                on_progress: ProgressCallback | None = None,
                grace_ms: int = 2000) -> StatementResult:
        if not self._busy.acquire(blocking=False):
            raise SandboxFailed("this sandbox is already running a statement")
        if self.dead or self.retired:
            self._busy.release()
            raise SandboxFailed("the sandbox is no longer usable; acquire a new one")
        result: StatementResult | None = None
        try:
            limit = self.spec.limits.timeout_ms
            effective = limit if timeout_ms is None else max(1, min(timeout_ms, limit))
            statement_id = uuid.uuid4().hex[:12]
            result = StatementResult(self, statement_id, effective,
                                     time.monotonic() + (effective + grace_ms) / 1000,
                                     on_progress, max_rows)
            self._running = result
            self.last_used = time.monotonic()
            self._send_sealed(Kind.EXEC, {
                "id": statement_id, "sql": sql, "timeout_ms": effective,
                "batch_rows": batch_rows, "max_rows": max_rows,
                "progress_ms": 250 if on_progress is not None else 0,
            })
            # Returns at once: the caller can cancel while the engine works, and errors
            # surface when the schema or the first batch is asked for.
            return result
        except BaseException:
            if result is None:
                self._busy.release()
            else:
                result._finish()  # releases the sandbox for the next statement
            raise

    def cancel(self, *, grace_ms: int = 2000) -> None:
        result = self._running
        if result is None or result.finished:
            return
        # If the agent does not answer the cancel within the grace, the reader kills it.
        result.deadline = min(result.deadline, time.monotonic() + grace_ms / 1000)
        with contextlib.suppress(OSError):
            self._send_sealed(Kind.CANCEL, {"id": result.statement_id})

    def _send_sealed(self, kind: Kind, body: dict[str, Any]) -> None:
        with self._send_lock:
            self._seq += 1
            send_frame(self._wsock, kind, seal(self._secret, kind, self._seq, body))

    def _finished(self, result: StatementResult) -> None:
        if self._running is result:
            self._running = None
            self.last_used = time.monotonic()
            self._busy.release()

    # -- health and failure ----------------------------------------------------------

    def alive(self) -> bool:
        """Cheap liveness check of an idle sandbox: has the agent closed its end?"""
        if self.dead:
            return False
        if self._running is not None:
            return True
        self._sock.settimeout(0)
        try:
            data = self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        # EOF: the agent is gone. Bytes while idle: it is broken. Neither is reusable.
        self.dead = not data
        self.retired = True
        return False

    def _recv(self, deadline: float, max_bytes: int) -> tuple[Kind, bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._sock.settimeout(remaining)
        try:
            return recv_frame(self._sock, max_bytes)
        except TimeoutError:
            raise TimeoutError from None
        except (ProtocolError, OSError) as exc:
            raise ChannelLost(str(exc)) from None

    def channel_lost(self, reason: str) -> ExecutionError:
        """The agent's channel closed: find out why and say it as a service error."""
        self.dead = True
        self.retired = True
        if self.stopped_on_request:
            return StatementCancelled("the agreement's sandboxes were stopped")
        info = self._wait_exit(1.0)
        with contextlib.suppress(SandboxFailed):  # engine gone too: report the sandbox
            self.backend.kill(self.handle)
        if info is not None and info.oom_killed:
            return ResourceExhausted(
                "the sandbox ran out of memory (the scenario's limits.memory_mb); "
                "it has been replaced")
        code = "unknown" if info is None else info.exit_code
        return SandboxFailed(f"the sandbox stopped unexpectedly (exit code {code}); "
                             "it has been replaced")

    def _wait_exit(self, timeout_s: float) -> ExitInfo | None:
        # The container's state can lag the closing of its socket by a few ms.
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.backend.exit_info(self.handle)
            if info is not None or time.monotonic() > deadline:
                return info
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop the sandbox now; in-flight statements end with an error."""
        self.retired = True
        self.backend.kill(self.handle)
        self.dead = True

    def destroy(self) -> None:
        """Kill and free everything the sandbox holds (the socket, its directory)."""
        self.kill()
        with contextlib.suppress(OSError):
            self._sock.close()
            self._wsock.close()
        self.backend.remove(self.handle)
        _remove_dir(self.socket_dir)


def _accept(listener: socket.socket, backend: Backend, handle: BackendHandle,
            deadline: float) -> socket.socket:
    """Accept the agent's one connection; fail fast if the sandbox dies first."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SandboxFailed("the sandbox did not start in time (start_timeout_s)")
        # Blocks without polling on the fast path; only slow starts look at the backend.
        listener.settimeout(min(remaining, 0.5))
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            info = backend.exit_info(handle)
            if info is not None:
                raise SandboxFailed(
                    f"the sandbox exited during start-up (exit code {info.exit_code})"
                    + (f": {info.detail}" if info.detail else "")) from None
            continue
        pid, uid, _gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if backend.verify_peer(handle, pid, uid):
            sock.settimeout(None)
            return sock
        # Not our agent: never send it anything, and keep waiting for the real one.
        sock.close()


def _remove_dir(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        for child in path.iterdir():
            child.unlink(missing_ok=True)
        path.rmdir()
