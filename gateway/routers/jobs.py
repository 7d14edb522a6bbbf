"""Jobs: submit SQL under an agreement, poll, fetch the result in a format, cancel;
and explain a statement without running it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from gateway.access.accounts import Principal
from gateway.deps import PrincipalDep, ServicesDep
from gateway.errors import PRIVACY_REFUSALS, Conflict, ExecutionError
from gateway.jobs import spool
from gateway.jobs.provenance import header_value, provenance
from gateway.jobs.service import JobService
from gateway.jobs.timing import StageTimer
from gateway.policy.models import Channel
from gateway.services import Services
from gateway.store.models import Job

router = APIRouter(tags=["jobs"])
MAX_SQL_CHARS = 100_000
Formats = Literal["json", "csv", "parquet", "arrow"]


class JobIn(BaseModel):
    agreement: Annotated[str, Field(min_length=1, max_length=128,
                                    description="Id of the agreement to query under.")]
    sql: Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS,
                              description="One SELECT statement (DuckDB dialect).")]
    format: Formats = "json"
    wait_ms: Annotated[int, Field(ge=0, le=30_000, description="How long to wait for the "
                                  "result before answering 202 with the job to poll.")] = 5_000


class ExplainIn(BaseModel):
    agreement: Annotated[str, Field(min_length=1, max_length=128)]
    sql: Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS)]


class ChangeOut(BaseModel):
    rule: str
    message: str


class ExplainOut(BaseModel):
    agreement: str
    mode: str
    rewritten_sql: str
    explanation: list[ChangeOut]
    datasets: list[str]


class JobOut(BaseModel):
    id: str
    agreement: str
    status: str
    progress: float | None = None
    created_at: str
    finished_at: str | None
    sql: str
    rewritten_sql: str
    explanation: list[ChangeOut]
    rows: int
    suppressed_groups: int | None = Field(
        default=None, description="Always null: how many groups fell below k is not "
        "disclosed (compared across two queries, the number would tell whether one "
        "person's row meets a condition). Supervisors see it in the audit trail.")
    error: dict[str, str] | None
    result_url: str | None
    provenance: dict[str, Any] | None
    privacy: dict[str, Any] | None = Field(
        default=None, description="Aggregate mode: the noise added (Laplace scale per "
        "column), epsilon charged and left, or the sets query auditing checked.")


def _jobs(svc: Services) -> JobService:
    if svc.jobs is None:
        raise ExecutionError("this gateway runs no jobs", code="runtime_unavailable")
    return svc.jobs


def channel_of(who: Principal) -> Channel:
    # Tokens bound to one agreement are the notebook servers' tokens.
    return Channel.notebook if who.agreement_id else Channel.api


def _job_out(svc: Services, job: Job) -> JobOut:
    done = job.status == "succeeded"
    return JobOut(
        id=job.id, agreement=job.agreement_id, status=job.status,
        progress=100.0 if job.status in ("succeeded",) else _jobs(svc).progress(job.id),
        created_at=job.created_at.isoformat(),
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
        sql=job.sql, rewritten_sql=job.rewritten_sql,
        explanation=[ChangeOut(**c) for c in json.loads(job.explanation or "[]")],
        rows=job.rows,
        error={"code": job.error_code, "message": job.error_message} if job.error_code else None,
        result_url=f"/v1/jobs/{job.id}/result" if done else None,
        provenance=provenance(svc.policies, job, svc.store) if done else None,
        privacy=_privacy(job),
    )


def _privacy(job: Job) -> dict[str, Any] | None:
    return json.loads(job.privacy) if job.privacy else None


def _result(svc: Services, job: Job, format: Formats) -> Response:
    if job.status != "succeeded":
        raise Conflict(f"job {job.id} is {job.status}; no result", code="no_result")
    path = _jobs(svc).result_path(job)
    if not path.exists():
        raise Conflict(f"the result of job {job.id} is no longer kept", code="result_expired")
    prov = provenance(svc.policies, job, svc.store)
    if format == "json":
        envelope = {"job": job.id, "status": job.status, "rows_returned": job.rows,
                    "explanation": json.loads(job.explanation or "[]"),
                    "provenance": prov, "privacy": _privacy(job)}
        return StreamingResponse(spool.stream_json(path, envelope),
                                 media_type=spool.MEDIA_TYPES["json"])
    body = {"csv": lambda: spool.stream_csv(path), "arrow": lambda: spool.stream_arrow(path),
            "parquet": lambda: spool.stream_parquet(path, _jobs(svc).spool)}[format]()
    headers = {
        "Content-Disposition": f'attachment; filename="{job.id}.{format}"',
        "X-DSB-Citation": header_value(prov["citation"]),
        "X-DSB-Provenance": header_value(prov),
        "X-DSB-Receipt": header_value(prov["receipt"]),
        "X-DSB-Rows": str(job.rows),
    }
    return StreamingResponse(body, media_type=spool.MEDIA_TYPES[format], headers=headers)


@router.post("/v1/jobs", summary="Submit SQL under an agreement (its holder)",
             responses={202: {"description": "Accepted; poll the job"},
                        429: {"description": "Daily quota used up (Retry-After)"}})
def submit(body: JobIn, svc: ServicesDep, who: PrincipalDep) -> Response:
    timer = StageTimer()
    job_id = _jobs(svc).submit(who, body.agreement, body.sql, channel_of(who), timer)
    _jobs(svc).wait(job_id, body.wait_ms / 1000)
    job = _jobs(svc).get(who, job_id)
    if job.status == "succeeded":
        response = _result(svc, job, body.format)
        response.headers["X-DSB-Job"] = job.id
        response.headers["Server-Timing"] = timer.header()
        return response
    refusal = PRIVACY_REFUSALS.get(job.error_code) if job.status == "rejected" else None
    if refusal is not None:  # withheld after running (differencing risk, budget): refused
        raise refusal(f"{job.error_message} (job {job.id})")
    out = _job_out(svc, job)
    if job.status in ("failed", "cancelled"):
        return JSONResponse(out.model_dump(), status_code=200)
    return JSONResponse(out.model_dump(), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/v1/jobs", summary="Your jobs, newest first (supervisors: all)")
def list_jobs(svc: ServicesDep, who: PrincipalDep,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobOut]:
    from sqlalchemy import select

    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if who.role.value not in ("supervisor", "admin") or who.agreement_id:
        query = query.where(Job.user_id == who.user_id)
        if who.agreement_id:
            query = query.where(Job.agreement_id == who.agreement_id)
    with svc.store.session() as session:
        jobs = list(session.scalars(query))
    return [_job_out(svc, j) for j in jobs]


@router.get("/v1/jobs/{job_id}", summary="A job's status, progress and provenance (its owner)")
def get_job(job_id: str, svc: ServicesDep, who: PrincipalDep) -> JobOut:
    return _job_out(svc, _jobs(svc).get(who, job_id))


@router.get("/v1/jobs/{job_id}/result", summary="A finished job's result (its owner)")
def get_result(job_id: str, svc: ServicesDep, who: PrincipalDep,
               format: Annotated[Formats, Query()] = "json") -> Response:
    job = _jobs(svc).get(who, job_id)
    if job.user_id != who.user_id:
        # Supervisors see that a job ran and what it asked, not the data it returned.
        from gateway.errors import Forbidden

        raise Forbidden("only the job's owner can fetch its result")
    return _result(svc, job, format)


@router.get("/v1/jobs/{job_id}/receipt",
            summary="The job's audit receipt, sealed with a signed checkpoint and a Merkle "
            "inclusion proof once one covers it (its owner, supervisors)")
def get_receipt(job_id: str, svc: ServicesDep, who: PrincipalDep) -> dict[str, Any]:
    job = _jobs(svc).get(who, job_id)
    if not job.receipt:
        raise Conflict(f"job {job.id} is {job.status}; it has no receipt yet",
                       code="no_receipt")
    seq = int(json.loads(job.receipt)["seq"])
    receipt: dict[str, Any] = svc.audit.receipt(seq).model_dump(mode="json")
    return receipt


@router.post("/v1/jobs/{job_id}/cancel", summary="Cancel a running job (its owner)")
def cancel(job_id: str, svc: ServicesDep, who: PrincipalDep) -> JobOut:
    job = _jobs(svc).get(who, job_id)
    if job.user_id != who.user_id:
        from gateway.errors import Forbidden

        raise Forbidden("only the job's owner can cancel it")
    return _job_out(svc, _jobs(svc).cancel(who, job_id))


@router.post("/v1/queries:explain", summary="Rewrite without running (the agreement's holder)")
def explain(body: ExplainIn, svc: ServicesDep, who: PrincipalDep) -> ExplainOut:
    rewritten = _jobs(svc).explain(who, body.agreement, body.sql, channel_of(who))
    return ExplainOut(agreement=body.agreement, mode=rewritten.mode.value,
                      rewritten_sql=rewritten.display_sql,
                      explanation=[ChangeOut(rule=c.rule, message=c.message)
                                   for c in rewritten.explanation],
                      datasets=list(rewritten.datasets))
