"""Suspending and resuming: who may, and the trail is written before the state changes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway.datasets import catalog
from gateway.services import Services
from tests.api.conftest import auth

REASON = {"reason": "lifecycle test"}


def _events(services: Services, action: str) -> int:
    with services.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_events WHERE action = :a"),
                                {"a": action}).scalar_one())


@contextmanager
def _audit_down(services: Services) -> Iterator[None]:
    """A real fault: the audit log's head table is gone, so no event can be appended."""
    with services.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_head RENAME TO audit_head_away"))
    try:
        yield
    finally:
        with services.store.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_head_away RENAME TO audit_head"))


def test_audit_failure_leaves_the_dataset_as_it_was(client: TestClient, services: Services,
                                                    tokens: dict[str, str]) -> None:
    provider = auth(tokens["provider-office"])
    with _audit_down(services):
        response = client.post("/v1/datasets/weather/suspend", headers=provider, json=REASON)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "audit_unavailable"
    assert catalog.status(services.store, services.policies, "weather").value == "available"


def test_audit_failure_leaves_the_agreement_as_it_was(client: TestClient, services: Services,
                                                      tokens: dict[str, str]) -> None:
    with _audit_down(services):
        response = client.post("/v1/agreements/agr-acme-flights-records/suspend",
                               headers=auth(tokens["wang"]), json=REASON)
    assert response.status_code == 503, response.text
    mine = client.get("/v1/agreements/agr-acme-flights-records",
                      headers=auth(tokens["acme-analyst"])).json()
    assert mine["status"] == "active"


def test_another_providers_dataset_is_refused_and_untouched(
        client: TestClient, services: Services, tokens: dict[str, str]) -> None:
    before = _events(services, "dataset.suspended")
    response = client.post("/v1/datasets/flights/suspend", headers=auth(tokens["civil-office"]),
                           json=REASON)
    assert response.status_code == 403
    assert response.json()["code"] == "not_dataset_provider"
    assert "demo-transport-bureau" in response.json()["detail"]
    assert catalog.status(services.store, services.policies, "flights").value == "available"
    assert _events(services, "dataset.suspended") == before


def test_provider_of_other_data_cannot_stop_an_agreement(client: TestClient,
                                                         tokens: dict[str, str]) -> None:
    # agr-lin-residents-sandbox covers residents only: the flight provider has no say.
    response = client.post("/v1/agreements/agr-lin-residents-sandbox/suspend",
                           headers=auth(tokens["provider-office"]), json=REASON)
    assert response.status_code == 403
    assert response.json()["code"] == "not_agreement_overseer"


def test_supervisor_suspends_and_resumes_with_both_events(
        client: TestClient, services: Services, tokens: dict[str, str]) -> None:
    wang = auth(tokens["wang"])
    suspended, resumed = (_events(services, a) for a in ("agreement.suspended",
                                                          "agreement.resumed"))
    path = "/v1/agreements/agr-acme-flights-records"
    assert client.post(f"{path}/suspend", headers=wang, json=REASON).json()["status"] == \
        "suspended"
    assert client.post(f"{path}/resume", headers=wang, json=REASON).json()["status"] == "active"
    assert _events(services, "agreement.suspended") == suspended + 1
    assert _events(services, "agreement.resumed") == resumed + 1
