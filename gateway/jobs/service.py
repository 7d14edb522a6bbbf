"""Submit, run, cancel jobs: the gateway's main path (DESIGN.md, "Data flow").

    check agreement (status, window, channel, datasets) and quota
    rewrite to the scenario            -> audit query_rewritten / query_rejected
    run in the agreement's sandbox     -> post-check -> spool
    check the agreement again          -> audit query_executed / query_failed
    release the result with its receipt

The result becomes visible (status ``succeeded``) only after its ``query_executed``
event is committed; if that append fails, the job fails and the spool is deleted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import update

from gateway.access import agreements
from gateway.access.accounts import Principal
from gateway.datasets import catalog
from gateway.datasets.keys import derive_salt
from gateway.errors import DsbError, ExecutionError, NotFound, PrivacyRefusal, QueryRejected
from gateway.jobs import spool
from gateway.jobs.timing import StageTimer
from gateway.policy.models import Channel, Mode
from gateway.privacy.guard import PrivacyGuard, Release, cache_key
from gateway.rewrite import RewriteContext, Rewritten, rewrite
from gateway.rewrite.postcheck import Allowance, postcheck
from gateway.store.db import connection_lost
from gateway.store.models import DatasetVersion, Job, utcnow
from sandbox.runtime.base import SandboxLimits, SandboxSpec

if TYPE_CHECKING:
    from gateway.services import Services

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "rejected"})


@dataclass
class Running:
    """What this process knows of a job it runs (progress, how to stop it)."""

    job_id: str
    agreement_id: str
    datasets: tuple[str, ...]
    progress: float = 0.0
    sandbox: Any = None
    abort_code: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    timer: StageTimer = field(default_factory=StageTimer)
    queued_at: float = 0.0  # time.perf_counter() when handed to the pool


class JobService:
    def __init__(self, services: Services, *, workers: int = 8) -> None:
        self.svc = services
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsb-job")
        self.running: dict[str, Running] = {}
        self.lock = threading.Lock()
        self.spool = spool.spool_dir(services.settings.home)
        self.privacy = PrivacyGuard(services.store)

    # -- the public operations -----------------------------------------------------

    def context(self, who: Principal, agreement_id: str, channel: Channel
                ) -> tuple[agreements.Usable, RewriteContext]:
        usable = agreements.check_usable(self.svc.store, self.svc.policies, who, agreement_id,
                                         channel)
        scenario = usable.scenario
        ctx = RewriteContext(
            scenario=scenario,
            datasets={d: self.svc.policies.dataset(d) for d in scenario.datasets},
            salt=derive_salt(self.svc.settings, usable.agreement.id),
            max_nesting_depth=self.svc.settings.max_nesting_depth,
        )
        return usable, ctx

    def explain(self, who: Principal, agreement_id: str, sql: str, channel: Channel) -> Rewritten:
        _, ctx = self.context(who, agreement_id, channel)
        return rewrite(sql, ctx)

    def submit(self, who: Principal, agreement_id: str, sql: str, channel: Channel,
               timer: StageTimer | None = None) -> str:
        """Accept a statement and start it; returns the job id, or raises the refusal.

        Every refusal after authentication is audited, so a supervisor sees probing.
        """
        job_id = str(uuid.uuid4())
        timer = timer or StageTimer()
        mark = time.perf_counter()
        try:
            usable, ctx = self.context(who, agreement_id, channel)
            agreements.check_quota(self.svc.store, usable)
        except DsbError as exc:
            self.svc.record("query_rejected", who, agreement_id=agreement_id, job_id=job_id,
                            details={"sql": sql, "code": exc.code, "message": exc.message,
                                     "channel": channel.value})
            raise
        timer.add("plan", mark)
        try:
            with timer.stage("rewrite"):
                rewritten = rewrite(sql, ctx)
        except QueryRejected as exc:
            self._reject(job_id, who, agreement_id, channel, sql, exc,
                         self._versions(ctx.scenario.datasets))
            raise
        mark = time.perf_counter()
        latest = catalog.latest_versions(self.svc.store, rewritten.datasets)
        versions = self._describe(rewritten.datasets, latest)
        key = cache_key(agreement_id, rewritten, versions)
        try:
            # Noise: a repeat gets its stored answer; a new query the budget cannot pay
            # is refused before it runs.
            cached = self.privacy.before_run(agreement_id, usable.scenario, rewritten, key)
        except PrivacyRefusal as exc:
            self._reject(job_id, who, agreement_id, channel, sql, exc, versions)
            raise
        timer.add("plan", mark)
        mark = time.perf_counter()
        self.svc.record("query_rewritten", who, agreement_id=agreement_id, job_id=job_id,
                        datasets=versions,
                        details={"sql": sql, "rewritten_sql": rewritten.display_sql,
                                 "explanation": [c.message for c in rewritten.explanation],
                                 "channel": channel.value})
        # The trail now holds the accepted statement: its job row must follow, or the
        # trail would hold a job with no outcome.
        _until_store_answers(lambda: self._insert(
            job_id, who, agreement_id, channel, sql, status="queued", rewritten=rewritten,
            versions=versions))
        timer.add("record", mark)
        running = Running(job_id, agreement_id, rewritten.datasets, timer=timer,
                          queued_at=time.perf_counter())
        with self.lock:
            self.running[job_id] = running
        future: Future[None] = self.pool.submit(self._run, running, who, usable, rewritten,
                                                versions, latest, channel, key, cached)
        future.add_done_callback(lambda _f: running.done.set())
        return job_id

    def wait(self, job_id: str, timeout_s: float) -> None:
        running = self.running.get(job_id)
        if running is not None:
            running.done.wait(timeout_s)

    def progress(self, job_id: str) -> float | None:
        running = self.running.get(job_id)
        return running.progress if running else None

    def get(self, who: Principal, job_id: str) -> Job:
        with self.svc.store.session() as session:
            job = session.get(Job, job_id)
        if job is None or not self._may_see(who, job):
            raise NotFound(f"no job {job_id!r} for you", code="unknown_job")
        return job

    def cancel(self, who: Principal, job_id: str) -> Job:
        job = self.get(who, job_id)
        if job.status in TERMINAL:
            return job
        self.abort(job_id, "cancelled")
        self.wait(job_id, 10)
        return self.get(who, job_id)

    def abort(self, job_id: str, code: str) -> None:
        running = self.running.get(job_id)
        if running is None:
            return
        running.abort_code = code
        sandbox = running.sandbox
        if sandbox is not None and self.svc.runtime is not None:
            self.svc.runtime.cancel(sandbox)

    def abort_where(self, code: str, *, agreement_id: str | None = None,
                    dataset_id: str | None = None) -> None:
        """Stop running jobs of an agreement or over a dataset (suspension, revocation)."""
        for running in list(self.running.values()):
            if agreement_id in (None, running.agreement_id) and (
                    dataset_id is None or dataset_id in running.datasets):
                self.abort(running.job_id, code)

    def result_path(self, job: Job) -> Any:
        return self.spool / f"{job.id}.arrows"

    def close(self) -> None:
        for job_id in list(self.running):
            self.abort(job_id, "cancelled")
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- running -------------------------------------------------------------------

    def _run(self, running: Running, who: Principal, usable: agreements.Usable,
             rewritten: Rewritten, versions: list[dict[str, Any]],
             latest: dict[str, DatasetVersion], channel: Channel, key: str,
             cached: Release | None) -> None:
        started = time.monotonic()
        timer = running.timer
        timer.add("queue", running.queued_at)
        job_id = running.job_id
        path = self.spool / f"{job_id}.arrows"
        with timer.stage("record"):
            _until_store_answers(lambda: self._update(job_id, status="running"))
        try:
            rows, columns, suppressed, digest, privacy = self._execute(
                running, usable, rewritten, latest, path, key, cached)
            # A suspension or revocation while the statement ran wins over its result.
            with timer.stage("plan"):
                agreements.check_usable(self.svc.store, self.svc.policies, who,
                                        usable.agreement.id, channel)
            if running.abort_code:
                raise ExecutionError("the job was stopped", code=running.abort_code)
            mark = time.perf_counter()
            receipt = self.svc.record(
                "query_executed", who, agreement_id=usable.agreement.id, job_id=job_id,
                datasets=versions,
                # Not the count of suppressed groups: the holder reads this event in the
                # receipt, and that count is an answer (it stays on the job row, which
                # supervisors see in the usage report).
                details={"rows": rows, "result_sha256": digest,
                         "duration_ms": round((time.monotonic() - started) * 1000, 1),
                         **_audited_privacy(privacy)})
            self._update(job_id, status="succeeded", rows=rows, cells=rows * columns,
                         suppressed_groups=suppressed,
                         result_sha256=digest, receipt=json.dumps(receipt),
                         privacy=json.dumps(privacy) if privacy else "",
                         finished_at=utcnow())
            timer.add("record", mark)
        except BaseException as exc:
            path.unlink(missing_ok=True)
            code, message = self._failure(running, exc)
            refused = isinstance(exc, PrivacyRefusal)  # withheld by rule, not a failure
            status = "rejected" if refused else "cancelled" if code == "cancelled" else "failed"
            details = {"code": code, "message": message, "internal": repr(exc)[:2000],
                       "duration_ms": round((time.monotonic() - started) * 1000, 1)}
            try:
                _until_store_answers(lambda: self.svc.record(
                    "query_rejected" if refused else "query_failed", who,
                    agreement_id=usable.agreement.id, job_id=job_id,
                    datasets=versions, details=details))
            finally:
                _until_store_answers(lambda: self._update(
                    job_id, status=status, error_code=code, error_message=message,
                    finished_at=utcnow()))
            if not isinstance(exc, Exception):
                raise
        finally:
            with self.lock:
                self.running.pop(job_id, None)

    def _execute(self, running: Running, usable: agreements.Usable, rewritten: Rewritten,
                 latest: dict[str, DatasetVersion], path: Any, key: str,
                 cached: Release | None) -> tuple[int, int, int, str, dict[str, Any]]:
        if cached is not None:  # a repeated noisy query: its stored answer, not a new one
            rows, columns, digest = self._spool(path, cached.table.schema,
                                                cached.table.to_batches())
            return rows, columns, cached.suppressed_groups, digest, cached.privacy
        runtime = self.svc.runtime
        if runtime is None:
            raise ExecutionError("no sandbox runtime is configured", code="runtime_unavailable")
        # Statuses were checked on submission and are checked again before release.
        mounts = catalog.mounts_of(self.svc.settings, rewritten.datasets, latest)
        spec = SandboxSpec(usable.agreement.id, tuple(mounts),
                           SandboxLimits.from_scenario(usable.scenario.limits))
        mark = time.perf_counter()
        sandbox = runtime.acquire(spec)
        running.sandbox = sandbox
        try:
            if running.abort_code:
                raise ExecutionError("the job was stopped", code=running.abort_code)

            def progress(p: Any) -> None:
                running.progress = max(running.progress, float(p.percent))

            result = runtime.execute(sandbox, rewritten.sql,
                                     timeout_ms=usable.scenario.limits.timeout_ms,
                                     max_rows=rewritten.max_rows + 1, on_progress=progress)
            running.timer.add("sandbox", mark)
            mark = time.perf_counter()
            suppressed = 0
            privacy: dict[str, Any] = {}
            if rewritten.mode is Mode.aggregate:
                # Aggregates are small (capped); the post-check needs all groups at once.
                release = self.privacy.release(
                    result.read_all(), rewritten, agreement_id=usable.agreement.id,
                    scenario=usable.scenario, job_id=running.job_id, key=key,
                    noun=self._entities(rewritten))
                suppressed, privacy = release.suppressed_groups, release.privacy
                batches = release.table.to_batches()
                schema = release.table.schema
            else:
                batches, schema = self._checked_stream(result, rewritten)
            rows, columns, digest = self._spool(path, schema, batches)
            # Batches stream from the sandbox through the post-check into the spool.
            running.timer.add("release", mark)
            return rows, columns, suppressed, digest, privacy
        finally:
            running.sandbox = None
            runtime.release(sandbox)

    @staticmethod
    def _spool(path: Any, schema: pa.Schema, batches: Any) -> tuple[int, int, str]:
        """Write the result to the spool: (rows, columns, sha256 of the file)."""
        writer = spool.SpoolWriter(path, schema)
        try:
            for batch in batches:
                writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        rows = writer.rows
        return rows, len(schema), writer.close()

    def _entities(self, rewritten: Rewritten) -> str:
        keys = sorted({key for d in rewritten.datasets
                       if (key := self.svc.policies.dataset(d).entity_key)})
        return f"entities ({', '.join(keys)})" if keys else "entities"

    @staticmethod
    def _checked_stream(result: Any, rewritten: Rewritten) -> tuple[Any, pa.Schema]:
        """Post-check each batch as it arrives; one allowance keeps the row and cell caps
        across batches (the head's check only gives the schema, or withholds early)."""
        first = next(iter(result), None)
        if first is None:
            empty = postcheck(pa.Table.from_batches([], result.schema), rewritten).table
            return iter(()), empty.schema
        head = postcheck(pa.Table.from_batches([first]), rewritten).table

        def rest() -> Any:
            allowance = Allowance.of(rewritten)
            for batch in _chain([first], result):
                checked = postcheck(pa.Table.from_batches([batch]), rewritten, allowance)
                yield from checked.table.to_batches()
                if checked.truncated or allowance.spent:
                    return

        return rest(), head.schema

    # -- bookkeeping ---------------------------------------------------------------

    def _failure(self, running: Running, exc: BaseException) -> tuple[str, str]:
        if running.abort_code and running.abort_code != "cancelled":
            return running.abort_code, f"the job was stopped: {running.abort_code}"
        if connection_lost(exc):
            return "store_unavailable", "the metadata database was unavailable; retry the query"
        if isinstance(exc, DsbError):
            if running.abort_code == "cancelled" and exc.code in ("cancelled", "sandbox_failed"):
                return "cancelled", "cancelled on request"
            return exc.code, exc.message
        return "execution_failed", "the statement failed; the failure was recorded"

    def _reject(self, job_id: str, who: Principal, agreement_id: str, channel: Channel,
                sql: str, exc: DsbError, versions: list[dict[str, Any]]) -> None:
        """A refusal before running: a rejected job and its audit event."""
        self._insert(job_id, who, agreement_id, channel, sql, status="rejected",
                     error=(exc.code, exc.message))
        self.svc.record("query_rejected", who, agreement_id=agreement_id, job_id=job_id,
                        datasets=versions,
                        details={"sql": sql, "code": exc.code, "message": exc.message,
                                 "channel": channel.value})

    def _versions(self, dataset_ids: Any) -> list[dict[str, Any]]:
        return self._describe(dataset_ids, catalog.latest_versions(self.svc.store, dataset_ids))

    def _describe(self, dataset_ids: Any, latest: dict[str, DatasetVersion]
                  ) -> list[dict[str, Any]]:
        out = []
        for dataset_id in dataset_ids:
            row = latest.get(dataset_id)
            dataset = self.svc.policies.dataset(dataset_id)
            out.append({"id": dataset_id, "version": dataset.version,
                        "published_version": row.version if row else None,
                        "sha256": row.file_sha256 if row else None})
        return out

    def _insert(self, job_id: str, who: Principal, agreement_id: str, channel: Channel,
                sql: str, *, status: str, rewritten: Rewritten | None = None,
                versions: list[dict[str, Any]] | None = None,
                error: tuple[str, str] | None = None) -> None:
        with self.svc.store.session() as session:
            session.add(Job(
                id=job_id, user_id=who.user_id, agreement_id=agreement_id,
                channel=channel.value, status=status, sql=sql,
                rewritten_sql=rewritten.display_sql if rewritten else "",
                explanation=json.dumps([{"rule": c.rule, "message": c.message}
                                        for c in rewritten.explanation] if rewritten else []),
                datasets=json.dumps(versions or []),
                error_code=error[0] if error else "", error_message=error[1] if error else "",
                finished_at=utcnow() if status in TERMINAL else None,
            ))

    def _update(self, job_id: str, **values: Any) -> None:
        # One UPDATE statement: loading the row into the ORM first doubled the cost.
        with self.svc.store.engine.begin() as connection:
            connection.execute(update(Job).where(Job.id == job_id).values(**values))

    @staticmethod
    def _may_see(who: Principal, job: Job) -> bool:
        if who.role.value in ("supervisor", "admin"):
            return who.agreement_id is None
        return job.user_id == who.user_id and who.agreement_id in (None, job.agreement_id)


def _audited_privacy(privacy: dict[str, Any]) -> dict[str, Any]:
    """What the trail keeps of a release's privacy accounting (epsilon, cache, auditing)."""
    if "epsilon_charged" in privacy:
        return {"epsilon_charged": privacy["epsilon_charged"], "noisy_answer_cached":
                privacy["cached"], "epsilon_spent_total": privacy["budget"]["spent"]}
    if "query_auditing" in privacy:
        return {"audited_sets": privacy["query_auditing"]["sets_checked"]}
    return {}


def _chain(first: list[Any], rest: Any) -> Any:
    yield from first
    yield from rest


STORE_RETRY_S = 30.0


def _until_store_answers(step: Callable[[], object]) -> None:
    """Run ``step``, retrying while the database is restarting (bounded).

    A job's outcome must reach the trail: if the store dropped mid-job, giving up at
    once would leave the job ``running`` with no closing event. Other errors propagate.
    """
    deadline = time.monotonic() + STORE_RETRY_S
    while True:
        try:
            step()
            return
        except Exception as exc:
            if not connection_lost(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
