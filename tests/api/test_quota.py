"""Daily quota: the query after the last allowed one gets 429 with a retry time."""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.audit_bridge import open_audit
from gateway.jobs.service import JobService
from gateway.policy.loading import load_policies
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import open_store
from tests.api.conftest import auth


def test_quota_exceeded_is_429_with_retry_after(demo_settings: Settings, tokens: dict[str, str],
                                                tmp_path: Path) -> None:
    tree = tmp_path / "policies"
    shutil.copytree(demo_settings.policy_dir, tree)
    scenario = tree / "scenarios" / "flights-records.yaml"
    scenario.write_text(scenario.read_text().replace("queries_per_day: 500",
                                                     "queries_per_day: 2"))
    settings = demo_settings.model_copy(update={"policy_dir": tree,
                                                "trusted_keys_dir": tree / "keys"})
    store = open_store(settings.db_url)
    svc = Services(settings=settings, store=store,
                   policies=load_policies(tree, trusted_keys_dir=tree / "keys"),
                   audit=open_audit(settings, store))
    svc.jobs = JobService(svc, workers=1)
    with TestClient(create_app(services=svc)) as client:
        headers = auth(tokens["acme-analyst"])
        body = {"agreement": "agr-acme-flights-records", "sql": "SELECT dep_time FROM flights"}
        # Earlier tests in the session may have used some of today's quota already.
        codes = [client.post("/v1/jobs", headers=headers, json=body) for _ in range(3)]
        last = codes[-1]
        assert last.status_code == 429, [c.status_code for c in codes]
        assert last.json()["code"] == "quota_exceeded"
        retry = int(last.headers["Retry-After"])
        assert 0 < retry <= 86_400
    svc.jobs.close()
