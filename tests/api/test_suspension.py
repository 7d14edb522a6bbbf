"""Suspending an agreement over the API stops its sandboxes within a second and refuses
its next query; resuming it lets queries run again."""

from __future__ import annotations

import time

import docker
from fastapi.testclient import TestClient

from sandbox.runtime.base import LABEL_AGREEMENT
from tests.api.conftest import auth

LIN_FLIGHTS = "agr-lin-flights-aggregate"
QUERY = "SELECT origin, count(*) AS n FROM flights GROUP BY origin"


def _sandboxes(engine: docker.DockerClient) -> list[object]:
    return list(engine.containers.list(filters={"label": f"{LABEL_AGREEMENT}={LIN_FLIGHTS}"}))


def test_suspension_stops_sandboxes_within_a_second(client: TestClient,
                                                    tokens: dict[str, str]) -> None:
    engine = docker.from_env()
    lin, provider = auth(tokens["lin"]), auth(tokens["provider-office"])
    warm = client.post("/v1/jobs", headers=lin, json={"agreement": LIN_FLIGHTS, "sql": QUERY,
                                                      "wait_ms": 20000})
    assert warm.status_code == 200, warm.text
    assert _sandboxes(engine), "a warm sandbox should be up after a query"
    started = time.monotonic()
    response = client.post(f"/v1/agreements/{LIN_FLIGHTS}/suspend", headers=provider,
                           json={"reason": "suspected misuse (test)"})
    assert response.status_code == 200, response.text
    try:
        while _sandboxes(engine):
            assert time.monotonic() - started < 1.0, "sandboxes still running after 1 s"
            time.sleep(0.02)
        refused = client.post("/v1/jobs", headers=lin, json={"agreement": LIN_FLIGHTS,
                                                             "sql": QUERY})
        assert refused.status_code == 403
        assert refused.json()["code"] == "agreement_suspended"
    finally:
        resumed = client.post(f"/v1/agreements/{LIN_FLIGHTS}/resume", headers=provider,
                              json={"reason": "cleared (test)"})
        assert resumed.status_code == 200, resumed.text
    again = client.post("/v1/jobs", headers=lin, json={"agreement": LIN_FLIGHTS, "sql": QUERY,
                                                       "wait_ms": 20000})
    assert again.status_code == 200, again.text
