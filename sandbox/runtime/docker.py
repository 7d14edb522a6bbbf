"""Docker backend: one locked-down container per sandbox.

What a container gets, and why:
- ``network_mode=none``: only a loopback interface; no route to the host, its bridges,
  other containers or the internet. The agent's socket is the only channel.
- read-only root filesystem and a small ``noexec`` tmpfs at /tmp: nothing persists,
  nothing downloaded could be executed.
- all capabilities dropped, ``no-new-privileges``, the non-root uid of the image,
  core dumps off (memory holds dataset keys), a small open-files limit.
- pids, memory (the scenario's plus the agent's own allowance, no swap) and CPU
  limits from the scenario.
- bind mounts, all read-only: each dataset file of the agreement at
  ``/data/<id>.duckdb``, and the sandbox's own socket directory at /run/dsb.
- logging driver ``none``: an engine error can quote data; it must not land in logs.
- labels say which agreement and which gateway it belongs to (for stop and reaping);
  secrets never appear in labels, environment or arguments.

A gateway that itself runs in a container (docker-compose.yml) names its files by its
own mounts; ``hostpaths`` turns them into the host paths the engine binds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Mount, Ulimit

from gateway.errors import RuntimeUnavailable, SandboxFailed
from sandbox.runtime import hostpaths
from sandbox.runtime.base import (
    LABEL_AGREEMENT,
    LABEL_OWNER,
    LABEL_SANDBOX,
    SANDBOX_SOCKET_DIR,
    Backend,
    BackendHandle,
    ExitInfo,
    SandboxRecord,
    StartRequest,
    sandbox_data_path,
)
from sandbox.runtime.settings import RuntimeSettings

CONTAINER_PREFIX = "dsb-sandbox-"
# The engine went away (dockerd stopped, socket gone): not a 4xx/5xx answer, no answer.
NO_ANSWER = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _no_answer(exc: Exception) -> SandboxFailed:
    return SandboxFailed(f"the Docker engine did not answer ({type(exc).__name__}); "
                         "is dockerd running? (scripts/ensure-docker)")


def _gone(exc: docker.errors.APIError) -> bool:
    """404, or 409 for a container already stopping/being removed: nothing left to do."""
    return exc.status_code in (404, 409)


def unless_gone(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    """An engine call that stops or removes something: "already gone" is success."""
    try:
        call(*args, **kwargs)
    except docker.errors.APIError as exc:
        if not _gone(exc):
            raise
    except NO_ANSWER as exc:
        raise _no_answer(exc) from None


def sandbox_filter(agreement_id: str | None = None) -> dict[str, list[str]]:
    """Engine filter for the sandboxes (of one agreement), whoever started them."""
    labels = [f"{LABEL_SANDBOX}=1"]
    if agreement_id is not None:
        labels.append(f"{LABEL_AGREEMENT}={agreement_id}")
    return {"label": labels}


def connect(settings: RuntimeSettings, *, timeout_s: float = 30) -> docker.DockerClient:
    """A client for the engine; RuntimeUnavailable with what to do if none answers."""
    try:
        client = (docker.DockerClient(base_url=settings.docker_host, timeout=int(timeout_s))
                  if settings.docker_host else docker.from_env(timeout=int(timeout_s)))
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(
            "no Docker engine answers "
            f"({settings.docker_host or os.environ.get('DOCKER_HOST', 'local socket')}: {exc}). "
            "Install Debian's docker.io and start dockerd (scripts/ensure-docker does both), "
            "or use the process backend (DSB_SANDBOX_RUNTIME=process, needs bubblewrap)."
        ) from None
    return client


def require_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeUnavailable(
            f"the sandbox image {image} is missing: build it with `images/build sql`"
            " (offline; needs debootstrap, see scripts/ensure-docker)") from None


def check_readable(path: Path, settings: RuntimeSettings) -> None:
    """A dataset file must be readable by the sandbox's uid (or its extra group)."""
    st = path.stat()
    readable = bool(st.st_mode & 0o004) or (
        settings.sandbox_gid is not None
        and st.st_gid == settings.sandbox_gid
        and bool(st.st_mode & 0o040))
    if not readable:
        raise SandboxFailed(
            f"dataset file {path} is not readable by the sandbox user (mode "
            f"{st.st_mode & 0o777:o}); make it readable by others (it is encrypted) or by "
            "the group set as DSB_SANDBOX_SANDBOX_GID")


def peer_in_container(container_id: str, pid: int, uid: int, settings: RuntimeSettings) -> bool:
    """True if the socket peer ``pid``/``uid`` (SO_PEERCRED) is the agent of that container.

    The pid is as this process's pid namespace sees it: a gateway in a container must
    share the host's (compose: ``pid: host``), or every peer reads as pid 0 and fails.
    """
    if uid != settings.sandbox_uid or pid <= 0:
        return False
    # The peer's cgroup path names its container (cgroupfs and systemd drivers alike).
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return container_id in cgroups


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, settings: RuntimeSettings, client: docker.DockerClient | None = None):
        self.settings = settings
        self.client = client or connect(settings)
        require_image(self.client, settings.image)
        self.paths = hostpaths.discover(self.client, settings.host_paths)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, request: StartRequest) -> BackendHandle:
        spec = request.spec
        limits = spec.limits
        mounts = [Mount(target=SANDBOX_SOCKET_DIR, source=self.paths.to_host(request.socket_dir),
                        type="bind", read_only=True)]
        for dataset in spec.datasets:
            path = dataset.path.resolve()
            check_readable(path, self.settings)
            mounts.append(Mount(target=sandbox_data_path(dataset.dataset_id),
                                source=self.paths.to_host(path), type="bind", read_only=True))
        memory = f"{limits.memory_mb + self.settings.agent_memory_mb}m"
        uid = self.settings.sandbox_uid
        options: dict[str, Any] = {
            "name": CONTAINER_PREFIX + request.sandbox_id,
            "user": f"{uid}:{uid}",
            "network_mode": "none",
            "read_only": True,
            # The container's own /tmp, not the host's.
            "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={self.settings.tmpfs_mb}m"},  # noqa: S108
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": limits.pids,
            "mem_limit": memory,
            "memswap_limit": memory,
            "nano_cpus": int(limits.cpus * 1e9),
            "ulimits": [Ulimit(name="core", soft=0, hard=0),
                        Ulimit(name="nofile", soft=256, hard=256)],
            "ipc_mode": "private",
            "hostname": "sandbox",
            "labels": request.labels,
            "log_config": LogConfig(type="none"),
            "mounts": mounts,
            "detach": True,
        }
        if self.settings.sandbox_gid is not None:
            options["group_add"] = [str(self.settings.sandbox_gid)]
        try:
            # create + start rather than run(): run() would try to pull a missing image.
            container = self.client.containers.create(self.settings.image, **options)
        except docker.errors.ImageNotFound:
            raise SandboxFailed(f"the sandbox image {self.settings.image} is missing: "
                                "build it with `images/build sql`") from None
        except docker.errors.APIError as exc:
            raise SandboxFailed(f"the sandbox could not be created: {exc.explanation}") from None
        except NO_ANSWER as exc:
            raise _no_answer(exc) from None
        handle = BackendHandle(ref=container.id or "", sandbox_id=request.sandbox_id)
        try:
            container.start()
        except docker.errors.APIError as exc:
            self.remove(handle)
            raise SandboxFailed(f"the sandbox could not be started: {exc.explanation}") from None
        except NO_ANSWER as exc:
            raise _no_answer(exc) from None
        return handle

    def verify_peer(self, handle: BackendHandle, pid: int, uid: int) -> bool:
        return peer_in_container(handle.ref, pid, uid, self.settings)

    def exit_info(self, handle: BackendHandle) -> ExitInfo | None:
        try:
            state = self.client.api.inspect_container(handle.ref)["State"]
        except docker.errors.NotFound:
            return ExitInfo(exit_code=None, detail="the container is gone")
        except NO_ANSWER:
            return ExitInfo(exit_code=None, detail="the Docker engine did not answer")
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            return None
        return ExitInfo(exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")),
                        detail=str(state.get("Error") or ""))

    def kill(self, handle: BackendHandle) -> None:
        unless_gone(self.client.api.kill, handle.ref)

    def remove(self, handle: BackendHandle) -> None:
        unless_gone(self.client.api.remove_container, handle.ref, force=True)

    # -- discovery by label ----------------------------------------------------------

    def list_sandboxes(self, *, agreement_id: str | None = None) -> list[SandboxRecord]:
        found = self.client.api.containers(all=True, filters=sandbox_filter(agreement_id))
        records = []
        for c in found:
            c_labels = c.get("Labels") or {}
            name = (c.get("Names") or ["/"])[0].lstrip("/")
            records.append(SandboxRecord(
                ref=c["Id"],
                sandbox_id=name.removeprefix(CONTAINER_PREFIX),
                agreement_id=c_labels.get(LABEL_AGREEMENT, ""),
                owner=c_labels.get(LABEL_OWNER, ""),
                running=c.get("State") == "running",
            ))
        return records

    def kill_record(self, record: SandboxRecord) -> None:
        handle = BackendHandle(ref=record.ref, sandbox_id=record.sandbox_id)
        self.kill(handle)
        self.remove(handle)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
