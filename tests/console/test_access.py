"""Console access control: sessions, roles, CSRF; holders see only their own data."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.console.conftest import csrf_of, login

SUPERVISOR_PAGES = ("/console/audit", "/console/warnings", "/console/misuse",
                    "/console/audit/export?format=csv")


def test_pages_need_a_session(client: TestClient) -> None:
    client.cookies.clear()
    page = client.get("/console/audit", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/console/login"
    forged = client.get("/console/audit", cookies={"dsb_console": "eyJ0aWQiOjF9.x.y"},
                        follow_redirects=False)
    assert forged.status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_refuses_bad_tokens(
        client: TestClient, tokens: dict[str, str]) -> None:
    client.cookies.clear()
    form = client.get("/console/login")
    bad = client.post("/console/login", data={"token": "dsb_nope", "csrf": csrf_of(form.text)},
                      follow_redirects=False)
    assert "failed" in bad.headers["location"]
    form = client.get("/console/login")
    no_csrf = client.post("/console/login", data={"token": tokens["wang"], "csrf": "x"},
                          follow_redirects=False)
    assert "failed" in no_csrf.headers["location"]
    good = client.post("/console/login", data={"token": tokens["wang"],
                                                "csrf": csrf_of(form.text)},
                       follow_redirects=False)
    cookie = good.headers["set-cookie"].lower()
    assert "dsb_console=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert tokens["wang"] not in good.headers["set-cookie"]


@pytest.mark.parametrize("user", ["lin", "acme-analyst"])
def test_holders_cannot_open_supervisor_pages(client: TestClient, tokens: dict[str, str],
                                              user: str) -> None:
    login(client, tokens[user])
    for page in SUPERVISOR_PAGES:
        assert client.get(page).status_code == 403, page
    # Their agreement list holds only their own agreements, without others' usage.
    agreements = client.get("/console/agreements").text
    own = "agr-lin" if user == "lin" else "agr-acme"
    other = "agr-acme" if user == "lin" else "agr-lin"
    assert own in agreements and other not in agreements
    # They cannot act on agreements or datasets, even by posting the form directly.
    csrf = csrf_of(client.get("/console/objections").text)
    for url in (f"/console/agreements/{own}-flights-aggregate/suspend",
                "/console/datasets/flights/suspend"):
        assert client.post(url, data={"reason": "x", "csrf": csrf}).status_code == 403
    # Usage-report due dates: only their own agreements.
    reports = client.get("/console/reports").text
    assert other not in reports


def test_post_without_csrf_changes_nothing(client: TestClient, tokens: dict[str, str]) -> None:
    login(client, tokens["provider-office"])
    done = client.post("/console/datasets/weather/suspend", data={"reason": "x", "csrf": "no"},
                       follow_redirects=False)
    assert "csrf_failed" in done.headers["location"]
    assert client.get("/v1/datasets/weather").json()["status"] == "available"


def test_supervisor_sees_pages_and_exports(client: TestClient, tokens: dict[str, str]) -> None:
    login(client, tokens["wang"])
    for page in SUPERVISOR_PAGES[:3]:
        assert client.get(page).status_code == 200, page
    jsonl = client.get("/console/audit/export?format=jsonl&action=auth.login")
    assert jsonl.status_code == 200 and jsonl.text.count("\n") >= 1
    assert all('"auth.login"' in line for line in jsonl.text.splitlines())
    csv = client.get("/console/audit/export?format=csv&action=auth.login")
    assert csv.text.startswith("seq,ts,action")


def test_airlock_queue_shows_only_own_requests_and_holders_cannot_decide(
        client: TestClient, tokens: dict[str, str]) -> None:
    import base64

    made = client.post("/v1/exports", headers={"Authorization": f"Bearer {tokens['lin']}"},
                       json={"agreement": "agr-lin-residents-sandbox",
                             "filename": "lin_private_table.csv", "reason": "for the paper",
                             "content_b64": base64.b64encode(b"district,n\nA,40\n").decode()})
    assert made.status_code == 201, made.text
    export = made.json()["id"]
    login(client, tokens["acme-analyst"])
    assert "lin_private_table.csv" not in client.get("/console/airlock").text
    csrf = csrf_of(client.get("/console/airlock").text)
    for decision in ("approve", "deny"):
        posted = client.post(f"/console/airlock/{export}/{decision}", data={"csrf": csrf})
        assert posted.status_code == 403
    assert client.get(f"/console/airlock/{export}/file").status_code == 404
    login(client, tokens["lin"])
    own = client.get("/console/airlock").text
    assert "lin_private_table.csv" in own and 'class="approve"' not in own
    assert client.post(f"/console/airlock/{export}/approve",
                       data={"csrf": csrf_of(own)}).status_code == 403


def test_provider_cannot_act_on_another_providers_dataset(client: TestClient,
                                                          tokens: dict[str, str]) -> None:
    login(client, tokens["provider-office"])
    page = client.get("/console/datasets").text
    csrf = csrf_of(page)
    done = client.post("/console/datasets/residents/suspend", data={"reason": "x", "csrf": csrf},
                       follow_redirects=False)
    assert "not_dataset_provider" in done.headers["location"]
    assert client.get("/v1/datasets/residents").json()["status"] == "available"
