"""Over HTTP with real sandboxes: complexity refusals, result names and result caps
(issue "Enforcement by meaning")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.datasets.keys import derive_salt
from gateway.services import Services
from tests.api.conftest import auth

ACME_AGG = "agr-acme-flights-aggregate"
ACME_REC = "agr-acme-flights-records"

DEEP = {
    "parentheses": "SELECT " + "(" * 3_000 + "dep_delay" + ")" * 3_000 + " FROM flights",
    "case": "SELECT " + "CASE WHEN dep_delay > 0 THEN " * 1_000 + "1" + " END" * 1_000
            + " FROM flights",
    "functions": "SELECT " + "abs(" * 500 + "dep_delay" + ")" * 500 + " FROM flights",
    "subqueries": "SELECT * FROM " + "(SELECT * FROM " * 200 + "flights" + ")" * 200,
    "not": "SELECT dep_delay FROM flights WHERE " + "NOT " * 5_000 + "dep_delay > 0",
}


def _events(client: TestClient, tokens: dict[str, str], **filters: str
            ) -> list[dict[str, Any]]:
    response = client.get("/v1/audit/events", headers=auth(tokens["wang"]),
                          params={"limit": 1000, **filters})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


@pytest.mark.parametrize("form", DEEP)
@pytest.mark.parametrize("agreement", [ACME_REC, ACME_AGG])
def test_deep_statements_are_refused_and_audited(form: str, agreement: str,
                                                 client: TestClient,
                                                 tokens: dict[str, str]) -> None:
    sql = DEEP[form]
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]),
                           json={"agreement": agreement, "sql": sql})
    assert response.status_code == 400, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "too_complex"
    events = _events(client, tokens, agreement=agreement, action="query.rejected")
    assert any(e["details"].get("rejection_code") == "too_complex"
               and e["details"].get("sql") == sql for e in events)


def test_explain_of_a_deep_statement_is_a_400(client: TestClient,
                                              tokens: dict[str, str]) -> None:
    response = client.post("/v1/queries:explain", headers=auth(tokens["acme-analyst"]),
                           json={"agreement": ACME_REC, "sql": DEEP["case"]})
    assert response.status_code == 400 and response.json()["code"] == "too_complex"


def test_a_long_and_chain_runs(client: TestClient, tokens: dict[str, str]) -> None:
    sql = ("SELECT carrier, dep_delay FROM flights WHERE "
           + " AND ".join(f"dep_delay <> {i}" for i in range(2_000)))
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]),
                           json={"agreement": ACME_REC, "sql": sql, "wait_ms": 30000})
    assert response.status_code == 200, response.text[:500]


def test_names_are_the_users_and_nothing_shows_the_salt(
        client: TestClient, tokens: dict[str, str], services: Services) -> None:
    salt = derive_salt(services.settings, ACME_REC)
    headers = auth(tokens["acme-analyst"])
    response = client.post("/v1/jobs", headers=headers, json={
        "agreement": ACME_REC, "wait_ms": 20000, "format": "csv",
        "sql": "SELECT tailnum || '', upper(tailnum), count(DISTINCT tailnum) OVER () "
               "FROM flights LIMIT 3"})
    assert response.status_code == 200, response.text[:500]
    assert response.text.splitlines()[0] == \
        "tailnum || '',upper(tailnum),count(DISTINCT tailnum) OVER ()"
    job = response.headers["X-DSB-Job"]
    body = client.get(f"/v1/jobs/{job}", headers=headers)
    assert salt not in body.text and "<salt>" in body.json()["rewritten_sql"]
    events = [e for e in _events(client, tokens, agreement=ACME_REC)
              if e["subjects"].get("job") == job]
    assert {e["action"] for e in events} >= {"query.rewritten", "query.executed"}
    assert salt not in json.dumps(events)


def test_a_table_packed_into_one_value_is_refused(client: TestClient,
                                                  tokens: dict[str, str]) -> None:
    # Packing aggregates are refused before anything runs (the red team's string_agg).
    for sql in ("SELECT list(f) FROM flights AS f",
                "SELECT string_agg(dest, ',') FROM flights"):
        response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
            "agreement": ACME_REC, "sql": sql, "wait_ms": 30000})
        assert response.status_code == 400, response.text[:500]
        assert response.json()["code"] == "row_level_aggregate"


def test_the_cell_cap_cuts_a_streamed_result(client: TestClient,
                                             tokens: dict[str, str]) -> None:
    # 25 cells a row (a struct of 25 fields, one row each): 4,000 rows fill the scenario's
    # 100,000 cells before its 5,000 rows.
    values = ", ".join(f"'f{i}': dep_delay" for i in range(25))
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
        "agreement": ACME_REC, "sql": f"SELECT {{{values}}} AS l FROM flights",
        "wait_ms": 30000})
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["rows"]) == 4_000
