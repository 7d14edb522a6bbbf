"""``dsb serve`` listens on exactly the addresses it is given (loopback and the notebooks'
bridge in the demo), never on every interface by accident."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.hub.stack import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_binds_each_given_address_and_no_other(tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = {**os.environ, "DSB_HOME": str(tmp_path), "DSB_POLICY_DIR": str(ROOT / "policies")}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dsb"), "serve", "--host", "127.0.0.1",
         "--host", "127.0.0.2", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        assert httpx.get(f"http://127.0.0.2:{port}/healthz").status_code == 200
        with pytest.raises(OSError), socket.create_connection(("127.0.0.3", port), timeout=2):
            pass
    finally:
        server.terminate()
        server.wait(20)
