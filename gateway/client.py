"""Python client for the gateway API (also what `dsb query` uses).

    >>> client = GatewayClient("http://127.0.0.1:8000", token="dsb_...")   # doctest: +SKIP
    >>> table = client.query("agr-acme-flights-aggregate",
    ...     "SELECT carrier, avg(dep_delay) FROM flights GROUP BY carrier")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc

Progress = Callable[[str, float | None], None]


class GatewayError(Exception):
    """A problem+json answer: ``code`` is the stable machine-readable reason."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body


@dataclass
class QueryResult:
    table: pa.Table
    job_id: str
    provenance: dict[str, Any]


class GatewayClient:
    def __init__(self, base_url: str, token: str, *, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"code": "http_error", "detail": response.text[:500]}
            raise GatewayError(response.status_code, body.get("code", "http_error"),
                               body.get("detail", ""), body)
        return response

    def explain(self, agreement: str, sql: str) -> dict[str, Any]:
        body: dict[str, Any] = self._check(self.http.post(
            "/v1/queries:explain", json={"agreement": agreement, "sql": sql})).json()
        return body

    def submit(self, agreement: str, sql: str, *, wait_ms: int = 0) -> dict[str, Any]:
        response = self._check(self.http.post("/v1/jobs", json={
            "agreement": agreement, "sql": sql, "format": "arrow", "wait_ms": wait_ms}))
        if response.headers.get("content-type", "").startswith("application/json"):
            job: dict[str, Any] = response.json()
            return job
        return {"id": response.headers["X-DSB-Job"], "status": "succeeded"}

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._check(self.http.get(f"/v1/jobs/{job_id}")).json()
        return body

    def wait(self, job_id: str, *, on_progress: Progress | None = None,
             poll_s: float = 0.2) -> dict[str, Any]:
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job["status"], job.get("progress"))
            if job["status"] in ("succeeded", "failed", "cancelled", "rejected"):
                return job
            time.sleep(poll_s)

    def download(self, job_id: str, target: Path, *, format: str = "parquet") -> Path:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/result",
                              params={"format": format}) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target

    def query(self, agreement: str, sql: str, *, on_progress: Progress | None = None
              ) -> QueryResult:
        """Run ``sql`` and return the result as an Arrow table, with its provenance."""
        job = self.submit(agreement, sql, wait_ms=2000)
        if job["status"] != "succeeded":
            job = self.wait(job["id"], on_progress=on_progress)
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            raise GatewayError(200, error.get("code", job["status"]), error.get("message", ""),
                               job)
        return self.query_result(job["id"])

    def query_result(self, job_id: str) -> QueryResult:
        response = self._check(self.http.get(f"/v1/jobs/{job_id}/result",
                                             params={"format": "arrow"}))
        table = ipc.open_stream(io.BytesIO(response.content)).read_all()
        return QueryResult(table, job_id, self.job(job_id).get("provenance") or {})
