"""The console in Debian's chromium (Playwright), in English and Chinese.

A real uvicorn server on 127.0.0.1 serves the same demo installation as the API tests;
one browser per module, one context per user and language. Screenshots go to
``artifacts/screenshots/`` (kept by CI as test artefacts).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.console.i18n import MESSAGES
from gateway.services import Services
from tests.api.conftest import auth

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("artifacts/screenshots")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
LANGS = ("en", "zh")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")


@pytest.fixture(scope="module")
def base_url(services: Services) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services=services), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield found
        found.close()


def open_as(browser, base_url: str, token: str, lang: str):  # type: ignore[no-untyped-def]
    """A logged-in page for one user in one language (logged in through the form)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # The same path as the cookie the language link sets, so that link replaces it.
    context.add_cookies([{"name": "dsb_lang", "value": lang, "domain": "127.0.0.1",
                          "path": "/console"}])
    page = context.new_page()
    page.goto(base_url + "/console/login")
    page.fill("#token", token)
    page.click("#signin")
    page.wait_for_load_state()
    return page


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def act_on_row(page, row: str, action: str, reason: str, status: str) -> None:  # type: ignore[no-untyped-def]
    """Submit a row's lifecycle form (with its reason) and check the status it shows."""
    form = page.locator(f"{row} form.act-{action}")
    form.locator("input[name=reason]").fill(f"{action}: {reason}")
    form.locator("button").click()
    page.wait_for_load_state()
    assert page.inner_text(f"{row} .status") == status


def h1(page) -> str:  # type: ignore[no-untyped-def]
    return page.inner_text("h1")


@pytest.mark.parametrize("lang", LANGS)
def test_supervisor_finds_a_rejected_query_and_its_explanation(
        browser, base_url: str, client: TestClient, tokens: dict[str, str], lang: str) -> None:
    marker = f"probe_{lang}_{int(time.time() * 1000)}"
    refused = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
        "agreement": "agr-acme-flights-aggregate",
        "sql": f"SELECT tailnum AS {marker} FROM flights"})
    assert refused.status_code >= 400, refused.text
    code = refused.json()["code"]
    page = open_as(browser, base_url, tokens["wang"], lang)
    assert h1(page) == MESSAGES[lang]["audit.title"]
    assert MESSAGES[lang]["audit.chain.ok"] in page.inner_text("#chain")
    page.fill("input[name=user]", "acme-analyst")
    page.select_option("select[name=outcome]", "rejected")
    page.click("#apply")
    page.wait_for_load_state()
    row = page.locator("tr.event", has_text=marker).first
    assert row.get_attribute("data-action") == "query.rejected"
    assert marker in row.locator("pre.sql").inner_text()
    assert row.locator("code.code").inner_text() == code
    assert row.locator("p.reason").inner_text().strip()
    assert MESSAGES[lang]["audit.explanation"] in row.inner_text()
    # Every row on the filtered page is a rejection by that user.
    actions = page.locator("tr.event").evaluate_all("rs => rs.map(r => r.dataset.action)")
    assert set(actions) == {"query.rejected"}
    shot(page, f"audit-rejected-{lang}")
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_every_page_renders_translated(browser, base_url: str, tokens: dict[str, str],
                                       lang: str) -> None:
    page = open_as(browser, base_url, tokens["wang"], lang)
    for name, key in (("audit", "audit.title"), ("agreements", "agreements.title"),
                      ("datasets", "datasets.title"), ("objections", "objections.title"),
                      ("complaints", "complaints.title"), ("misuse", "misuse.title"),
                      ("reports", "reports.title"), ("airlock", "airlock.title"),
                      ("warnings", "warnings.title")):
        page.goto(f"{base_url}/console/{name}")
        assert h1(page) == MESSAGES[lang][key], name
        assert page.inner_text("nav").startswith(MESSAGES[lang]["nav.audit"])
        shot(page, f"page-{name}-{lang}")
    # The switch link flips the language of the page it is on.
    page.click("#lang")
    page.wait_for_load_state()
    assert h1(page) == MESSAGES["zh" if lang == "en" else "en"]["warnings.title"]
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_objection_filed_marked_and_answered(browser, base_url: str, tokens: dict[str, str],
                                             lang: str) -> None:
    note = f"wrong carrier name ({lang})"
    lin = open_as(browser, base_url, tokens["lin"], lang)
    lin.goto(base_url + "/console/objections")
    lin.select_option("#file-objection select[name=dataset]", "airlines")
    lin.fill("#file-objection input[name=field]", "name")
    lin.fill("#file-objection input[name=description]", note)
    lin.click("#file-objection button")
    lin.wait_for_load_state()
    assert lin.locator(".done").count() == 1
    lin.goto(base_url + "/console/datasets")
    assert "#" in lin.inner_text("#ds-airlines .marks")
    shot(lin, f"objection-marked-{lang}")
    lin.context.close()
    provider = open_as(browser, base_url, tokens["provider-office"], lang)
    provider.goto(base_url + "/console/objections")
    row = provider.locator("tr", has_text=note).first
    row.locator("input[name=answer]").fill("checked against the source: fixed")
    row.locator("button").click()
    provider.wait_for_load_state()
    assert provider.locator("tr", has_text=note).first.locator(".status").inner_text() == \
        "closed"
    shot(provider, f"objection-answered-{lang}")
    provider.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_complaint_suspends_then_restores_after_fix(
        browser, base_url: str, tokens: dict[str, str], lang: str) -> None:
    note = f"fleet plan leaked ({lang})"
    rival = open_as(browser, base_url, tokens["rival"], lang)
    rival.goto(base_url + "/console/complaints")
    rival.select_option("#file-complaint select[name=dataset]", "planes")
    rival.select_option("#file-complaint select[name=kind]", "trade_secret")
    rival.fill("#file-complaint input[name=description]", note)
    rival.click("#file-complaint button")
    rival.wait_for_load_state()
    shot(rival, f"complaint-filed-{lang}")
    rival.context.close()
    provider = open_as(browser, base_url, tokens["provider-office"], lang)
    provider.goto(base_url + "/console/complaints")
    for resolution, status in (("suspend", "suspended"),
                               ("restore_after_fix", "restored_after_fix")):
        row = provider.locator("tr", has_text=note).first
        row.locator("select[name=resolution]").select_option(resolution)
        row.locator("input[name=reason]").fill(f"{resolution} per review")
        row.locator("button").click()
        provider.wait_for_load_state()
        assert provider.locator("tr", has_text=note).first.locator(".status").inner_text() \
            == status
        provider.goto(base_url + "/console/datasets")
        expected = "suspended" if resolution == "suspend" else "available"
        assert provider.inner_text("#ds-planes .status") == expected
        shot(provider, f"complaint-{resolution}-{lang}")
        provider.goto(base_url + "/console/complaints")
    provider.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_supervisor_records_and_publishes_misuse_and_suspends_an_agreement(
        browser, base_url: str, client: TestClient, tokens: dict[str, str], lang: str) -> None:
    page = open_as(browser, base_url, tokens["wang"], lang)
    page.goto(base_url + "/console/misuse")
    violation = f"token shared with a third party ({lang})"
    page.fill("#record-misuse input[name=subject]", "rival")
    page.fill("#record-misuse input[name=violation]", violation)
    page.select_option("#record-misuse select[name=measure]", "warn")
    page.click("#record-misuse button")
    page.wait_for_load_state()
    page.locator("tr", has_text=violation).first.locator("form.publish button").click()
    page.wait_for_load_state()
    assert page.locator("tr", has_text=violation).first.locator(".published").inner_text() \
        == MESSAGES[lang]["yes"]
    assert any(r["violation"] == violation for r in client.get("/v1/catalog/misuse").json())
    shot(page, f"misuse-{lang}")
    page.goto(base_url + "/console/agreements")
    for action, status in (("suspend", "suspended"), ("resume", "active")):
        act_on_row(page, "#agr-agr-acme-flights-records", action, "review of misuse", status)
        shot(page, f"agreement-{action}-{lang}")
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_provider_suspends_and_resumes_a_dataset(browser, base_url: str,
                                                 tokens: dict[str, str], lang: str) -> None:
    page = open_as(browser, base_url, tokens["provider-office"], lang)
    page.goto(base_url + "/console/datasets")
    for action, status in (("suspend", "suspended"), ("resume", "available")):
        act_on_row(page, "#ds-weather", action, "source under review", status)
    shot(page, f"datasets-{lang}")
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_holder_files_usage_report(browser, base_url: str, tokens: dict[str, str],
                                   lang: str) -> None:
    page = open_as(browser, base_url, tokens["lin"], lang)
    page.goto(base_url + "/console/reports")
    page.select_option("#file-report select[name=agreement]", "agr-lin-flights-aggregate")
    page.fill("#file-report input[name=period_start]", "2026-01-01")
    page.fill("#file-report input[name=summary]", "delay study")
    page.click("#file-report button")
    page.wait_for_load_state()
    assert page.locator(".done").count() == 1
    assert page.inner_text("#due-agr-lin-flights-aggregate .status") == \
        MESSAGES[lang]["reports.on_time"]
    shot(page, f"reports-{lang}")
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_differencing_pair_shows_on_the_warnings_page(
        browser, base_url: str, client: TestClient, tokens: dict[str, str], lang: str) -> None:
    for bound in (120, 121):
        done = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
            "agreement": "agr-acme-flights-aggregate",
            "sql": f"SELECT origin, count(*) AS n FROM flights WHERE arr_delay > {bound} "
                   "GROUP BY origin"})
        assert done.status_code < 300, done.text
    page = open_as(browser, base_url, tokens["wang"], lang)
    page.goto(base_url + "/console/warnings")
    row = page.locator("tr.rule-differencing", has_text="arr_delay").first
    assert MESSAGES[lang]["warnings.rule.differencing"] in row.inner_text()
    assert "acme-analyst" in row.inner_text()
    shot(page, f"warnings-{lang}")
    page.context.close()


@pytest.mark.parametrize("lang", LANGS)
def test_researcher_is_refused_supervisor_pages(browser, base_url: str,
                                                tokens: dict[str, str], lang: str) -> None:
    page = open_as(browser, base_url, tokens["lin"], lang)
    for name in ("audit", "warnings", "misuse"):
        answer = page.goto(f"{base_url}/console/{name}")
        assert answer is not None and answer.status == 403
        assert h1(page) == MESSAGES[lang]["error.title"]
    assert MESSAGES[lang]["nav.audit"] not in page.inner_text("header")
    shot(page, f"forbidden-{lang}")
    page.context.close()


def _export(client: TestClient, token: str, filename: str, content: bytes) -> int:
    import base64

    made = client.post("/v1/exports", headers=auth(token), json={
        "agreement": "agr-lin-residents-sandbox", "filename": filename,
        "reason": "table for the paper", "content_b64": base64.b64encode(content).decode()})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


@pytest.mark.parametrize("lang", LANGS)
def test_airlock_queue_approve_release_and_deny(
        browser, base_url: str, client: TestClient, tokens: dict[str, str], lang: str) -> None:
    safe = _export(client, tokens["lin"], f"districts_{lang}.csv",
                   b"district,n\nHuangpu,40\nXuhui,52\n")
    leaky = _export(client, tokens["lin"], f"people_{lang}.csv", b"resident_id,n\nx,2\n")
    msg = MESSAGES[lang]
    page = open_as(browser, base_url, tokens["wang"], lang)
    page.goto(base_url + "/console/airlock")
    assert h1(page) == msg["airlock.title"]
    row = page.locator(f"#exp-{leaky}")
    # The automatic check is shown with its rules, and a disclosive table has no approve.
    assert row.locator(".verdict").inner_text() == msg["airlock.verdict.failed"]
    rules = row.locator(".rule").all_inner_texts()
    assert msg["airlock.rule.identifier_column"] in rules
    assert msg["airlock.rule.min_cell_count"] in rules
    assert row.locator("button.approve").count() == 0
    assert page.locator(f"#exp-{safe} .verdict").inner_text() == msg["airlock.verdict.passed"]
    shot(page, f"airlock-queue-{lang}")
    page.locator(f"#exp-{safe} input[name=note]").fill("aggregates only")
    page.locator(f"#exp-{safe} button.approve").click()
    page.wait_for_load_state()
    assert page.locator(".done").count() == 1
    assert page.locator(f"#exp-{safe} .status").inner_text().startswith(
        msg["airlock.status.approved"])
    page.locator(f"#exp-{leaky} input[name=note]").fill("identifiers")
    page.locator(f"#exp-{leaky} button.deny").click()
    page.wait_for_load_state()
    assert page.locator(f"#exp-{leaky} .status").inner_text().startswith(
        msg["airlock.status.denied"])
    with page.expect_download() as download:
        page.locator(f"#exp-{safe} a.download").click()
    released = Path(download.value.path()).read_bytes()
    assert released.startswith(b"# ") and b"district,n\nHuangpu,40\nXuhui,52\n" in released
    shot(page, f"airlock-decided-{lang}")
    page.context.close()
    # The requester sees the outcome of her own requests and no decision buttons.
    lin = open_as(browser, base_url, tokens["lin"], lang)
    lin.goto(base_url + "/console/airlock")
    assert lin.locator(f"#exp-{safe} a.download").count() == 1
    assert lin.locator("button.approve, button.deny").count() == 0
    shot(lin, f"airlock-requester-{lang}")
    lin.context.close()
