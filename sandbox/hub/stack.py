"""Gateway + JupyterHub as two local processes on loopback ports: for tests and benches.

``local_stack(home, policy_dir)`` initialises the demo installation in ``home``, starts
``uvicorn gateway.asgi:app`` and ``jupyterhub -f jupyterhub_config.py`` on free ports,
waits until both answer, and on exit stops them, the proxy and any notebook container
they left (its log kept in ``home/logs``). Production runs the same two programs from
the compose file; nothing here is used by the service itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.demo import read_tokens
from sandbox.runtime.base import LABEL_NOTEBOOK_AGREEMENT

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LocalStack:
    hub_url: str
    gateway_url: str
    gateway_port: int
    home: Path
    tokens: dict[str, str]  # demo user -> personal API token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


@contextmanager
def local_stack(home: Path, policy_dir: Path) -> Iterator[LocalStack]:
    import docker

    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "dsb"), "demo", "init"], check=True, cwd=ROOT,
                   capture_output=True,
                   env={**os.environ, "DSB_HOME": str(home), "DSB_POLICY_DIR": str(policy_dir)})
    gw_port, hub_port, proxy_api, hub_api = (free_port() for _ in range(4))
    env = {**os.environ, "DSB_HOME": str(home), "DSB_POLICY_DIR": str(policy_dir),
           "DSB_GATEWAY_PORT": str(gw_port), "DSB_HUB_PORT": str(hub_port),
           "DSB_PROXY_API_PORT": str(proxy_api), "DSB_HUB_API_PORT": str(hub_api),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    # The gateway must answer on the notebook bridge too, hence 0.0.0.0 (the firewall
    # admits the bridge only to this port and the hub API).
    gateway = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "0.0.0.0",  # noqa: S104
         "--port", str(gw_port)], cwd=ROOT, env=env,
        stdout=(logs / "gateway.log").open("w"), stderr=subprocess.STDOUT)
    hub = subprocess.Popen(
        [str(bin_dir / "jupyterhub"), "-f", str(ROOT / "jupyterhub_config.py")],
        cwd=home, env=env, stdout=(logs / "hub.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        wait_http(f"http://127.0.0.1:{hub_port}/hub/login")
        yield LocalStack(f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{gw_port}",
                         gw_port, home, read_tokens(home))
    finally:
        for process in (hub, gateway):
            process.terminate()
        for process in (hub, gateway):
            process.wait(15)
        pid_file = home / "hub" / "proxy.pid"
        if pid_file.exists():  # the hub stops its proxy on a clean exit; make sure
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (ProcessLookupError, ValueError):
                pass
        client = docker.from_env()
        for container in client.containers.list(
                all=True, filters={"label": LABEL_NOTEBOOK_AGREEMENT}):
            (logs / f"{container.name}.log").write_bytes(container.logs())
            container.remove(force=True)
