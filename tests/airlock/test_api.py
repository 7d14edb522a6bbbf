"""Airlock round trip through the real demo gateway: request, check, decision, release."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.audit.models import AuditEventRow
from gateway.services import Services
from tests.api.conftest import auth

SANDBOX = "agr-lin-residents-sandbox"


def file_export(client: TestClient, token: str, filename: str, content: bytes,
                agreement: str = SANDBOX) -> dict:
    response = client.post("/v1/exports", headers=auth(token), json={
        "agreement": agreement, "filename": filename, "reason": "table for the paper",
        "content_b64": base64.b64encode(content).decode()})
    return {**response.json(), "http": response.status_code}


def test_round_trip_with_citation_and_audit(client: TestClient, tokens: dict[str, str],
                                            services: Services) -> None:
    made = file_export(client, tokens["lin"], "by_district.csv", b"district,n\nA,25\nB,31\n")
    assert made["http"] == 201 and made["check"]["verdict"] == "passed"
    assert made["requested_by"] == "lin" and made["status"] == "pending"
    export = made["id"]
    # Not released before a decision, and the requester cannot decide.
    assert client.get(f"/v1/exports/{export}/file", headers=auth(tokens["lin"])).status_code == 409
    assert client.post(f"/v1/exports/{export}/approve", headers=auth(tokens["lin"]),
                       json={}).status_code == 403
    approved = client.post(f"/v1/exports/{export}/approve", headers=auth(tokens["wang"]),
                           json={"note": "aggregates only"})
    assert approved.status_code == 200 and approved.json()["decided_by"] == "wang"
    released = client.get(f"/v1/exports/{export}/file", headers=auth(tokens["lin"]))
    assert released.status_code == 200
    assert released.content.startswith(b"# ") and b"district,n\nA,25\nB,31\n" in released.content
    assert b"residents" in released.content.split(b"district,n")[0]
    assert client.post(f"/v1/exports/{export}/deny", headers=auth(tokens["wang"]),
                       json={}).status_code == 409
    with services.store.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEventRow))
                   if e.agreement_id == SANDBOX]
    assert "export.requested" in actions and "export.approved" in actions


def test_disclosive_table_is_flagged_and_cannot_be_approved(
        client: TestClient, tokens: dict[str, str]) -> None:
    made = file_export(client, tokens["lin"], "small.csv", b"resident_id,n\nx,2\n")
    assert made["check"]["verdict"] == "failed"
    assert {f["rule"] for f in made["check"]["findings"]} == {"identifier_column",
                                                              "min_cell_count"}
    refused = client.post(f"/v1/exports/{made['id']}/approve", headers=auth(tokens["wang"]),
                          json={})
    assert refused.status_code == 409 and refused.json()["code"] == "export_disclosive"
    denied = client.post(f"/v1/exports/{made['id']}/deny", headers=auth(tokens["wang"]),
                         json={"note": "k"})
    assert denied.json()["status"] == "denied"


def test_only_sandbox_holders_can_export(client: TestClient, tokens: dict[str, str]) -> None:
    aggregate = file_export(client, tokens["lin"], "a.csv", b"n\n20\n", "agr-lin-flights-aggregate")
    assert aggregate["http"] == 403 and aggregate["code"] == "no_airlock"
    other = file_export(client, tokens["acme-analyst"], "a.csv", b"n\n20\n")
    assert other["http"] == 404
    assert file_export(client, tokens["lin"], "../x.csv", b"n\n20\n")["http"] == 422
    # Others' requests are invisible: same answer as a missing one.
    mine = file_export(client, tokens["lin"], "fig.png", b"\x89PNG")
    assert mine["check"]["verdict"] == "needs_review"
    assert client.get(f"/v1/exports/{mine['id']}",
                      headers=auth(tokens["acme-analyst"])).status_code == 404
