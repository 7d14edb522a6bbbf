"""Authorization matrix: every endpoint x every role x own / other's resource.

Each row names the endpoint, how to call it, and the status each caller must get.
"anon" has no token; "rival" is an enterprise that holds no agreement. "provider-office"
is the provider of the flight tables, "civil-office" of residents: each acts on its own
datasets only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import auth

CALLERS = ("anon", "lin", "acme-analyst", "wang", "provider-office", "civil-office", "admin",
           "rival")
ACME_AGG = "agr-acme-flights-aggregate"
LIN_SANDBOX = "agr-lin-residents-sandbox"
SMALL = "SELECT carrier, count(*) AS n FROM flights GROUP BY carrier"


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    expect: dict[str, int]  # caller -> status; callers not named get ``default``
    default: int
    body: dict[str, Any] | None = None
    # Reads an id made in setup (an acme job) into the path.
    needs_job: bool = False


def everyone(status: int, **overrides: int) -> dict[str, int]:
    table = {c: status for c in CALLERS}
    table.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return table


OPERATORS_ONLY = everyone(403, anon=401, provider_office=0, admin=0)
ROWS = [
    Row("catalog list", "GET", "/v1/datasets", everyone(200), 200),
    Row("catalog entry", "GET", "/v1/datasets/flights", everyone(200), 200),
    Row("open preview", "GET", "/v1/datasets/airlines/preview", everyone(200), 200),
    Row("conditional preview", "GET", "/v1/datasets/flights/preview", everyone(403), 403),
    Row("conditional download", "GET", "/v1/datasets/residents/download", everyone(403), 403),
    Row("me", "GET", "/v1/me", everyone(200, anon=401), 200),
    Row("agreements list", "GET", "/v1/agreements", everyone(200, anon=401), 200),
    Row("own agreement", "GET", f"/v1/agreements/{ACME_AGG}",
        everyone(404, anon=401, acme_analyst=200, wang=200, provider_office=200, admin=200), 404),
    # Resuming what is active: who may act passes the checks and gets 409 (no change).
    Row("agreement resume (residents)", "POST", f"/v1/agreements/{LIN_SANDBOX}/resume",
        everyone(403, anon=401, wang=409, civil_office=409, admin=409), 403,
        body={"reason": "x"}),
    Row("agreement resume (flights)", "POST", f"/v1/agreements/{ACME_AGG}/resume",
        everyone(403, anon=401, wang=409, provider_office=409, admin=409), 403,
        body={"reason": "x"}),
    Row("dataset resume (flights provider)", "POST", "/v1/datasets/planes/resume",
        everyone(403, anon=401, provider_office=409, admin=409), 403, body={"reason": "x"}),
    Row("dataset resume (residents provider)", "POST", "/v1/datasets/residents/resume",
        everyone(403, anon=401, civil_office=409, admin=409), 403, body={"reason": "x"}),

    Row("explain", "POST", "/v1/queries:explain",
        everyone(404, anon=401, acme_analyst=200), 404, body={"agreement": ACME_AGG,
                                                              "sql": SMALL}),
    Row("submit", "POST", "/v1/jobs", everyone(404, anon=401, acme_analyst=200), 404,
        body={"agreement": ACME_AGG, "sql": SMALL, "wait_ms": 20000}),
    Row("job status", "GET", "/v1/jobs/{job}",
        everyone(404, anon=401, acme_analyst=200, wang=200, admin=200), 404, needs_job=True),
    Row("job result", "GET", "/v1/jobs/{job}/result",
        everyone(404, anon=401, acme_analyst=200, wang=403, admin=403), 404, needs_job=True),
    Row("job receipt", "GET", "/v1/jobs/{job}/receipt",
        everyone(404, anon=401, acme_analyst=200, wang=200, admin=200), 404, needs_job=True),
    Row("job cancel", "POST", "/v1/jobs/{job}/cancel",
        everyone(404, anon=401, acme_analyst=200, wang=403, admin=403), 404, needs_job=True),
    Row("audit events", "GET", "/v1/audit/events", everyone(403, anon=401, wang=200, admin=200),
        403),
    Row("audit verify", "GET", "/v1/audit/verify", everyone(403, anon=401, wang=200, admin=200),
        403),
    Row("agreement usage", "GET", f"/v1/agreements/{ACME_AGG}/usage",
        everyone(403, anon=401, wang=200, admin=200), 403),
]


@pytest.fixture(scope="module")
def acme_job(client: TestClient, tokens: dict[str, str]) -> str:
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]),
                           json={"agreement": ACME_AGG, "sql": SMALL, "wait_ms": 20000})
    assert response.status_code == 200, response.text
    return response.headers["X-DSB-Job"]


def _call(client: TestClient, row: Row, caller: str, tokens: dict[str, str], job: str
          ) -> Any:
    headers = auth(tokens[caller]) if caller != "anon" else {}
    path = row.path.replace("{job}", job)
    send: Callable[..., Any] = getattr(client, row.method.lower())
    if row.body is not None:
        return send(path, headers=headers, json=row.body)
    return send(path, headers=headers)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_matrix(client: TestClient, tokens: dict[str, str], acme_job: str, row: Row) -> None:
    failures = []
    for caller in CALLERS:
        expected = row.expect.get(caller, row.default)
        if expected == 0:  # allowed; the action itself may fail for state reasons
            expected = row.expect.get("admin", 200)
        response = _call(client, row, caller, tokens, acme_job)
        if response.status_code != expected:
            failures.append(f"{caller}: {response.status_code} != {expected}: "
                            f"{response.text[:200]}")
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"]
    assert not failures, "\n".join(failures)


def test_holders_list_only_their_own_agreements(client: TestClient, tokens: dict[str, str]
                                                ) -> None:
    mine = client.get("/v1/agreements", headers=auth(tokens["acme-analyst"])).json()
    assert {a["id"] for a in mine} == {"agr-acme-flights-aggregate", "agr-acme-flights-records"}
    assert client.get("/v1/agreements", headers=auth(tokens["rival"])).json() == []
    everything = client.get("/v1/agreements", headers=auth(tokens["wang"])).json()
    assert len(everything) == 5
    # Providers see the agreements over their own data only.
    civil = client.get("/v1/agreements", headers=auth(tokens["civil-office"])).json()
    assert {a["id"] for a in civil} == {"agr-lin-residents-sandbox",
                                        "agr-wang-residents-aggregate"}


def test_holders_list_only_their_own_jobs(client: TestClient, tokens: dict[str, str],
                                          acme_job: str) -> None:
    assert acme_job in {j["id"] for j in client.get(
        "/v1/jobs", headers=auth(tokens["acme-analyst"])).json()}
    assert acme_job not in {j["id"] for j in client.get(
        "/v1/jobs", headers=auth(tokens["lin"])).json()}


def test_bad_tokens(client: TestClient, tokens: dict[str, str], services: Any) -> None:
    from gateway.access.accounts import digest as sha
    from gateway.access.accounts import issue_token, revoke_token
    from gateway.store.models import ApiToken

    for bad in ("nope", "dsb_" + "x" * 43, "Bearer", ""):
        response = client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        assert response.json()["code"] in ("unauthenticated",)
    import datetime as dt

    expired = issue_token(services.store, "acme-analyst", expires_in=dt.timedelta(seconds=-1))
    response = client.get("/v1/me", headers=auth(expired))
    assert response.status_code == 401 and response.json()["code"] == "token_expired"
    revoked = issue_token(services.store, "acme-analyst")
    with services.store.session() as session:
        from sqlalchemy import select

        token_id = session.scalars(select(ApiToken.id).where(
            ApiToken.token_sha256 == sha(revoked))).one()
    revoke_token(services.store, token_id)
    response = client.get("/v1/me", headers=auth(revoked))
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"
    # Tokens are stored only as digests.
    with services.store.session() as session:
        from sqlalchemy import select

        stored = session.scalars(select(ApiToken.token_sha256)).all()
    assert all(tokens["acme-analyst"] not in s for s in stored)
