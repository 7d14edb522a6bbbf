"""The per-process state cache (``gateway/store/state_cache.py``) never delays a change
by more than a second: made here, it holds on the next request; made by another process
(``dsb`` on the command line, another worker), within the cache's lifetime."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.settings import Settings
from tests.api.conftest import auth

ACME_REC = "agr-acme-flights-records"
QUERY = {"agreement": ACME_REC, "sql": "SELECT carrier FROM flights LIMIT 1", "wait_ms": 20000}
DSB = str(Path(sys.executable).parent / "dsb")


def _dsb(settings: Settings, *args: str) -> None:
    env = {**os.environ, "DSB_HOME": str(settings.home),
           "DSB_POLICY_DIR": str(settings.policy_dir)}
    subprocess.run([DSB, *args], env=env, check=True, capture_output=True, timeout=120)


def test_a_suspension_by_another_process_holds_within_a_second(
        client: TestClient, tokens: dict[str, str], demo_settings: Settings) -> None:
    headers = auth(tokens["acme-analyst"])
    assert client.post("/v1/jobs", headers=headers, json=QUERY).status_code == 200  # cached
    _dsb(demo_settings, "dataset", "suspend", "flights", "--reason", "cache test")
    try:
        suspended = time.monotonic()
        while True:
            response = client.post("/v1/jobs", headers=headers, json=QUERY)
            if response.status_code != 200:
                break
            assert time.monotonic() - suspended < 1.0, "still answering a second later"
            time.sleep(0.05)
        assert response.json()["code"] == "dataset_suspended", response.text
    finally:
        _dsb(demo_settings, "dataset", "resume", "flights", "--reason", "cache test done")
    deadline = time.monotonic() + 1.0
    while client.post("/v1/jobs", headers=headers, json=QUERY).status_code != 200:
        assert time.monotonic() < deadline, "not answering a second after the resumption"
        time.sleep(0.05)


def test_a_revoked_token_here_is_refused_on_the_next_request(
        client: TestClient, tokens: dict[str, str], services: object) -> None:
    from gateway.access.accounts import Role, add_user, issue_token, revoke_token
    from gateway.store.models import ApiToken

    store = services.store  # type: ignore[attr-defined]
    add_user(store, "cache-probe", Role.enterprise, organisation="probe")
    token = issue_token(store, "cache-probe")
    assert client.get("/v1/agreements", headers=auth(token)).status_code == 200  # cached
    with store.session() as session:
        token_id = session.query(ApiToken.id).filter(ApiToken.user_id == "cache-probe").scalar()
    revoke_token(store, token_id)
    response = client.get("/v1/agreements", headers=auth(token))
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"


def test_docstring_examples() -> None:
    import doctest

    from gateway.jobs import timing
    from gateway.store import state_cache

    for module in (state_cache, timing):
        result = doctest.testmod(module)
        assert result.attempted and not result.failed, module.__name__
