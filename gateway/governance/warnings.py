"""Early-warning rules over the job log: bursts, rejections, differencing, sandbox events.

Each rule is a small function ``(jobs, thresholds) -> list[Warning]`` and ``RULES`` is the
pipeline, so a new rule is one function. Jobs are read once per evaluation.

Differencing: two queries whose normalised shape is the same and whose only difference
is one literal inside WHERE (``age = 41`` vs ``age = 42``, or ``id <> 7`` next to no
filter at all) can isolate one person by subtracting aggregates. Normalising with sqlglot
(literals replaced by placeholders) groups queries by shape; within a group, pairs that
differ in exactly one WHERE literal — with everything else identical — are flagged.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlglot
from sqlalchemy import select
from sqlglot import exp

from gateway.store.db import Store
from gateway.store.models import Job

SECURITY_CODES = frozenset({"sandbox_failed", "resource_exhausted", "statement_timeout",
                            "forbidden_function", "forbidden_syntax", "reserved_name"})


@dataclass(frozen=True)
class Thresholds:
    burst_queries: int = 60  # queries by one user ...
    burst_window_s: int = 60  # ... within this many seconds
    rejected_queries: int = 20  # rejections by one user in the window below
    rejected_window_s: int = 3600
    differencing_pairs: int = 1  # pairs of one shape that differ by one WHERE literal
    security_events: int = 3  # failures with a security code in the rejection window
    differencing_refusals: int = 1  # results withheld by query auditing (differencing_risk)


@dataclass(frozen=True)
class Warning:
    rule: str  # burst | rejections | differencing | security | differencing_risk
    user: str
    agreement: str
    count: int
    first_at: str
    last_at: str
    jobs: list[str] = field(default_factory=list)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobView:
    id: str
    user: str
    agreement: str
    sql: str
    status: str
    code: str
    at: dt.datetime


Rule = Callable[[Sequence[JobView], Thresholds], list[Warning]]


def _by_user(jobs: Sequence[JobView]) -> dict[tuple[str, str], list[JobView]]:
    groups: dict[tuple[str, str], list[JobView]] = defaultdict(list)
    for job in jobs:
        groups[(job.user, job.agreement)].append(job)
    return groups


def _densest(jobs: list[JobView], window_s: int) -> list[JobView]:
    """The largest run of ``jobs`` (sorted by time) that fits inside one window."""
    best: list[JobView] = []
    start = 0
    for end in range(len(jobs)):
        while (jobs[end].at - jobs[start].at).total_seconds() > window_s:
            start += 1
        if end - start + 1 > len(best):
            best = jobs[start:end + 1]
    return best


def _warning(rule: str, run: list[JobView], detail: str) -> Warning:
    return Warning(rule=rule, user=run[0].user, agreement=run[0].agreement, count=len(run),
                   first_at=run[0].at.isoformat(), last_at=run[-1].at.isoformat(),
                   jobs=[j.id for j in run[:20]], detail=detail)


def bursts(jobs: Sequence[JobView], limits: Thresholds) -> list[Warning]:
    out = []
    for run_jobs in _by_user(jobs).values():
        run = _densest(run_jobs, limits.burst_window_s)
        if len(run) >= limits.burst_queries:
            out.append(_warning("burst", run, f"{len(run)} queries within "
                                f"{limits.burst_window_s} s"))
    return out


def rejections(jobs: Sequence[JobView], limits: Thresholds) -> list[Warning]:
    out = []
    for run_jobs in _by_user(jobs).values():
        rejected = [j for j in run_jobs if j.status == "rejected"]
        run = _densest(rejected, limits.rejected_window_s)
        if len(run) >= limits.rejected_queries:
            codes = sorted({j.code for j in run})
            out.append(_warning("rejections", run, "rejected: " + ", ".join(codes)))
    return out


def security_events(jobs: Sequence[JobView], limits: Thresholds) -> list[Warning]:
    out = []
    for run_jobs in _by_user(jobs).values():
        hits = [j for j in run_jobs if j.code in SECURITY_CODES]
        run = _densest(hits, limits.rejected_window_s)
        if len(run) >= limits.security_events:
            out.append(_warning("security", run, ", ".join(sorted({j.code for j in run}))))
    return out


RANGE = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)
NARROW_RELATIVE = 0.1  # a bound moved by at most 10 % (or by 1) is a narrow change


def shape(sql: str) -> tuple[str, tuple[str, ...], tuple[bool, ...]] | None:
    """(shape with WHERE literals as ``?``, those literals, whether each is a numeric
    range bound), or None when the text does not parse.

    >>> shape("SELECT avg(income) FROM residents WHERE age >= 41")[:2]
    ('SELECT AVG(income) FROM residents WHERE age >= ?', ('41',))
    """
    try:
        return _shape(sql)
    except RecursionError:  # nested too deep to parse or print: refused as too_complex
        return None


def _shape(sql: str) -> tuple[str, tuple[str, ...], tuple[bool, ...]] | None:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    if tree is None:
        return None
    literals: list[str] = []
    ranged: list[bool] = []
    for where in tree.find_all(exp.Where):
        for literal in list(where.find_all(exp.Literal)):
            literals.append(literal.this)
            parent = literal.parent
            if isinstance(parent, exp.Neg):  # -5 parses as Neg(5)
                parent = parent.parent
            ranged.append(literal.is_number and isinstance(parent, RANGE))
            literal.replace(exp.Placeholder())
    return tree.sql(dialect="duckdb"), tuple(literals), tuple(ranged)


def _narrow(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    return x != y and abs(x - y) <= max(1.0, NARROW_RELATIVE * max(abs(x), abs(y)))


def _differs_narrowly(a: tuple[tuple[str, ...], tuple[bool, ...]],
                      b: tuple[tuple[str, ...], tuple[bool, ...]]) -> bool:
    """Exactly one WHERE literal differs, it is a numeric range bound, and it moved a
    little: the two results then differ by the few rows inside the sliver."""
    (la, ra), (lb, _) = a, b
    if len(la) != len(lb):
        return False
    diff = [i for i, (x, y) in enumerate(zip(la, lb, strict=True)) if x != y]
    return len(diff) == 1 and ra[diff[0]] and _narrow(la[diff[0]], lb[diff[0]])


def differencing(jobs: Sequence[JobView], limits: Thresholds) -> list[Warning]:
    """Same user and agreement, same shape, one range bound moved by a sliver."""
    out = []
    for run_jobs in _by_user(jobs).values():
        shapes: dict[str, list[tuple[tuple[tuple[str, ...], tuple[bool, ...]], JobView]]] = \
            defaultdict(list)
        for job in run_jobs:
            if job.status == "rejected":
                continue
            found = shape(job.sql)
            if found is not None and any(found[2]):
                shapes[found[0]].append(((found[1], found[2]), job))
        for text, members in shapes.items():
            pairs = [(a, b) for i, (ka, a) in enumerate(members)
                     for kb, b in members[i + 1:] if _differs_narrowly(ka, kb)]
            if len(pairs) >= limits.differencing_pairs:
                involved = sorted({j for pair in pairs for j in pair}, key=lambda j: j.at)
                out.append(_warning("differencing", involved,
                                    f"{len(pairs)} pair(s) whose range bound moved by a "
                                    f"sliver: {text}"))
    return out


def differencing_refusals(jobs: Sequence[JobView], limits: Thresholds) -> list[Warning]:
    """Query auditing withheld a result: it would have isolated people with earlier ones.

    The rule above guesses from SQL text; this one is the gateway's own finding over the
    entities released, so one refusal is worth a supervisor's look.
    """
    out = []
    for run_jobs in _by_user(jobs).values():
        hits = [j for j in run_jobs if j.code == "differencing_risk"]
        if hits and len(hits) >= limits.differencing_refusals:
            out.append(_warning("differencing_risk", hits, f"{len(hits)} result(s) withheld by "
                                "query auditing: with earlier releases they would single out "
                                "fewer than k entities"))
    return out


RULES: tuple[Rule, ...] = (bursts, rejections, differencing, security_events,
                           differencing_refusals)


def load_jobs(store: Store, *, since: dt.datetime, user: str | None = None) -> list[JobView]:
    query = select(Job.id, Job.user_id, Job.agreement_id, Job.sql, Job.status, Job.error_code,
                   Job.created_at).where(Job.created_at >= since).order_by(Job.created_at)
    if user is not None:
        query = query.where(Job.user_id == user)
    with store.session() as session:
        return [JobView(*row) for row in session.execute(query)]


def evaluate(jobs: Sequence[JobView], limits: Thresholds = Thresholds(),
             rules: tuple[Rule, ...] = RULES) -> list[Warning]:
    return [w for rule in rules for w in rule(jobs, limits)]


def current(store: Store, *, hours: int = 24, limits: Thresholds = Thresholds()
            ) -> list[Warning]:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    return evaluate(load_jobs(store, since=since), limits)
