"""Paths as the Docker engine sees them, for a gateway that itself runs in a container.

A bind mount names a path on the engine's host. A gateway on the host gives its own
paths; a gateway in a container (docker-compose) holds its dataset files and socket
directories on volumes mounted somewhere in its own filesystem, which the engine knows
by other names (``/var/lib/docker/volumes/<name>/_data``). ``HostPaths`` maps one to the
other through the gateway container's own mounts, found by inspecting that container:

    /var/lib/dsb/data/flights-v1.duckdb   (in the gateway container, on volume "data")
    -> /var/lib/docker/volumes/dsb_data/_data/flights-v1.duckdb   (what the engine binds)

A path on no mount (the container's own root filesystem) cannot be given to a sandbox;
asking for one is an error that names the path.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import docker
import docker.errors

from gateway.errors import SandboxFailed

# Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from
# <docker root>/containers/<id>/ into every container: the id of the one we are in.
_CONTAINER_FILE = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\s")


@dataclass(frozen=True)
class HostPaths:
    """(path in this container, path on the engine's host) pairs, longest first."""

    mounts: tuple[tuple[PurePosixPath, PurePosixPath], ...] = ()
    container_id: str | None = None

    def to_host(self, path: Path) -> str:
        if self.container_id is None:
            return str(path)
        inside = PurePosixPath(path)
        for target, source in self.mounts:
            if inside == target or target in inside.parents:
                return str(source / inside.relative_to(target))
        raise SandboxFailed(
            f"{path} is not on a volume or bind mount of the gateway container, so the engine "
            "cannot give it to a sandbox; mount the data and socket directories as volumes "
            "(see docker-compose.yml)")


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The id of the container this process runs in, or None on a host."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return None
    found = _CONTAINER_FILE.search(text)
    return found.group(1) if found else None


def discover(client: docker.DockerClient, mode: str = "auto") -> HostPaths:
    """The translation for this process: identity on a host or with ``mode='off'``."""
    if mode == "off":
        return HostPaths()
    candidates = [c for c in (own_container_id(),) if c]
    if Path("/.dockerenv").exists():  # in a container whose mounts hide the id: its hostname
        candidates.append(socket.gethostname())
    for candidate in candidates:
        try:
            attrs = client.api.inspect_container(candidate)
        except docker.errors.NotFound:
            continue
        mounts = sorted(
            ((PurePosixPath(m["Destination"]), PurePosixPath(m["Source"]))
             for m in attrs.get("Mounts", []) if m.get("Source")),
            key=lambda pair: len(pair[0].parts), reverse=True)
        return HostPaths(tuple(mounts), container_id=str(attrs["Id"]))
    return HostPaths()
