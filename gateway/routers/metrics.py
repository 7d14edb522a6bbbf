"""``/metrics`` in the Prometheus text format.

Counts come from the job table and the audit log at scrape time (no in-process
counters), so every gateway process behind a balancer reports the same totals.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select

from gateway.deps import ServicesDep
from gateway.services import Services
from gateway.store.models import Job

router = APIRouter(tags=["operations"])
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def collect(svc: Services) -> bytes:
    registry = CollectorRegistry()
    queries = Gauge("dsb_queries", "Jobs by status", ["status"], registry=registry)
    rejected = Gauge("dsb_rejections", "Rejected or failed jobs by code", ["code"],
                     registry=registry)
    latency = Gauge("dsb_query_latency_seconds_bucket",
                    "Finished jobs whose latency is at most le seconds", ["le"],
                    registry=registry)
    latency_sum = Gauge("dsb_query_latency_seconds_sum", "Total latency of finished jobs",
                        registry=registry)
    sandboxes = Gauge("dsb_sandboxes_live", "Sandboxes alive now", registry=registry)
    audit_lag = Gauge("dsb_audit_unsealed_events",
                      "Audit events not yet covered by a signed checkpoint", registry=registry)
    audit_age = Gauge("dsb_audit_last_checkpoint_age_seconds",
                      "Seconds since the last signed checkpoint", registry=registry)
    with svc.store.session() as session:
        for status, count in session.execute(select(Job.status, func.count())
                                             .group_by(Job.status)):
            queries.labels(status).set(count)
        for code, count in session.execute(select(Job.error_code, func.count())
                                           .where(Job.error_code != "")
                                           .group_by(Job.error_code)):
            rejected.labels(code).set(count)
        spans = [(end - start).total_seconds() for start, end in session.execute(
            select(Job.created_at, Job.finished_at).where(Job.finished_at.is_not(None)))
            if end is not None]
    for bound in LATENCY_BUCKETS:
        latency.labels(str(bound)).set(sum(1 for s in spans if s <= bound))
    latency.labels("+Inf").set(len(spans))
    latency_sum.set(sum(spans))
    sandboxes.set(_live_sandboxes(svc))
    lag, age = _audit_lag(svc)
    audit_lag.set(lag)
    audit_age.set(age)
    return generate_latest(registry)


def _live_sandboxes(svc: Services) -> int:
    runtime = svc.runtime
    for name in ("live_count", "live"):
        found = getattr(runtime, name, None)
        if callable(found):
            value = found()
            return value if isinstance(value, int) else len(value)
    return 0


def _audit_lag(svc: Services) -> tuple[int, float]:
    from gateway.governance.audit_status import chain_status

    status = chain_status(svc)
    age = (dt.datetime.now(dt.UTC) - status.checkpoint_at).total_seconds() \
        if status.checkpoint_at else -1.0
    return status.unsealed, age


@router.get("/metrics", summary="Prometheus metrics (public on loopback; firewall it)")
def metrics(svc: ServicesDep) -> Response:
    return Response(collect(svc), media_type=CONTENT_TYPE_LATEST)
