"""``dsb dataset publish``: check a CSV/Parquet source against its declared columns and
store it as a new encrypted version.

Order of work keeps failures clean: everything that can be refused (unknown dataset,
withdrawn, bad master key, wrong columns or types) is refused before anything is
written; the encrypted file is built in a scratch directory next to its final place,
moved in only inside the store transaction, and removed if that transaction fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlalchemy import func, select

from gateway.datasets import catalog, keys
from gateway.datasets.files import literal, writer
from gateway.errors import DatasetError, SchemaMismatch
from gateway.policy.loading import PolicySet
from gateway.policy.models import Dataset, DatasetStatus
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.store.models import DatasetVersion
from sandbox.engine import SOURCE_TABLE

READERS = {".csv": "read_csv", ".parquet": "read_parquet"}


@dataclass(frozen=True)
class Published:
    dataset_id: str
    version: int
    row_count: int
    path: Path
    file_sha256: str


def publish(
    settings: Settings,
    store: Store,
    policies: PolicySet,
    source: Path,
    dataset_id: str,
    *,
    published_by: str = "",
) -> Published:
    dataset = policies.dataset(dataset_id)
    if catalog.status(store, policies, dataset_id) is DatasetStatus.withdrawn:
        raise DatasetError(f"dataset {dataset_id!r} is withdrawn; it takes no new versions",
                           code="dataset_withdrawn")
    master = keys.load_master_key(settings.master_key_path)
    select_sql = _checked_select(source, dataset)

    folder = settings.datasets_path / dataset_id
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".publish-", dir=folder))
    final: Path | None = None
    try:
        data_key = keys.new_data_key()
        staged = scratch / "data.duckdb"
        with writer(staged, data_key) as con:
            con.execute(f"CREATE TABLE target.{SOURCE_TABLE} AS {select_sql}")
            row = con.execute(f"SELECT count(*) FROM target.{SOURCE_TABLE}").fetchone()
            rows = int(row[0]) if row else 0
        file_sha = _sha256(staged)
        with store.session() as session:
            current = session.scalar(
                select(func.max(DatasetVersion.version)).where(
                    DatasetVersion.dataset_id == dataset_id
                )
            )
            version = (current or 0) + 1
            final = folder / f"v{version}.duckdb"
            session.add(
                DatasetVersion(
                    dataset_id=dataset_id,
                    version=version,
                    row_count=rows,
                    content_sha256=_sha256(source),
                    file_sha256=file_sha,
                    file_name=final.name,
                    wrapped_key=keys.wrap(master, data_key, dataset_id, version),
                    master_key_id=keys.key_id(master),
                    published_by=published_by,
                )
            )
            session.flush()  # the unique (dataset, version) constraint fires here
            os.replace(staged, final)
        return Published(dataset_id, version, rows, final, file_sha)
    except BaseException:
        if final is not None and final.exists():
            _committed = _version_exists(store, dataset_id, final)
            if not _committed:
                final.unlink()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _version_exists(store: Store, dataset_id: str, path: Path) -> bool:
    with store.session() as session:
        return session.scalar(
            select(DatasetVersion.id).where(
                DatasetVersion.dataset_id == dataset_id, DatasetVersion.file_name == path.name
            )
        ) is not None


def _checked_select(source: Path, dataset: Dataset) -> str:
    """SELECT that reads ``source`` with the declared types; raises SchemaMismatch."""
    reader = READERS.get(source.suffix.lower())
    if reader is None:
        raise DatasetError(f"{source}: unsupported format {source.suffix!r}; use .csv or .parquet",
                           code="unsupported_format")
    if not source.is_file():
        raise DatasetError(f"{source}: no such file", code="source_missing")
    options = ", all_varchar = true, header = true" if reader == "read_csv" else ""
    relation = f"{reader}({literal(str(source))}{options})"
    con = duckdb.connect(":memory:")
    try:
        try:
            found = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
        except duckdb.Error as exc:
            raise DatasetError(f"{source}: cannot be read as {reader[5:]}: {exc}",
                               code="unreadable_source") from None
        declared = [c.name for c in dataset.columns]
        missing = [c for c in declared if c not in found]
        extra = [c for c in found if c not in declared]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing declared columns: {', '.join(missing)}")
            if extra:
                parts.append(f"undeclared columns: {', '.join(extra)}")
            raise SchemaMismatch(f"{source} does not match dataset {dataset.id!r}: "
                                 + "; ".join(parts))
        problems = []
        for column in dataset.columns:
            name = f'"{column.name}"'
            bad = con.execute(
                f"SELECT count(*), min({name}::VARCHAR) FROM {relation} "
                f"WHERE {name} IS NOT NULL AND TRY_CAST({name} AS {column.type}) IS NULL"
            ).fetchone()
            if bad and bad[0]:
                problems.append(f"column {column.name!r}: {bad[0]} value(s) are not "
                                f"{column.type} (e.g. {bad[1]!r})")
        if problems:
            raise SchemaMismatch(f"{source} does not match dataset {dataset.id!r}: "
                                 + "; ".join(problems))
    finally:
        con.close()
    casts = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in dataset.columns)
    return f"SELECT {casts} FROM {relation}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
