"""Through the real path (HTTP, store, audit trail, sandbox): differencing and trackers
refused by query auditing with a supervisor warning; noise with a budget and a cache."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient
from rewrite_support import TINY_DISTRICT, residents_rows

from gateway.access.accounts import Role, add_user, issue_token
from gateway.app import create_app
from gateway.datasets.keys import create_master_key
from gateway.datasets.publish import publish
from gateway.policy.loading import load_policies
from gateway.services import build_services
from gateway.settings import Settings
from tests.api.conftest import add_signed_agreement, auth

AUDITED = "agr-wang-residents-aggregate"  # demo agreement, scenario residents-aggregate
NOISY = "agr-lin-residents-noisy"
TINY = f"district = '{TINY_DISTRICT}'"


def _residents_file(path: Path) -> None:
    names = ["resident_id", "name", "phone", "district", "birth_date", "age", "gender",
             "occupation", "household_size", "income"]
    columns = list(zip(*residents_rows(), strict=True))
    data = {n: list(c) for n, c in zip(names, columns, strict=True)}
    data["birth_date"] = [dt.date.fromisoformat(d) for d in data["birth_date"]]
    pq.write_table(pa.table(data), path)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """The demo policies (residents-aggregate exact) plus a noisy residents scenario and an
    agreement for it; the
    residents of the rewriter fixtures (with the 3-person district) published."""
    home = tmp_path_factory.mktemp("privacy-gateway")
    tree = home / "policies"
    shutil.copytree(Path("policies"), tree)
    exact = tree / "scenarios" / "residents-aggregate.yaml"
    scenario = yaml.safe_load(exact.read_text())
    # wang's agreement here runs on the exact scenario (k and query auditing): the
    # auditing tests below; the noisy one is lin's.
    exact.write_text(yaml.safe_dump({k: v for k, v in scenario.items() if k != "noise"}))
    scenario.update(id="residents-noisy", noise={
        "epsilon_per_query": 1.0, "budget_epsilon": 3.0, "max_rows_per_entity": 1,
        "clamp": {"income": [0, 50_000]}})
    (tree / "scenarios" / "residents-noisy.yaml").write_text(yaml.safe_dump(scenario))
    add_signed_agreement(tree, home, "privacy-test", NOISY, user="lin", role="researcher",
                         scenario="residents-noisy")
    settings = Settings(home=home / "var", policy_dir=tree)
    create_master_key(settings.master_key_path)
    svc = build_services(settings)
    _residents_file(home / "residents.parquet")
    publish(settings, svc.store, load_policies(tree), home / "residents.parquet", "residents")
    tokens = {}
    for user, role in (("wang", Role.supervisor), ("lin", Role.researcher)):
        add_user(svc.store, user, role)
        tokens[user] = issue_token(svc.store, user)
    with TestClient(create_app(services=svc), raise_server_exceptions=False) as client:
        yield client, tokens
    svc.close()


def query(gateway: tuple[TestClient, dict], user: str, agreement: str, sql: str) -> Any:
    client, tokens = gateway
    return client.post("/v1/jobs", headers=auth(tokens[user]),
                       json={"agreement": agreement, "sql": sql, "wait_ms": 30_000})


def refused_job(gateway: tuple[TestClient, dict], response: Any, user: str) -> dict:
    assert response.status_code == 403, response.text
    job = re.search(r"\(job ([0-9a-f-]{36})\)", response.json()["detail"])
    assert job is not None
    client, tokens = gateway
    return client.get(f"/v1/jobs/{job.group(1)}", headers=auth(tokens[user])).json()


@pytest.mark.parametrize(("first", "second"), [
    ("SELECT sum(income) AS s FROM residents",
     f"SELECT sum(income) AS s FROM residents WHERE NOT {TINY}"),
    (f"SELECT sum(income) AS s FROM residents WHERE {TINY} OR occupation = 'nurse'",
     "SELECT sum(income) AS s FROM residents WHERE occupation = 'nurse'"),
], ids=["differencing", "tracker"])
def test_refused_through_the_gateway_and_warned(gateway, first: str, second: str) -> None:  # type: ignore[no-untyped-def]
    answered = query(gateway, "wang", AUDITED, first)
    assert answered.status_code == 200, answered.text
    assert answered.json()["privacy"]["query_auditing"]["sets_checked"] >= 1
    response = query(gateway, "wang", AUDITED, second)
    body = response.json()
    assert body["code"] == "differencing_risk" and "fewer than k=10" in body["detail"]
    job = refused_job(gateway, response, "wang")
    assert job["status"] == "rejected" and job["error"]["code"] == "differencing_risk"
    assert job["result_url"] is None
    client, tokens = gateway
    events = client.get("/v1/audit/events", headers=auth(tokens["wang"]),
                        params={"action": "query.rejected", "limit": 50}).json()["events"]
    assert any(e["subjects"]["job"] == job["id"]
               and e["details"]["rejection_code"] == "differencing_risk" for e in events)
    warnings = client.get("/v1/warnings", headers=auth(tokens["wang"])).json()
    assert any(w["rule"] == "differencing_risk" and job["id"] in w["jobs"] for w in warnings)


def test_noise_budget_and_cache_through_the_gateway(gateway) -> None:  # type: ignore[no-untyped-def]
    client, tokens = gateway
    sql = "SELECT gender, count(*) AS n, avg(income) AS mean FROM residents GROUP BY gender"
    first = query(gateway, "lin", NOISY, sql)
    assert first.status_code == 200, first.text
    privacy = first.json()["privacy"]
    assert privacy["epsilon_charged"] == 1.0 and privacy["budget"]["remaining"] == 2.0
    # 1 row / (1.0 / 3): two noisy columns and the noisy entity counts share epsilon.
    assert privacy["columns"]["n"]["scale"] == pytest.approx(3.0)
    assert privacy["threshold_scale"] == pytest.approx(3.0)
    again = query(gateway, "lin", NOISY, sql)
    assert again.json()["rows"] == first.json()["rows"]  # no fresh noise to average
    assert again.json()["privacy"]["cached"] and again.json()["privacy"]["epsilon_charged"] == 0
    for other in ("SELECT count(*) AS n FROM residents",
                  "SELECT district, count(*) AS n FROM residents GROUP BY district"):
        assert query(gateway, "lin", NOISY, other).status_code == 200
    budget = client.get(f"/v1/agreements/{NOISY}/budget", headers=auth(tokens["lin"])).json()
    assert budget["spent_epsilon"] == 3.0 and budget["remaining_epsilon"] == 0.0
    assert budget["cached_answers"] == 3 and budget["noisy_releases"] == 3
    spent = query(gateway, "lin", NOISY, "SELECT occupation, count(*) AS n FROM residents "
                  "GROUP BY occupation")
    assert spent.status_code == 403 and spent.json()["code"] == "budget_exhausted"
    assert query(gateway, "lin", NOISY, sql).json()["rows"] == first.json()["rows"]


def test_budget_shown_for_an_audited_agreement(gateway) -> None:  # type: ignore[no-untyped-def]
    client, tokens = gateway
    body = client.get(f"/v1/agreements/{AUDITED}/budget", headers=auth(tokens["wang"])).json()
    assert body["noise"] is False and body["query_auditing"] is True and body["k"] == 10
    hidden = client.get(f"/v1/agreements/{AUDITED}/budget", headers=auth(tokens["lin"]))
    assert hidden.status_code == 404  # not lin's agreement
