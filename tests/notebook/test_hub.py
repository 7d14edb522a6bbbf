"""Real hub, real containers, real browser: login, JupyterLab, a query, blocked network.

One gateway and one hub for the module (each a subprocess on loopback ports); the
notebook containers are the project's own image on the internal notebook network.
Skipped when Docker, the notebook image, the proxy or chromium are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")
pytest.importorskip("jupyterhub")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SERVER = "agr-lin-residents-sandbox"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    try:
        client = docker.from_env()
        client.images.get("dsb-notebook:0.1.0")
    except Exception as exc:  # noqa: BLE001 - any missing piece means: cannot run here
        pytest.skip(f"docker or the notebook image is missing: {exc}")
    if not shutil.which("configurable-http-proxy") or not Path(CHROMIUM).exists():
        pytest.skip("configurable-http-proxy or chromium is missing")
    home = tmp_path_factory.mktemp("hub-home")
    subprocess.run([sys.executable, "-c", "from pathlib import Path; from gateway.settings "
                    "import Settings; from gateway.demo import init_demo; list(init_demo("
                    f"Settings(home=Path({str(home)!r}), policy_dir=Path('policies'))))"],
                   check=True, cwd=ROOT)
    gw_port, hub_port, proxy_api, hub_api = (_free_port() for _ in range(4))
    env = {**os.environ, "DSB_HOME": str(home), "DSB_POLICY_DIR": str(ROOT / "policies"),
           "DSB_GATEWAY_PORT": str(gw_port), "DSB_HUB_PORT": str(hub_port),
           "DSB_PROXY_API_PORT": str(proxy_api), "DSB_HUB_API_PORT": str(hub_api),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    logs = home / "logs"
    logs.mkdir()
    # The gateway must answer on the notebook bridge too, hence 0.0.0.0 (the firewall
    # admits the bridge only to this port and the hub API).
    gateway = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway.asgi:app", "--host", "0.0.0.0",  # noqa: S104
         "--port", str(gw_port)], cwd=ROOT, env=env,
        stdout=(logs / "gateway.log").open("w"), stderr=subprocess.STDOUT)
    hub_proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(ROOT / "jupyterhub_config.py")],
        cwd=home, env=env, stdout=(logs / "hub.log").open("w"), stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        _wait_http(f"http://127.0.0.1:{hub_port}/hub/login")
        tokens = dict(line.split("=", 1) for line in
                      (home / "demo-tokens.env").read_text().split())
        yield {"url": f"http://127.0.0.1:{hub_port}", "lin": tokens["DSB_TOKEN_LIN"],
               "rival": tokens["DSB_TOKEN_ACME_ANALYST"], "gw_port": str(gw_port),
               "home": str(home)}
    finally:
        hub_proc.terminate()
        gateway.terminate()
        hub_proc.wait(15)
        gateway.wait(15)
        pid_file = home / "hub" / "proxy.pid"
        if pid_file.exists():  # the hub stops its proxy on a clean exit; make sure
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (ProcessLookupError, ValueError):
                pass
        for container in client.containers.list(all=True, filters={"name": "jupyter-"}):
            if container.labels.get("hub.jupyter.org/servername") is not None:
                (logs / f"{container.name}.log").write_bytes(container.logs())
                container.remove(force=True)


@pytest.fixture(scope="module")
def browser(hub: dict[str, str]) -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _login(page: object, hub: dict[str, str], user: str, token: str) -> None:
    page.goto(f"{hub['url']}/hub/login")  # type: ignore[attr-defined]
    page.fill("#username_input", user)  # type: ignore[attr-defined]
    page.fill("#password_input", token)  # type: ignore[attr-defined]
    page.click("#login_submit")  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


def _run_cell(page: object, code: str, index: int) -> str:
    cells = page.locator(".jp-Notebook .jp-Cell")  # type: ignore[attr-defined]
    editor = cells.nth(index).locator(".cm-content")
    editor.click()
    page.keyboard.insert_text(code)  # type: ignore[attr-defined]
    page.keyboard.press("Shift+Enter")  # type: ignore[attr-defined]
    output = cells.nth(index).locator(".jp-OutputArea-output")
    output.first.wait_for(timeout=60_000)
    page.wait_for_function(  # type: ignore[attr-defined]
        "i => !document.querySelectorAll('.jp-Notebook .jp-Cell')[i]"
        ".querySelector('.jp-InputPrompt').textContent.includes('*')", arg=index,
        timeout=60_000)
    return str(cells.nth(index).locator(".jp-OutputArea").inner_text())


def test_researcher_queries_and_cannot_reach_out(hub: dict[str, str], browser: object) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))  # noqa: S104 - the host service the container must not reach
    listener.listen()
    port = listener.getsockname()[1]
    # A routed destination (what "the internet" looks like from the notebook network):
    # a listener in one of the project's own containers on Docker's default bridge.
    outside = docker.from_env().containers.run(
        "dsb-notebook:0.1.0", ["python3", "-m", "http.server", "8000"], detach=True,
        remove=True, labels={"dsb.test": "egress-target"})
    outside.reload()
    outside_ip = outside.attrs["NetworkSettings"]["IPAddress"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    started = time.monotonic()
    _login(page, hub, "lin", hub["lin"])
    page.goto(f"{hub['url']}/hub/spawn/lin/{SERVER}")
    page.wait_for_url(re.compile(rf".*/user/lin/{SERVER}/lab.*"), timeout=90_000)
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # Usable = the kernel answers; typing before that loses keystrokes.
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).first.wait_for(timeout=60_000)
    ready = time.monotonic() - started
    page.screenshot(path=str(SHOTS / "notebook-lab.png"))
    out = _run_cell(page, "from sandbox import sql\n"
                    "df = sql('SELECT district, count(*) AS n FROM residents GROUP BY district "
                    "ORDER BY district')\nprint(len(df), 'rows;', df.attrs['citation'][:40])\n"
                    "df", 0)
    page.screenshot(path=str(SHOTS / "notebook-sql.png"))
    assert "rows;" in out and "district" in out, out
    probe = (
        "import socket, os, json, urllib.request\n"
        "def probe(host, port):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close(); return 'OPEN'\n"
        "    except OSError as e: return 'BLOCKED'\n"
        "routes = [l.split()[1] for l in open('/proc/net/route').read().splitlines()[1:]]\n"
        "print('default-route', '00000000' in routes)\n"
        f"print('host-listener', probe('172.30.77.1', {port}))\n"
        f"print('docker0-listener', probe('172.17.0.1', {port}))\n"
        f"print('routed-listener', probe({outside_ip!r}, 8000))\n"
        "req = urllib.request.Request(os.environ['DSB_GATEWAY_URL'] + "
        "'/v1/agreements/agr-lin-residents-sandbox/usage', headers={'Authorization': "
        "'Bearer ' + os.environ['DSB_TOKEN']})\n"
        "try:\n    urllib.request.urlopen(req); print('admin OPEN')\n"
        "except urllib.error.HTTPError as e: print('admin', e.code)\n"
        "print('gateway', probe(os.environ['DSB_GATEWAY_URL'].split('//')[1].split(':')[0], "
        f"{hub['gw_port']}))\n"
    )
    out = _run_cell(page, probe, 1)
    page.screenshot(path=str(SHOTS / "notebook-network.png"))
    listener.close()
    outside.remove(force=True)
    # Docker 20.10 gives internal networks a default route via the host; it must lead
    # nowhere: a routed listener (stand-in for the internet) is unreachable.
    assert "routed-listener BLOCKED" in out, out
    assert "host-listener BLOCKED" in out and "docker0-listener BLOCKED" in out, out
    assert "admin 403" in out and "gateway OPEN" in out, out
    print(f"login to usable JupyterLab: {ready:.1f} s")


def test_user_without_notebook_agreement_sees_why(hub: dict[str, str], browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    _login(page, hub, "lin", "dsb_wrong-token")
    assert "unknown or expired API token" in page.content()
    page.screenshot(path=str(SHOTS / "notebook-refused.png"))
