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

from sandbox.hub.stack import local_stack

docker = pytest.importorskip("docker")
pytest.importorskip("jupyterhub")
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SERVER = "agr-lin-residents-sandbox"
EXPIRED = "agr-lin-expired"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    try:
        docker.from_env().images.get("dsb-notebook:0.1.0")
    except Exception as exc:  # noqa: BLE001 - any missing piece means: cannot run here
        pytest.skip(f"docker or the notebook image is missing: {exc}")
    if not shutil.which("configurable-http-proxy") or not Path(CHROMIUM).exists():
        pytest.skip("configurable-http-proxy or chromium is missing")
    home = tmp_path_factory.mktemp("hub-home")
    with local_stack(home, _policies_with_an_expired_agreement(home)) as stack:
        yield {"url": stack.hub_url, "gateway": stack.gateway_url,
               "gw_port": str(stack.gateway_port), "home": str(home), **stack.tokens}


def _policies_with_an_expired_agreement(home: Path) -> Path:
    """The demo policies plus ``agr-lin-expired`` (ended 2025-12-31), signed by a test key.

    The demo provider's private key is not in the repository, so a test provider key is
    made and trusted in this copy only.
    """
    policies = home / "policies"
    shutil.copytree(ROOT / "policies", policies)
    env = {**os.environ, "DSB_HOME": str(home), "DSB_POLICY_DIR": str(policies)}
    dsb = [str(Path(sys.executable).parent / "dsb")]
    subprocess.run([*dsb, "keys", "init", "--provider", "test-provider"], check=True, cwd=ROOT,
                   env=env, capture_output=True)
    source = (policies / "agreements" / f"{SERVER}.yaml").read_text()
    body = source.split("signature:")[0]
    body = body.replace(f"id: {SERVER}", f"id: {EXPIRED}")
    body = body.replace("valid_from: '2026-01-01'", "valid_from: '2025-01-01'")
    body = body.replace("valid_until: '2027-12-31'", "valid_until: '2025-12-31'")
    target = policies / "agreements" / f"{EXPIRED}.yaml"
    target.write_text(body)
    subprocess.run([*dsb, "agreement", "sign", str(target), "--key-id", "test-provider"],
                   check=True, cwd=ROOT, env=env, capture_output=True)
    return policies


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


@pytest.fixture(scope="module")
def lab(hub: dict[str, str], browser: object) -> Iterator[object]:
    """lin's JupyterLab on the residents sandbox with one notebook open, kernel idle."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    started = time.monotonic()
    _login(page, hub, "lin", hub["lin"])
    page.goto(f"{hub['url']}/hub/spawn/lin/{SERVER}")
    page.wait_for_url(re.compile(rf".*/user/lin/{SERVER}/lab.*"), timeout=90_000)
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # Usable = the kernel answers; typing before that loses keystrokes.
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).first.wait_for(timeout=60_000)
    print(f"login to usable JupyterLab: {time.monotonic() - started:.1f} s")
    page.screenshot(path=str(SHOTS / "notebook-lab.png"))
    yield page
    page.close()


def test_researcher_queries_and_cannot_reach_out(hub: dict[str, str], lab: object) -> None:
    page = lab
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


def test_magic_datasets_and_the_read_only_scenario_view(lab: object) -> None:
    page = lab
    out = _run_cell(page, "%%sql by_district\nSELECT district, count(*) AS n FROM residents "
                    "GROUP BY district", 2)
    assert "district" in out, out
    out = _run_cell(page, (
        "import sandbox, pyarrow.parquet as pq, pyarrow.compute as pc\n"
        "info = sandbox.datasets()\n"
        "print('datasets', [(d['id'], bool(d['citation']), d['mounted_at']) for d in info])\n"
        "t = pq.read_table('/data/residents.parquet')\n"
        "print('has-name', 'name' in t.column_names)\n"
        "print('min-age', pc.min(t['age']).as_py())\n"
        "print('phone-len', max(len(p) for p in t['phone'].to_pylist() if p))\n"
        "print('id-len', max(len(str(i)) for i in t['resident_id'].to_pylist()))\n"
        "print('magic-rows', len(by_district))\n"
        "try:\n    open('/data/x', 'w'); print('data WRITABLE')\n"
        "except OSError:\n    print('data-readonly')\n"), 3)
    page.screenshot(path=str(SHOTS / "notebook-view.png"))
    assert "datasets [('residents', True, '/data/residents.parquet')]" in out, out
    # The scenario's view: no name column, adults only, phones cut to 3 characters,
    # resident ids replaced by their keyed hash (not the 18-character id).
    assert "has-name False" in out and "phone-len 3" in out, out
    assert int(re.search(r"min-age (\d+)", out).group(1)) >= 18, out
    assert "id-len 18" not in out, out
    assert "magic-rows 16" in out and "data-readonly" in out, out


def test_airlock_round_trip_from_a_cell(hub: dict[str, str], lab: object) -> None:
    import json
    import urllib.request

    page = lab
    out = _run_cell(page, (
        "import sandbox\n"
        "by_district.to_csv('by_district.csv', index=False)\n"
        "ok = sandbox.export('by_district.csv', 'counts by district for the paper')\n"
        "print('safe', ok['id'], ok['check']['verdict'])\n"
        "people = sandbox.sql('SELECT resident_id, income FROM residents LIMIT 3')\n"
        "people.to_csv('people.csv', index=False)\n"
        "bad = sandbox.export('people.csv', 'a few rows')\n"
        "print('leaky', bad['id'], bad['check']['verdict'],\n"
        "      sorted(f['rule'] for f in bad['check']['findings']))\n"), 4)
    page.screenshot(path=str(SHOTS / "notebook-airlock.png"))
    safe = re.search(r"safe (\d+) passed", out)
    leaky = re.search(r"leaky (\d+) failed", out)
    assert safe and leaky and "identifier_column" in out, out

    def call(method: str, path: str, token: str) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 - the test's own gateway on loopback
            hub["gateway"] + path, method=method, data=b"{}" if method == "POST" else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    export, disclosive = safe.group(1), leaky.group(1)
    # The requester cannot approve her own export; a disclosive table cannot be approved.
    assert call("POST", f"/v1/exports/{export}/approve", hub["lin"])[0] == 403
    status, body = call("POST", f"/v1/exports/{disclosive}/approve", hub["wang"])
    assert status == 409 and json.loads(body)["code"] == "export_disclosive"
    assert call("POST", f"/v1/exports/{export}/approve", hub["wang"])[0] == 200
    status, released = call("GET", f"/v1/exports/{export}/file", hub["lin"])
    assert status == 200
    assert released.startswith(b"# ") and b"residents" in released.split(b"district,n")[0]
    assert b"district,n\n" in released


def test_suspension_stops_the_server_and_a_new_start_is_refused(hub: dict[str, str],
                                                                lab: object) -> None:
    import urllib.request

    engine = docker.from_env()

    def servers() -> list[object]:
        return engine.containers.list(filters={"label": [
            f"dsb.notebook.agreement={SERVER}", "dsb.notebook.user=lin"]})

    def act(action: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the test's own gateway on loopback
            f"{hub['gateway']}/v1/agreements/{SERVER}/{action}", method="POST",
            data=b'{"reason": "notebook suspension test"}',
            headers={"Authorization": f"Bearer {hub['wang']}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200

    assert servers(), "the lab fixture's server should be running"
    started = time.monotonic()
    act("suspend")
    try:
        while servers():
            assert time.monotonic() - started < 15, "notebook server still up after 15 s"
            time.sleep(0.2)
        stopped = time.monotonic() - started
        print(f"suspension to stopped notebook server: {stopped:.1f} s")
        page = lab
        # The hub may take a moment to record the stop; until then a spawn request
        # waits on the old server. Asking again until the refusal shows is the user's
        # experience too.
        deadline = time.monotonic() + 30
        while True:
            page.goto(f"{hub['url']}/hub/spawn/lin/{SERVER}")
            page.wait_for_load_state()
            if "is suspended" in page.inner_text("body"):
                break
            assert time.monotonic() < deadline, page.inner_text("body")
            time.sleep(1)
        page.screenshot(path=str(SHOTS / "notebook-suspended.png"))
        assert not servers()
    finally:
        act("resume")


def test_aggregate_server_gets_no_data_but_queries_through_the_gateway(
        hub: dict[str, str], lab: object) -> None:
    page = lab
    agreement = "agr-lin-flights-aggregate"
    page.goto(f"{hub['url']}/hub/spawn/lin/{agreement}")
    page.wait_for_url(re.compile(rf".*/user/lin/{agreement}/lab.*"), timeout=90_000)
    page.locator(".jp-LauncherCard[data-category='Notebook']").first.click(timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle")).first.wait_for(timeout=60_000)
    out = _run_cell(page, (
        "import os\nfrom sandbox import sql\n"
        "print('data', sorted(os.listdir('/data')) if os.path.isdir('/data') else 'absent')\n"
        "print('origins', len(sql('SELECT origin, count(*) AS n FROM flights GROUP BY origin')))\n"
        ), 0)
    page.screenshot(path=str(SHOTS / "notebook-aggregate.png"))
    assert "data []" in out or "data absent" in out, out
    assert "origins 3" in out, out
    engine = docker.from_env()
    (container,) = engine.containers.list(filters={"label": f"dsb.notebook.agreement={agreement}"})
    assert not [m for m in container.attrs["Mounts"] if m.get("Destination") == "/data"]


@pytest.mark.parametrize(("user", "path", "why"), [
    ("wang", None, "role supervisor does not get notebooks"),
    ("acme-analyst", "agr-acme-flights-records", "does not allow the notebook channel"),
    ("lin", EXPIRED, "expired"),
])
def test_refused_users_cannot_start_a_server(hub: dict[str, str], browser: object, user: str,
                                             path: str | None, why: str) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    _login(page, hub, user, hub[user])
    if path is not None:
        page.goto(f"{hub['url']}/hub/spawn/{user}/{path}")
        page.wait_for_load_state()
        page.get_by_text(why).first.wait_for(timeout=30_000)
    assert why in page.content()
    page.screenshot(path=str(SHOTS / f"notebook-refused-{user}.png"))
    engine = docker.from_env()
    started = engine.containers.list(filters={"label": f"dsb.notebook.user={user}"})
    assert path is None or not [c for c in started
                                if c.labels.get("dsb.notebook.agreement") == path]
    if path is None:  # refused at login: no server of theirs at all
        assert not started
    context.close()


def test_user_without_notebook_agreement_sees_why(hub: dict[str, str], browser: object) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    _login(page, hub, "lin", "dsb_wrong-token")
    assert "unknown or expired API token" in page.content()
    page.screenshot(path=str(SHOTS / "notebook-refused.png"))
