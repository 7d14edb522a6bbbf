"""The open catalog: what datasets exist, and the open ones themselves.

Listing is public (the rules require an open list). Closed datasets are listed to
operators and supervisors only. Open-class datasets can be previewed and downloaded
without an agreement; conditional ones only through an agreement's queries.
"""

from __future__ import annotations

import io
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from gateway.access.accounts import Principal, Role
from gateway.datasets import catalog
from gateway.deps import OptionalPrincipalDep, ServicesDep
from gateway.errors import Forbidden, NotFound
from gateway.governance.workflows import open_marks
from gateway.policy.models import DataClass, Dataset, DatasetStatus
from gateway.services import Services
from sandbox.engine import EngineLimits, open_engine, source_table

router = APIRouter(prefix="/v1/datasets", tags=["catalog"])
PREVIEW_ROWS = 20


class ColumnOut(BaseModel):
    name: str
    type: str
    meaning: str
    sensitivity: str


class VersionOut(BaseModel):
    version: int
    published_at: str
    rows: int
    sha256: str


class DatasetOut(BaseModel):
    id: str
    title: str
    provider: str
    domain: str
    summary: str
    data_class: Literal["open", "conditional", "closed"]
    status: str
    format: str
    update_frequency: str
    version: str
    citation: str
    fields: list[ColumnOut]
    latest: VersionOut | None
    objections: list[dict[str, str]] = []


def _sees_closed(who: Principal | None) -> bool:
    return who is not None and who.role in (Role.provider, Role.admin, Role.supervisor)


def _out(svc: Services, dataset: Dataset) -> DatasetOut:
    row = catalog.latest_version(svc.store, dataset.id)
    return DatasetOut(
        id=dataset.id, title=dataset.title, provider=dataset.provider.name,
        domain=dataset.domain, summary=dataset.summary, data_class=dataset.class_.value,
        status=catalog.status(svc.store, svc.policies, dataset.id).value, format=dataset.format,
        update_frequency=dataset.update_frequency, version=dataset.version,
        citation=dataset.citation(),
        fields=[ColumnOut(name=c.name, type=c.type, meaning=c.meaning,
                          sensitivity=c.sensitivity.value) for c in dataset.columns],
        latest=VersionOut(version=row.version, published_at=row.created_at.isoformat(),
                          rows=row.row_count, sha256=row.file_sha256) if row else None,
        objections=open_marks(svc.store, [dataset.id])[dataset.id],
    )


def _visible(svc: Services, who: Principal | None, dataset_id: str) -> Dataset:
    dataset = svc.policies.datasets.get(dataset_id)
    if dataset is None or (dataset.class_ is DataClass.closed and not _sees_closed(who)):
        raise NotFound(f"no dataset {dataset_id!r}", code="unknown_dataset")
    return dataset


@router.get("", summary="List datasets (public; closed ones to operators only)")
def list_datasets(svc: ServicesDep, who: OptionalPrincipalDep) -> list[DatasetOut]:
    return [_out(svc, d) for d in svc.policies.datasets.values()
            if d.class_ is not DataClass.closed or _sees_closed(who)]


@router.get("/{dataset_id}", summary="One dataset's catalog entry (public)")
def get_dataset(dataset_id: str, svc: ServicesDep, who: OptionalPrincipalDep) -> DatasetOut:
    return _out(svc, _visible(svc, who, dataset_id))


def _open_table(svc: Services, dataset: Dataset, limit: int | None) -> pa.Table:
    if dataset.class_ is not DataClass.open:
        raise Forbidden(f"dataset {dataset.id!r} is {dataset.class_.value}: it is available "
                        "only through an agreement", code="not_open_data")
    current = catalog.status(svc.store, svc.policies, dataset.id)
    if current is not DatasetStatus.available:
        raise Forbidden(f"dataset {dataset.id!r} is {current.value}",
                        code=f"dataset_{current.value}")
    mounts = catalog.mounts(svc.settings, svc.store, [dataset.id])
    con = open_engine(mounts, EngineLimits(memory_mb=512, threads=1))
    try:
        sql = f"SELECT * FROM {source_table(dataset.id)}"
        return con.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetch_arrow_table()
    finally:
        con.close()


@router.get("/{dataset_id}/preview", summary="First rows of an open dataset (public)")
def preview(dataset_id: str, svc: ServicesDep, who: OptionalPrincipalDep
            ) -> dict[str, object]:
    dataset = _visible(svc, who, dataset_id)
    table = _open_table(svc, dataset, PREVIEW_ROWS)
    return {"dataset": dataset.id, "citation": dataset.citation(),
            "columns": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}


@router.get("/{dataset_id}/download", summary="Whole open dataset as CSV or Parquet (public)")
def download(dataset_id: str, svc: ServicesDep, who: OptionalPrincipalDep,
             format: Annotated[Literal["csv", "parquet"], Query()] = "csv") -> Response:
    dataset = _visible(svc, who, dataset_id)
    table = _open_table(svc, dataset, None)
    buffer = io.BytesIO()
    if format == "csv":
        pacsv.write_csv(table, buffer)
        media = "text/csv"
    else:
        pq.write_table(table, buffer)
        media = "application/vnd.apache.parquet"
    return Response(buffer.getvalue(), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{dataset.id}.{format}"',
        "X-DSB-Citation": dataset.citation().encode("ascii", "backslashreplace").decode(),
    })
