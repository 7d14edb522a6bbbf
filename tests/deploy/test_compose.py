"""The docker-compose stack end to end, as an operator runs it.

Brings docker-compose.yml up on the engine under a project name of its own (its own
ports, notebooks bridge and subnet, so it can run beside anything else), with fresh
secrets and the demo data published by the gateway container on first start; runs an
API query through a real SQL sandbox; logs in to JupyterHub as the demo researcher and
starts a notebook server; checks what that notebook can reach; then takes the stack
down with ``down -v`` and checks that nothing of it is left: containers (its own, and
the sandboxes and notebooks it started), networks, volumes, firewall rules.

Needs the images of ``images/build stack`` (``./run test`` builds them) and Debian's
``docker-compose`` (v1); skipped, saying why, only where no engine or no compose exists.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest
from gateway_support import AGREEMENT, SQL
from pg_support import free_port

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
IMAGES = [f"dsb-{name}:{VERSION}" for name in ("gateway", "hub", "postgres", "sql", "notebook")]
UP_TIMEOUT_S = 300
NOTEBOOK = "agr-lin-flights-aggregate"

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if shutil.which("docker-compose") is None:
        return "docker-compose is not installed (apt-get install docker-compose)"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        return f"no Docker engine answers ({exc}); run scripts/ensure-docker"
    absent = [i for i in IMAGES if not client.images.list(name=i)]
    client.close()
    if absent:
        pytest.fail(f"images missing: {', '.join(absent)}; run `images/build stack`")
    return None


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    gateway_url: str
    hub_url: str
    bridge: str
    net: str

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker-compose", *args], cwd=ROOT, env=self.env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    def tokens(self) -> dict[str, str]:
        done = self.compose("exec", "-T", "gateway", "cat", "/var/lib/dsb/demo-tokens.env")
        assert done.returncode == 0, done.stderr
        pairs = (line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60").stdout[-12_000:]


def _free_subnet(client: docker.DockerClient) -> str:
    used = {cfg.get("Subnet", "") for n in client.networks.list()
            for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []}
    for _ in range(50):
        net = f"172.30.{secrets.randbelow(100) + 120}"
        if f"{net}.0/24" not in used:
            return net
    raise RuntimeError("no free 172.30.x.0/24 subnet for the notebooks network")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    suffix = secrets.token_hex(4)
    project = f"dsbe2e{suffix}"
    secret_dir = tmp_path_factory.mktemp("secrets")
    import_dir = tmp_path_factory.mktemp("import")
    subprocess.run([str(Path(sys.executable).parent / "dsb"), "keys", "deployment",
                    str(secret_dir)], check=True, capture_output=True, timeout=60)
    client = docker.from_env(timeout=30)
    net = _free_subnet(client)
    client.close()
    gateway_port, hub_port = free_port(), free_port()
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "DSB_STACK": project,
           "DSB_SECRETS_DIR": str(secret_dir), "DSB_POLICY_DIR": str(ROOT / "policies"),
           "DSB_IMPORT_DIR": str(import_dir),
           "DSB_DEMO": "1", "DSB_WORKERS": "2", "DSB_GATEWAY_PORT": str(gateway_port),
           "DSB_HUB_PORT": str(hub_port), "DSB_NOTEBOOK_BRIDGE": f"br-{suffix}",
           "DSB_NOTEBOOK_SUBNET": f"{net}.0/24", "DSB_NOTEBOOK_NET": net}
    built = Stack(project, env, f"http://127.0.0.1:{gateway_port}",
                  f"http://127.0.0.1:{hub_port}", f"br-{suffix}", net)
    try:
        # `up` returns once the gateway is healthy (the hub depends on it) and the hub
        # is started; the demo data are published by then.
        up = built.compose("up", "-d", timeout=UP_TIMEOUT_S)
        assert up.returncode == 0, f"{up.stderr}\n{built.logs()}"
        _wait_healthy(built)
        yield built
    except BaseException:
        print(built.logs())
        raise
    finally:
        down = built.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=180)
        assert down.returncode == 0, down.stderr


def _wait_healthy(stack: Stack) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    urls = [f"{stack.gateway_url}/healthz", f"{stack.hub_url}/hub/health"]
    while urls:
        try:
            if httpx.get(urls[0], timeout=3).status_code == 200:
                urls.pop(0)
                continue
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{urls[0]} did not answer\n{stack.logs()}"
        time.sleep(1)


def test_api_query_through_a_sandbox(stack: Stack) -> None:
    token = stack.tokens()["DSB_TOKEN_ACME_ANALYST"]
    with httpx.Client(base_url=stack.gateway_url, timeout=120,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        answer = client.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "succeeded" and len(body["rows"]) >= 10
        assert body["provenance"]["citation"]
    # The audit chain on PostgreSQL verifies against the signing key given as a secret.
    supervisor = stack.tokens()["DSB_TOKEN_WANG"]
    verified = httpx.get(f"{stack.gateway_url}/v1/audit/verify", timeout=60,
                         headers={"Authorization": f"Bearer {supervisor}"})
    assert verified.status_code == 200 and verified.json()["ok"] is True, verified.text
    # The sandbox that ran it is a container of this deployment (labelled for clean-up).
    client = docker.from_env(timeout=30)
    try:
        sandboxes = client.containers.list(
            all=True, filters={"label": ["dsb.sandbox=1", f"dsb.deployment={stack.project}"]})
        assert sandboxes, "no sandbox container of this stack"
        host = sandboxes[0].attrs["HostConfig"]
        assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    finally:
        client.close()


def test_notebook_login_and_spawn(stack: Stack) -> None:
    token = stack.tokens()["DSB_TOKEN_LIN"]
    with httpx.Client(base_url=stack.hub_url, timeout=60) as hub:
        page = hub.get("/hub/login")
        assert page.status_code == 200 and 'name="password"' in page.text
        xsrf = hub.cookies.get("_xsrf") or ""
        login = hub.post("/hub/login?next=", data={"username": "lin", "password": token,
                                                   "_xsrf": xsrf})
        assert login.status_code == 302, login.text[-2000:]
        headers = {"X-XSRFToken": hub.cookies.get("_xsrf") or xsrf}
        spawn = hub.post(f"/hub/api/users/lin/servers/{NOTEBOOK}", headers=headers, json={})
        assert spawn.status_code in (201, 202), spawn.text
        deadline = time.monotonic() + 120
        while True:
            user = hub.get("/hub/api/users/lin", headers=headers).json()
            server = (user.get("servers") or {}).get(NOTEBOOK) or {}
            if server.get("ready"):
                break
            assert time.monotonic() < deadline, f"notebook not ready: {user}\n{stack.logs()}"
            time.sleep(1)
    _check_notebook_reach(stack)


def _check_notebook_reach(stack: Stack) -> None:
    """From inside the notebook: the hub and the gateway answer; the host does not."""
    client = docker.from_env(timeout=30)
    try:
        found = client.containers.list(filters={"label": [
            f"dsb.deployment={stack.project}", f"dsb.notebook.agreement={NOTEBOOK}"]})
        assert len(found) == 1, found
        probe = ("import socket, sys\n"
                 "for host, port in [a.split(':') for a in sys.argv[1:]]:\n"
                 "    s = socket.socket(); s.settimeout(2)\n"
                 "    try: s.connect((host, int(port))); print('open')\n"
                 "    except OSError: print('closed')\n")
        targets = [f"{stack.net}.2:8081", f"{stack.net}.3:8000",
                   f"{stack.net}.1:{stack.env['DSB_GATEWAY_PORT']}"]
        result = found[0].exec_run(["python3", "-c", probe, *targets])
        assert result.output.decode().split() == ["open", "open", "closed"], result.output
    finally:
        client.close()


def test_down_leaves_nothing(stack: Stack) -> None:
    """Runs last: takes the stack down itself and looks for anything of it left."""
    down = stack.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=180)
    assert down.returncode == 0, down.stderr
    client = docker.from_env(timeout=30)
    try:
        for label in (f"com.docker.compose.project={stack.project}",
                      f"dsb.deployment={stack.project}"):
            assert client.containers.list(all=True, filters={"label": label}) == []
        assert client.networks.list(filters={"label": f"com.docker.compose.project="
                                                      f"{stack.project}"}) == []
        assert client.networks.list(names=[f"{stack.project}-notebooks"]) == []
        assert client.volumes.list(filters={"label": f"com.docker.compose.project="
                                                     f"{stack.project}"}) == []
    finally:
        client.close()
    if shutil.which("iptables"):
        rules = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True,
                               check=False).stdout
        assert stack.bridge not in rules
