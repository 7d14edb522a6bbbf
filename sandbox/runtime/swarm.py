"""Swarm backend: one Docker Swarm service per sandbox, placed on this gateway's node.

Why the node of the gateway: the agent's only channel is the Unix socket the gateway
listens on (``session``), checked with SO_PEERCRED and handed to the sandbox by a bind
mount. Keeping that channel means a sandbox keeps *no* network at all (``none``), so
nothing in it can reach another sandbox, the gateway's API or the internet. A cluster
grows by running a gateway on each node (a ``mode: global`` service behind the load
balancer; the gateway is stateless, see the README): each gateway asks Swarm for its
sandboxes on its own node, and Swarm does the rest (resource accounting, task state,
removal, the same API on every node). The alternative — agents reaching a gateway over an
overlay network — would give every sandbox a network interface and a path to its peers.

What a sandbox service gets (the Docker backend's isolation, in Swarm's vocabulary):
- no network: Swarm cannot start a service task with ``none``, so its container is
  disconnected from the default bridge before the gateway answers the agent (see
  ``_cut_network``); read-only root filesystem, a small tmpfs at /tmp;
- all capabilities dropped, the non-root uid, core dumps off, a small open-files limit;
- pids, memory and CPU limits from the scenario (``Resources.Limits``);
- bind mounts, read-only: the dataset files and the sandbox's socket directory;
- log driver ``none``; restart condition ``none`` (a dead agent is replaced by the warm
  pool, never restarted with a stale channel); stop signal SIGKILL;
- labels on the service and its container, as the Docker backend puts them.

Not available through Swarm's API on Docker 20.10 (API 1.41), unlike the Docker backend:
``no-new-privileges`` and ``noexec`` on the tmpfs (both arrived with API 1.44-1.46), and
a swap limit (Swarm sets none; the memory limit still bounds resident memory).

The gateway's engine must be a swarm manager (``docker swarm init`` on one host).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import docker
import docker.errors

from gateway.errors import RuntimeUnavailable, SandboxFailed
from sandbox.runtime import hostpaths
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
)
from sandbox.runtime.docker import (
    NO_ANSWER,
    _gone,
    _no_answer,
    check_readable,
    connect,
    peer_in_container,
    require_image,
    sandbox_filter,
    unless_gone,
)
from sandbox.runtime.settings import RuntimeSettings

SERVICE_PREFIX = "dsb-sandbox-"
SERVICE_ID_LABEL = "com.docker.swarm.service.id"
# Task states before the container exists or while it runs (docker/swarmkit api/types).
LIVE_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready",
                         "starting", "running"})


def _swarm_node(client: docker.DockerClient) -> str:
    """This engine's node id; RuntimeUnavailable unless it is a swarm manager."""
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise RuntimeUnavailable(
            "the Docker engine is not part of a swarm: run `docker swarm init` (one host) "
            "or join it to the cluster, or choose DSB_SANDBOX_RUNTIME=docker")
    if not swarm.get("ControlAvailable"):
        raise RuntimeUnavailable(
            "the Docker engine is a swarm worker; the swarm backend creates services and "
            "needs a manager node (`docker node promote`), or run the gateway on a manager")
    return str(swarm["NodeID"])


class SwarmBackend(Backend):
    name = "swarm"

    def __init__(self, settings: RuntimeSettings, client: docker.DockerClient | None = None):
        self.settings = settings
        self.client = client or connect(settings)
        self.node_id = _swarm_node(self.client)
        require_image(self.client, settings.image)
        self.paths = hostpaths.discover(self.client, settings.host_paths)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, request: StartRequest) -> BackendHandle:
        name = SERVICE_PREFIX + request.sandbox_id
        try:
            service = self.client.api.create_service(
                self._task_template(request), name=name, labels=request.labels,
                mode={"Replicated": {"Replicas": 1}})
        except docker.errors.APIError as exc:
            raise SandboxFailed(f"the sandbox service could not be created: "
                                f"{exc.explanation}") from None
        except NO_ANSWER as exc:
            raise _no_answer(exc) from None
        handle = BackendHandle(ref=str(service["ID"]), sandbox_id=request.sandbox_id)
        try:
            self._cut_network(handle)
        except BaseException:
            self.remove(handle)
            raise
        return handle

    def _cut_network(self, handle: BackendHandle) -> None:
        """Take the task's container off every network before the agent is answered.

        Swarm has no ``none`` network for services (only ``host`` and ``bridge`` are
        predefined), so the container starts on the engine's default bridge. The agent
        runs nothing before the gateway's HELLO, and the gateway accepts its connection
        only after this returns, so no statement ever runs with a network interface.
        """
        deadline = time.monotonic() + self.settings.start_timeout_s
        while True:
            container = self._container_id(handle, deadline)
            if container is None:
                raise SandboxFailed("the sandbox service got no container on this node in "
                                    "time (start_timeout_s); is the node drained or full?")
            try:
                attrs = self.client.api.inspect_container(container)
                for network in (attrs["NetworkSettings"].get("Networks") or {}):
                    self.client.api.disconnect_container_from_network(container, network,
                                                                      force=True)
                return
            except docker.errors.APIError as exc:
                if time.monotonic() > deadline:
                    raise SandboxFailed("the sandbox's container could not be taken off the "
                                        f"network: {exc.explanation}") from None
                time.sleep(0.05)
            except NO_ANSWER as exc:
                raise _no_answer(exc) from None

    def _task_template(self, request: StartRequest) -> dict[str, Any]:
        spec, limits, uid = request.spec, request.spec.limits, self.settings.sandbox_uid
        mounts = [_bind(self.paths.to_host(request.socket_dir), SANDBOX_SOCKET_DIR)]
        for dataset in spec.datasets:
            path = dataset.path.resolve()
            check_readable(path, self.settings)
            mounts.append(_bind(self.paths.to_host(path), sandbox_data_path(dataset.dataset_id)))
        mounts.append({"Type": "tmpfs", "Target": "/tmp",  # noqa: S108 - the task's own /tmp
                       "TmpfsOptions": {"SizeBytes": self.settings.tmpfs_mb << 20,
                                        "Mode": 0o1777}})
        user = f"{uid}:{uid}"
        groups = [str(self.settings.sandbox_gid)] if self.settings.sandbox_gid is not None else []
        memory = (limits.memory_mb + self.settings.agent_memory_mb) << 20
        return {
            "ContainerSpec": {
                "Image": self.settings.image,
                "User": user,
                "Groups": groups,
                "Hostname": "sandbox",
                "Labels": request.labels,
                "ReadOnly": True,
                "Mounts": mounts,
                "CapabilityDrop": ["ALL"],
                "Ulimits": [{"Name": "core", "Soft": 0, "Hard": 0},
                            {"Name": "nofile", "Soft": 256, "Hard": 256}],
                "StopSignal": "SIGKILL",
            },
            "Resources": {"Limits": {"NanoCPUs": int(limits.cpus * 1e9),
                                     "MemoryBytes": memory, "Pids": limits.pids}},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": [f"node.id=={self.node_id}"]},
            "LogDriver": {"Name": "none"},
        }

    def verify_peer(self, handle: BackendHandle, pid: int, uid: int) -> bool:
        container = handle.extra if isinstance(handle.extra, str) else None
        return container is not None and peer_in_container(container, pid, uid, self.settings)

    def _container_id(self, handle: BackendHandle, deadline: float) -> str | None:
        """The task's container on this node (the local engine knows it once created)."""
        if isinstance(handle.extra, str):
            return handle.extra
        while True:
            found = self.client.api.containers(
                all=True, filters={"label": [f"{SERVICE_ID_LABEL}={handle.ref}"]})
            if found:
                handle.extra = str(found[0]["Id"])
                return handle.extra
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def exit_info(self, handle: BackendHandle) -> ExitInfo | None:
        try:
            tasks = self.client.api.tasks(filters={"service": handle.ref})
        except docker.errors.NotFound:
            return ExitInfo(exit_code=None, detail="the service is gone")
        except docker.errors.APIError as exc:
            # A filter naming a removed service is refused rather than empty on some engines.
            if _gone(exc) or exc.status_code == 400:
                return ExitInfo(exit_code=None, detail="the service is gone")
            raise
        except NO_ANSWER:
            return ExitInfo(exit_code=None, detail="the Docker engine did not answer")
        if not tasks:
            # Created but not yet scheduled: still starting, unless the service is gone.
            return None if self._service_exists(handle.ref) else ExitInfo(
                exit_code=None, detail="the service is gone")
        status = tasks[0].get("Status") or {}
        if status.get("State") in LIVE_STATES:
            return None
        container = status.get("ContainerStatus") or {}
        return ExitInfo(exit_code=container.get("ExitCode"),
                        oom_killed=self._oom_killed(container.get("ContainerID")),
                        detail=str(status.get("Err") or status.get("Message") or ""))

    def _service_exists(self, ref: str) -> bool:
        try:
            self.client.api.inspect_service(ref)
        except docker.errors.NotFound:
            return False
        return True

    def _oom_killed(self, container_id: str | None) -> bool:
        """Swarm's task status does not say; the container on this node does (while kept)."""
        if not container_id:
            return False
        try:
            state = self.client.api.inspect_container(container_id)["State"]
        except (docker.errors.APIError, *NO_ANSWER):
            return False
        return bool(state.get("OOMKilled"))

    def kill(self, handle: BackendHandle) -> None:
        # Kill the container at once; removing the service alone waits for the scheduler.
        if isinstance(handle.extra, str):
            unless_gone(self.client.api.kill, handle.extra)
        self.remove(handle)

    def remove(self, handle: BackendHandle) -> None:
        unless_gone(self.client.api.remove_service, handle.ref)

    # -- discovery by label ----------------------------------------------------------

    def list_sandboxes(self, *, agreement_id: str | None = None) -> list[SandboxRecord]:
        records = []
        for service in self.client.api.services(filters=sandbox_filter(agreement_id)):
            spec = service.get("Spec") or {}
            s_labels = spec.get("Labels") or {}
            records.append(SandboxRecord(
                ref=service["ID"],
                sandbox_id=str(spec.get("Name", "")).removeprefix(SERVICE_PREFIX),
                agreement_id=s_labels.get(LABEL_AGREEMENT, ""),
                owner=s_labels.get(LABEL_OWNER, ""),
                running=self.exit_info(BackendHandle(service["ID"], "")) is None,
            ))
        return records

    def kill_record(self, record: SandboxRecord) -> None:
        self.remove(BackendHandle(ref=record.ref, sandbox_id=record.sandbox_id))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _bind(source: str, target: str) -> dict[str, Any]:
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": True}
