"""Two gateways (as two containers would be) on one PostgreSQL and one DSB_HOME:
a job submitted to one is polled, listed and fetched from the other."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from gateway_support import AGREEMENT, SQL, Gateway, installation, tokens
from pg_support import TempPostgres

pytestmark = pytest.mark.slow


def test_any_gateway_serves_any_job(pg: TempPostgres, tmp_path: Path) -> None:
    env = installation(tmp_path, pg.url)
    first = Gateway(env, workers=1).start(tmp_path / "first.log")
    second = Gateway(env, workers=1).start(tmp_path / "second.log")
    headers = {"Authorization": f"Bearer {tokens(env)['acme-analyst']}"}
    try:
        with httpx.Client(base_url=first.url, headers=headers, timeout=60) as a, \
             httpx.Client(base_url=second.url, headers=headers, timeout=60) as b:
            submitted = a.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL,
                                                 "wait_ms": 0})
            assert submitted.status_code in (200, 202), submitted.text
            job = submitted.headers.get("X-DSB-Job") or submitted.json()["id"]
            deadline = time.monotonic() + 60
            while (status := b.get(f"/v1/jobs/{job}").json()["status"]) != "succeeded":
                assert status in ("queued", "running"), status
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert job in [j["id"] for j in b.get("/v1/jobs").json()]
            result = b.get(f"/v1/jobs/{job}/result")
            assert result.status_code == 200, result.text
            direct = a.post("/v1/jobs", json={"agreement": AGREEMENT, "sql": SQL})
            assert sorted(map(str, result.json()["rows"])) == \
                sorted(map(str, direct.json()["rows"]))
    finally:
        first.stop()
        second.stop()
