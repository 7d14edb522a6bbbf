"""Governance workflows through the HTTP API, each audited; role checks."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import auth


def actions(client: TestClient, tokens: dict[str, str], action: str) -> list[dict]:
    found = client.get("/v1/audit/events", params={"action": action},
                       headers=auth(tokens["wang"]))
    assert found.status_code == 200, found.text
    return found.json()["events"]


def test_objection_marks_catalog_and_provenance_until_answered(
        client: TestClient, tokens: dict[str, str]) -> None:
    filed = client.post("/v1/objections", headers=auth(tokens["acme-analyst"]), json={
        "dataset": "airlines", "field": "name", "rows": "3-4",
        "description": "carrier names swapped"})
    assert filed.status_code == 201, filed.text
    oid = filed.json()["id"]
    marks = client.get("/v1/datasets/airlines").json()["objections"]
    assert [m["objection"] for m in marks] == [str(oid)] and marks[0]["field"] == "name"
    assert any(e["details"].get("objection") == oid
               for e in actions(client, tokens, "objection.filed"))
    # Only a provider (or admin) answers.
    denied = client.post(f"/v1/objections/{oid}/answer", headers=auth(tokens["lin"]),
                         json={"answer": "no"})
    assert denied.status_code == 403
    answered = client.post(f"/v1/objections/{oid}/answer",
                           headers=auth(tokens["provider-office"]),
                           json={"answer": "fixed in version 2"})
    assert answered.status_code == 200 and answered.json()["status"] == "closed"
    assert client.get("/v1/datasets/airlines").json()["objections"] == []
    again = client.post(f"/v1/objections/{oid}/answer",
                        headers=auth(tokens["provider-office"]), json={"answer": "x"})
    assert again.status_code == 409


def test_objection_mark_travels_in_result_provenance(
        client: TestClient, tokens: dict[str, str]) -> None:
    filed = client.post("/v1/objections", headers=auth(tokens["lin"]), json={
        "dataset": "flights", "description": "arr_delay wrong for day 1"}).json()
    try:
        job = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
            "agreement": "agr-acme-flights-aggregate",
            "sql": "SELECT carrier, count(*) AS n FROM flights GROUP BY carrier"})
        assert job.status_code in (200, 201), job.text
        prov = job.json()["provenance"]
        flights = next(d for d in prov["datasets"] if d["id"] == "flights")
        assert [m["objection"] for m in flights["objections"]] == [str(filed["id"])]
    finally:
        client.post(f"/v1/objections/{filed['id']}/answer",
                    headers=auth(tokens["admin"]), json={"answer": "checked: correct"})


def test_complaint_suspends_in_one_action_then_restores(
        client: TestClient, tokens: dict[str, str]) -> None:
    filed = client.post("/v1/complaints", headers=auth(tokens["rival"]), json={
        "dataset": "planes", "kind": "trade_secret", "description": "our fleet plan"})
    assert filed.status_code == 201, filed.text
    cid = filed.json()["id"]
    assert client.post(f"/v1/complaints/{cid}/resolve", headers=auth(tokens["rival"]),
                       json={"resolution": "suspend", "reason": "x"}).status_code == 403
    done = client.post(f"/v1/complaints/{cid}/resolve", headers=auth(tokens["provider-office"]),
                       json={"resolution": "suspend", "reason": "credible claim"})
    assert done.status_code == 200 and done.json()["status"] == "suspended"
    assert client.get("/v1/datasets/planes").json()["status"] == "suspended"
    fixed = client.post(f"/v1/complaints/{cid}/resolve",
                        headers=auth(tokens["provider-office"]),
                        json={"resolution": "restore_after_fix", "reason": "tail numbers cut"})
    assert fixed.json()["status"] == "restored_after_fix"
    assert client.get("/v1/datasets/planes").json()["status"] == "available"
    assert any(e["details"].get("complaint") == cid
               for e in actions(client, tokens, "complaint.answered"))
    # The complainant sees their complaint; another enterprise does not.
    assert [c["id"] for c in client.get("/v1/complaints",
                                        headers=auth(tokens["rival"])).json()] == [cid]
    assert client.get("/v1/complaints", headers=auth(tokens["acme-analyst"])).json() == []


def test_misuse_restricts_access_and_can_be_published(
        client: TestClient, tokens: dict[str, str]) -> None:
    body = {"subject_kind": "user", "subject": "rival", "violation": "shared token",
            "measure": "warn"}
    assert client.post("/v1/misuse", headers=auth(tokens["acme-analyst"]),
                       json=body).status_code == 403
    made = client.post("/v1/misuse", headers=auth(tokens["wang"]), json=body)
    assert made.status_code == 201, made.text
    assert client.get("/v1/catalog/misuse").json() == []
    client.post(f"/v1/misuse/{made.json()['id']}/publish", headers=auth(tokens["wang"]))
    public = client.get("/v1/catalog/misuse").json()
    assert [r["subject"] for r in public] == ["rival"] and "recorded_by" not in public[0]
    assert any(e["details"].get("misuse") == made.json()["id"]
               for e in actions(client, tokens, "misuse.recorded"))


def test_usage_reports_only_by_holder_and_due_dates(
        client: TestClient, tokens: dict[str, str]) -> None:
    body = {"period_start": "2026-01-01", "period_end": "2026-03-31",
            "summary": "delay study, two figures"}
    assert client.post("/v1/agreements/agr-lin-flights-aggregate/usage-reports",
                       headers=auth(tokens["acme-analyst"]), json=body).status_code == 403
    filed = client.post("/v1/agreements/agr-lin-flights-aggregate/usage-reports",
                        headers=auth(tokens["lin"]), json=body)
    assert filed.status_code == 201, filed.text
    mine = client.get("/v1/usage-reports/due", headers=auth(tokens["lin"])).json()
    assert {r["agreement"] for r in mine} <= {"agr-lin-flights-aggregate",
                                              "agr-lin-residents-sandbox"}
    lin = next(r for r in mine if r["agreement"] == "agr-lin-flights-aggregate")
    assert lin["last_filed"] is not None and lin["overdue"] is False
    everyone = client.get("/v1/usage-reports/due", headers=auth(tokens["wang"])).json()
    assert len(everyone) >= 5


def test_differencing_pair_through_the_api_shows_at_the_warnings_endpoint(
        client: TestClient, tokens: dict[str, str]) -> None:
    for bound in (40, 41):
        job = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
            "agreement": "agr-acme-flights-aggregate",
            "sql": f"SELECT count(*) AS n FROM flights WHERE dep_delay >= {bound}"})
        assert job.status_code in (200, 201), job.text
    assert client.get("/v1/warnings", headers=auth(tokens["acme-analyst"])).status_code == 403
    found = client.get("/v1/warnings", headers=auth(tokens["wang"])).json()
    assert any(w["rule"] == "differencing" and w["user"] == "acme-analyst" for w in found)


def test_metrics_in_prometheus_format(client: TestClient) -> None:
    text = client.get("/metrics").text
    for name in ("dsb_queries", "dsb_rejections", "dsb_query_latency_seconds_bucket",
                 "dsb_sandboxes_live", "dsb_audit_unsealed_events"):
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_bucket')}" in text
