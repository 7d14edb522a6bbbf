"""The demo installation of the API tests, plus console log-in helpers."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.api.conftest import client, demo_settings, services, tokens  # noqa: F401

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def login(http: TestClient, token: str) -> None:
    http.cookies.clear()
    form = http.get("/console/login")
    done = http.post("/console/login", data={"token": token, "csrf": csrf_of(form.text)},
                     follow_redirects=False)
    assert done.status_code == 303 and "failed" not in done.headers["location"], done.text
