"""The notebook's way to data: every query goes through the gateway, like an API query.

Inside a notebook server the environment holds ``DSB_GATEWAY_URL``, ``DSB_TOKEN`` (bound
to one agreement by the spawner) and ``DSB_AGREEMENT``. Standard library HTTP only, so
the image needs no extra wheels; pandas and pyarrow are imported when first used.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

TERMINAL = ("succeeded", "failed", "cancelled", "rejected")


class SandboxError(Exception):
    """The gateway refused or failed; ``code`` is its machine-readable reason."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SandboxError(0, "not_configured", f"{name} is not set: run inside a notebook server")
    return value


def _call(method: str, path: str, body: dict[str, Any] | None = None,
          params: str = "") -> tuple[bytes, dict[str, str]]:
    url = _env("DSB_GATEWAY_URL").rstrip("/") + path + (f"?{params}" if params else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the gateway's own http URL
        url, data=data, method=method, headers={
        "Authorization": f"Bearer {_env('DSB_TOKEN')}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - gateway URL
            return response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
        except ValueError:
            problem = {}
        raise SandboxError(exc.code, problem.get("code", "http_error"),
                           problem.get("detail", str(exc))) from None


class Result:
    """A query result: ``.df`` (pandas), ``.arrow()``, ``.provenance`` with the citation."""

    def __init__(self, table: pa.Table, job_id: str, provenance: dict[str, Any]) -> None:
        self.table, self.job_id, self.provenance = table, job_id, provenance

    def arrow(self) -> pa.Table:
        return self.table

    @property
    def citation(self) -> str:
        return str(self.provenance.get("citation", ""))


def query(statement: str) -> Result:
    """Run ``statement`` under this server's agreement; rewritten, limited and audited."""
    import pyarrow.ipc as ipc

    agreement = _env("DSB_AGREEMENT")
    raw, headers = _call("POST", "/v1/jobs", {"agreement": agreement, "sql": statement,
                                              "format": "arrow", "wait_ms": 5000})
    if headers.get("Content-Type", headers.get("content-type", "")).startswith("application/json"):
        job = json.loads(raw)
        while job["status"] not in TERMINAL:
            time.sleep(0.2)
            job = json.loads(_call("GET", f"/v1/jobs/{job['id']}")[0])
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            raise SandboxError(200, error.get("code", job["status"]), error.get("message", ""))
        job_id = job["id"]
        raw, _ = _call("GET", f"/v1/jobs/{job_id}/result", params="format=arrow")
    else:
        job_id = headers.get("X-DSB-Job") or headers.get("x-dsb-job", "")
    table = ipc.open_stream(raw).read_all()
    job = json.loads(_call("GET", f"/v1/jobs/{job_id}")[0])
    return Result(table, job_id, job.get("provenance") or {})


def sql(statement: str) -> pd.DataFrame:
    """``df = sql("SELECT ...")``: a pandas DataFrame; ``df.attrs`` holds the provenance.

    ``df.arrow()`` gives the Arrow table the gateway returned.
    """
    result = query(statement)
    frame = result.table.to_pandas()
    frame.attrs["provenance"] = result.provenance
    frame.attrs["citation"] = result.citation
    frame.arrow = result.arrow
    return frame


def datasets() -> list[dict[str, Any]]:
    """What this server's agreement covers, each dataset with its citation text."""
    agreement = json.loads(_call("GET", f"/v1/agreements/{_env('DSB_AGREEMENT')}")[0])
    out = []
    for dataset_id in agreement.get("datasets", []):
        entry = json.loads(_call("GET", f"/v1/datasets/{dataset_id}")[0])
        mounted = Path("/data") / f"{dataset_id}.parquet"
        out.append({"id": dataset_id, "title": entry.get("title", ""),
                    "citation": entry.get("citation", ""),
                    "mounted_at": str(mounted) if mounted.exists() else None})
    return out


def export(path: str | os.PathLike[str], reason: str) -> dict[str, Any]:
    """File an airlock request for ``path``; returns the request with its check result."""
    file = Path(path)
    content = base64.b64encode(file.read_bytes()).decode()
    raw, _ = _call("POST", "/v1/exports", {"agreement": _env("DSB_AGREEMENT"),
                                           "filename": file.name, "reason": reason,
                                           "content_b64": content})
    answer: dict[str, Any] = json.loads(raw)
    return answer


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext sandbox.client`` (done at kernel start): the ``%%sql`` cell magic."""

    def sql_magic(line: str, cell: str) -> pd.DataFrame:
        frame = sql(cell)
        if line.strip():
            ipython.user_ns[line.strip()] = frame
        return frame

    ipython.register_magic_function(sql_magic, magic_kind="cell", magic_name="sql")
