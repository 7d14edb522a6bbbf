"""The swarm backend on a single-node swarm: a real query through a sandbox service.

The engine is made a swarm manager for this module only if it was not one already
(``docker swarm init --advertise-addr 127.0.0.1``), and leaves the swarm afterwards only
in that case: a developer's own swarm is never touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import docker
import pytest

from gateway.errors import RuntimeUnavailable
from sandbox.runtime.pool import WarmPool
from sandbox.runtime.select import select_backend
from sandbox.runtime.settings import RuntimeSettings

from .conftest import DOCKER_REASON, Dataset, spec_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _exec(client: docker.DockerClient, container: object, *argv: str) -> tuple[int, str]:
    result = client.containers.get(str(container)).exec_run(list(argv))
    return result.exit_code, (result.output or b"").decode(errors="replace")


def _swarm_state(client: docker.DockerClient) -> str:
    return str((client.info().get("Swarm") or {}).get("LocalNodeState", ""))


@pytest.fixture(scope="module")
def swarm() -> Iterator[docker.DockerClient]:
    if DOCKER_REASON:
        pytest.skip(DOCKER_REASON)
    client = docker.from_env(timeout=60)
    created = _swarm_state(client) != "active"
    # `swarm init` makes this bridge and `swarm leave` keeps it: remove what we made.
    had_gwbridge = bool(client.networks.list(names=["docker_gwbridge"]))
    if created:
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    try:
        yield client
    finally:
        if created:
            subprocess.run(["docker", "swarm", "leave", "--force"], check=True,
                           capture_output=True, timeout=60)
            if not had_gwbridge:
                for network in client.networks.list(names=["docker_gwbridge"]):
                    network.remove()
        client.close()


@pytest.fixture
def swarm_pool(swarm: docker.DockerClient, settings: RuntimeSettings) -> Iterator[WarmPool]:
    chosen = settings.model_copy(update={"runtime": "swarm", "labels": {"dsb.test": "swarm"}})
    pool = WarmPool(select_backend(chosen), chosen)
    yield pool
    pool.close()


# First: the module's swarm fixture has not made the engine a manager yet.
def test_a_worker_or_a_lone_engine_is_refused_with_what_to_do(
        settings: RuntimeSettings) -> None:
    if DOCKER_REASON:
        pytest.skip(DOCKER_REASON)
    client = docker.from_env(timeout=30)
    try:
        if _swarm_state(client) == "active":
            pytest.skip("the engine is in a swarm; the refusal is for engines outside one")
        with pytest.raises(RuntimeUnavailable, match="docker swarm init"):
            select_backend(settings.model_copy(update={"runtime": "swarm"}))
    finally:
        client.close()


def test_a_query_runs_in_a_swarm_service(swarm_pool: WarmPool, swarm: docker.DockerClient,
                                         flights: Dataset) -> None:
    sandbox = swarm_pool.acquire(spec_for("agr-swarm", flights, memory_mb=96, pids=48))
    try:
        result = swarm_pool.execute(
            sandbox, 'SELECT carrier, count(*) AS n FROM "ds_flights".main.data '
                     "GROUP BY carrier ORDER BY carrier")
        table = result.read_all()
        assert table.column("carrier").to_pylist() == ["AA", "DL", "UA", "WN"]
        assert sum(table.column("n").to_pylist()) == 50_000

        service = swarm.api.inspect_service(sandbox.handle.ref)
        spec = service["Spec"]
        assert spec["Labels"]["dsb.agreement"] == "agr-swarm"
        assert spec["Labels"]["dsb.test"] == "swarm"
        task = spec["TaskTemplate"]
        container_spec = task["ContainerSpec"]
        assert container_spec["ReadOnly"] is True
        assert container_spec["CapabilityDrop"] == ["ALL"]
        assert container_spec["User"] == "10001:10001"
        assert task["Resources"]["Limits"]["Pids"] == 48
        assert task["RestartPolicy"]["Condition"] == "none"
        # No network: the Unix socket is the agent's only channel.
        container = swarm.api.inspect_container(sandbox.handle.extra)
        assert not container["NetworkSettings"]["Networks"]
        code, interfaces = _exec(swarm, sandbox.handle.extra, "cat", "/proc/net/dev")
        assert code == 0 and [line.split(":")[0].strip() for line in
                              interfaces.splitlines()[2:]] == ["lo"]
        assert container["HostConfig"]["LogConfig"]["Type"] == "none"
    finally:
        swarm_pool.release(sandbox)


def test_stop_agreement_removes_its_services(swarm_pool: WarmPool, swarm: docker.DockerClient,
                                             flights: Dataset) -> None:
    sandbox = swarm_pool.acquire(spec_for("agr-swarm-stop", flights))
    swarm_pool.release(sandbox)
    assert swarm_pool.stop_agreement("agr-swarm-stop") >= 1
    left = swarm.api.services(filters={"label": ["dsb.agreement=agr-swarm-stop"]})
    assert left == []
