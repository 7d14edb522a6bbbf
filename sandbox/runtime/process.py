"""Process backend: the agent under bubblewrap, for machines without a Docker engine.

Each sandbox is a bubblewrap process tree:
- started by the gateway (root) but *as its own unprivileged uid* (one per live
  sandbox, from ``process_uid_base``), never as root: a root-run bubblewrap maps the
  sandbox to host uid 0, which passes file permission checks and escapes RLIMIT_NPROC;
- in new user, network (loopback only, down), pid, ipc, uts and mount namespaces, with
  further user namespaces disabled, all capabilities dropped, a new session (no TTY
  injection) and ``--die-with-parent``;
- on an empty root: /usr read-only (system libraries), fresh /proc, a minimal /dev,
  small tmpfs /tmp and /run — so the host's /run, and the Docker socket in it, do not
  exist inside — and read-only binds of exactly: the interpreter's prefix, the duckdb and
  pyarrow packages, the agent's four modules, each dataset file at /data/<id>.duckdb and
  the sandbox's socket directory at /run/dsb;
- with rlimits: address space (memory), processes (pids; counted per uid, hence one
  uid per sandbox), no core dumps, few open files.

bubblewrap runs as the sandbox uid, so everything bound must be readable by any uid: the
backend checks that up front and names the path if not (a Python under /root is not: it
then uses Debian's /usr/bin/python3.X of the same version, with the project's packages).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import files as dist_files
from pathlib import Path

import sandbox as sandbox_package
from gateway.errors import RuntimeUnavailable, SandboxFailed
from sandbox.agent import CODE_MODULES
from sandbox.runtime.base import (
    LABEL_AGREEMENT,
    LABEL_OWNER,
    SANDBOX_SOCKET_DIR,
    Backend,
    BackendHandle,
    ExitInfo,
    SandboxRecord,
    StartRequest,
    sandbox_data_path,
    start_ticks,
)
from sandbox.runtime.settings import RuntimeSettings

PACKAGES = ("duckdb", "pyarrow")
LIB_DIR = "/opt/dsb/lib"
APP_DIR = "/opt/dsb/app"
# Address space an idle agent maps beyond its heap: the interpreter, DuckDB and Arrow
# libraries, thread stacks and allocator arenas (measured ~1.1 GB of VSZ; most unused).
ADDRESS_SPACE_BASE_MB = 2048
META_SUFFIX = ".json"


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    uid: int
    fds: list[int] = field(default_factory=list)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        bwrap = bwrap_path()
        if bwrap is None:
            raise RuntimeUnavailable(
                "bubblewrap is not installed: `apt-get install bubblewrap` (or install Docker: "
                "scripts/ensure-docker) to run sandboxes")
        if os.geteuid() != 0:
            raise RuntimeUnavailable(
                "the process backend runs each sandbox as its own unprivileged uid and must be "
                "started as root to do so; use the docker backend otherwise")
        self.bwrap = bwrap
        self.python = _interpreter(settings.process_python)
        self.binds = self._code_binds()
        for source, _ in self.binds:
            _require_world_readable(source)
        self._lock = threading.Lock()
        self._uids: set[int] = set()
        self._running: dict[str, _Running] = {}

    def self_test(self) -> None:
        """Start an empty bubblewrap sandbox once: user namespaces may be disabled here."""
        uid = self.settings.process_uid_base
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [self.bwrap, "--unshare-user", "--unshare-net", "--unshare-pid",
                 "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib64", "/lib64",
                 "--symlink", "usr/lib", "/lib", "--", "/usr/bin/true"],
                user=uid, group=uid, extra_groups=[], capture_output=True, timeout=10,
                check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeUnavailable(f"bubblewrap does not run: {exc}") from None
        if done.returncode != 0:
            raise RuntimeUnavailable(
                "bubblewrap cannot create namespaces here "
                f"({done.stderr.decode(errors='replace').strip()}); unprivileged user "
                "namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1)")

    def _code_binds(self) -> list[tuple[Path, str]]:
        """(host path, sandbox path) of everything the agent needs to run, read-only."""
        binds: list[tuple[Path, str]] = []
        if not str(self.python).startswith("/usr/"):
            prefix = self.python.parent.parent
            binds.append((prefix, str(prefix)))
        for package in PACKAGES:
            try:
                entries = dist_files(package) or []
            except PackageNotFoundError:
                raise RuntimeUnavailable(f"the process backend needs the {package} package "
                                         "installed next to the gateway") from None
            tops = {e.parts[0] for e in entries
                    if not e.parts[0].endswith(("-stubs", "__pycache__"))
                    and e.parts[0] != ".."}
            for top in sorted(tops):
                entry = next(e for e in entries if e.parts[0] == top)
                host = Path(str(entry.locate())).resolve()
                while host.name != top:
                    host = host.parent
                if top.startswith("adbc_"):
                    continue  # an optional driver the agent never imports
                binds.append((host, f"{LIB_DIR}/{top}"))
        package_dir = Path(sandbox_package.__file__).resolve().parent
        for module in CODE_MODULES:
            binds.append((package_dir / module, f"{APP_DIR}/sandbox/{module}"))
        return binds

    # -- lifecycle -------------------------------------------------------------------

    def _allocate_uid(self) -> int:
        with self._lock:
            for uid in range(self.settings.process_uid_base,
                             self.settings.process_uid_base + 4 * self.settings.max_live):
                if uid not in self._uids:
                    self._uids.add(uid)
                    return uid
        raise SandboxFailed("no free sandbox uid (process_uid_base range exhausted)")

    def argv(self, request: StartRequest, command: list[str],
             fds: list[int]) -> list[str]:
        """The bubblewrap command line; ``fds`` receives the descriptors to pass on.

        Public so tests can run a probe under exactly the same confinement.
        """
        limits = request.spec.limits

        def bind(source: Path, target: str) -> list[str]:
            return ["--ro-bind", str(source), target]

        # Paths after the bwrap options are inside the sandbox (its own /tmp), hence noqa.
        args = [
            self.bwrap,
            "--unshare-user", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--disable-userns",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(self.settings.tmpfs_mb << 20), "--tmpfs", "/tmp",  # noqa: S108
            "--size", str(1 << 20), "--tmpfs", "/run",
            "--dir", "/data",
        ]
        for source, target in self.binds:
            args += bind(source, target)
        for dataset in request.spec.datasets:
            path = dataset.path.resolve()
            _require_world_readable(path)
            args += bind(path, sandbox_data_path(dataset.dataset_id))
        args += bind(request.socket_dir, SANDBOX_SOCKET_DIR)
        args += [
            "--remount-ro", "/",
            "--clearenv",
            "--setenv", "PYTHONPATH", f"{LIB_DIR}:{APP_DIR}",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "HOME", "/tmp",  # noqa: S108
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--chdir", "/tmp",  # noqa: S108
            "--",
            *command,
        ]
        # prlimit lowers the limits for itself and then execs bubblewrap, so they hold for
        # every process of the sandbox without a preexec hook in a threaded gateway.
        address_mb = ADDRESS_SPACE_BASE_MB + limits.memory_mb + self.settings.agent_memory_mb
        return [
            "prlimit",
            f"--as={address_mb << 20}",
            f"--nproc={limits.pids}",
            "--core=0",
            "--nofile=256",
            "--",
            *args,
        ]

    def start(self, request: StartRequest) -> BackendHandle:
        uid = self._allocate_uid()
        fds: list[int] = []
        try:
            argv = self.argv(request, [str(self.python), "-s", "-m", "sandbox.agent",
                                       "--socket", f"{SANDBOX_SOCKET_DIR}/agent.sock"], fds)
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv, pass_fds=fds, user=uid, group=uid, extra_groups=[],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                close_fds=True)
        except BaseException:
            self._release(uid, fds)
            raise
        for fd in fds:
            os.close(fd)
        running = _Running(proc=proc, uid=uid)
        with self._lock:
            self._running[request.sandbox_id] = running
        self._write_meta(request, proc.pid)
        return BackendHandle(ref=request.sandbox_id, sandbox_id=request.sandbox_id,
                             extra=running)

    def _release(self, uid: int, fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        with self._lock:
            self._uids.discard(uid)

    def verify_peer(self, handle: BackendHandle, pid: int, uid: int) -> bool:
        running = handle.extra
        return isinstance(running, _Running) and uid == running.uid

    def exit_info(self, handle: BackendHandle) -> ExitInfo | None:
        running = handle.extra
        if not isinstance(running, _Running):
            return ExitInfo(exit_code=None, detail="unknown sandbox")
        code = running.proc.poll()
        if code is None:
            return None
        stderr = b""
        if running.proc.stderr is not None:
            # Non-blocking: a grandchild may still hold the pipe open for a moment.
            with contextlib.suppress(OSError, ValueError):
                fd = running.proc.stderr.fileno()
                os.set_blocking(fd, False)
                stderr = os.read(fd, 4096)
        return ExitInfo(exit_code=code, detail=stderr.decode(errors="replace").strip()[-500:])

    def kill(self, handle: BackendHandle) -> None:
        running = handle.extra
        if isinstance(running, _Running) and running.proc.poll() is None:
            # bubblewrap's children die with it (--die-with-parent, pid namespace).
            with contextlib.suppress(ProcessLookupError):
                running.proc.kill()

    def remove(self, handle: BackendHandle) -> None:
        running = handle.extra
        if isinstance(running, _Running):
            self.kill(handle)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.proc.wait(timeout=5)
            if running.proc.stderr is not None:
                running.proc.stderr.close()
            self._release(running.uid, [])
        with self._lock:
            self._running.pop(handle.sandbox_id, None)
        self._meta_path(handle.sandbox_id).unlink(missing_ok=True)

    # -- discovery: metadata files stand in for container labels ------------------------

    def _meta_path(self, sandbox_id: str) -> Path:
        return self.settings.run_dir / f"{sandbox_id}{META_SUFFIX}"

    def _write_meta(self, request: StartRequest, pid: int) -> None:
        meta = {"labels": request.labels, "pid": pid, "start": start_ticks(pid)}
        path = self._meta_path(request.sandbox_id)
        path.write_text(json.dumps(meta))
        os.chmod(path, 0o600)

    def list_sandboxes(self, *, agreement_id: str | None = None) -> list[SandboxRecord]:
        records = []
        for path in sorted(self.settings.run_dir.glob(f"*{META_SUFFIX}")):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            labels = meta.get("labels", {})
            if agreement_id is not None and labels.get(LABEL_AGREEMENT) != agreement_id:
                continue
            pid = int(meta.get("pid", 0))
            records.append(SandboxRecord(
                ref=path.name.removesuffix(META_SUFFIX),
                sandbox_id=path.name.removesuffix(META_SUFFIX),
                agreement_id=labels.get(LABEL_AGREEMENT, ""),
                owner=labels.get(LABEL_OWNER, ""),
                running=pid > 0 and start_ticks(pid) == meta.get("start"),
            ))
        return records

    def kill_record(self, record: SandboxRecord) -> None:
        with self._lock:
            running = self._running.get(record.sandbox_id)
        if running is not None:
            self.remove(BackendHandle(ref=record.ref, sandbox_id=record.sandbox_id,
                                      extra=running))
            return
        path = self._meta_path(record.sandbox_id)
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads(path.read_text())
            pid = int(meta.get("pid", 0))
            if pid > 0 and start_ticks(pid) == meta.get("start"):
                os.kill(pid, signal.SIGKILL)
        path.unlink(missing_ok=True)
        socket_dir = self.settings.run_dir / record.sandbox_id
        with contextlib.suppress(OSError):
            for child in socket_dir.iterdir():
                child.unlink()
            socket_dir.rmdir()


def _world_readable(path: Path) -> bool:
    """Could any uid read ``path``: every directory above searchable, the path readable?"""
    path = path.resolve()
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return False
    mode = path.stat().st_mode
    return bool(mode & 0o004) and (not path.is_dir() or bool(mode & 0o001))


def _require_world_readable(path: Path) -> None:
    if not _world_readable(path):
        raise SandboxFailed(
            f"{path} is not readable by the sandbox uids; the process backend binds it into "
            "the sandbox as an unprivileged user (make it and its directories readable by "
            "others — dataset files are encrypted — or use the docker backend)")


def _interpreter(configured: Path | None) -> Path:
    """The Python the agent runs on: configured, this one, or the system's same version."""
    if configured is not None:
        return configured.resolve()
    current = Path(sys.executable).resolve()
    if _world_readable(current):
        return current
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = Path("/usr/bin") / version
    if system.exists() and _world_readable(system):
        return system
    raise RuntimeUnavailable(
        f"the process backend runs the agent as an unprivileged uid, which cannot read "
        f"{current}; install {version} where every user can read it (Debian: apt-get install "
        f"{version}) or set DSB_SANDBOX_PROCESS_PYTHON")
