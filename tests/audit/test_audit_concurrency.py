"""Several processes append at once; processes die mid-append. One chain, verifies."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from multiprocessing.queues import Queue

from audit_support import Installation, query_event

from gateway.audit import CheckpointPolicy
from gateway.audit.log import AuditLog
from gateway.policy.signing import load_private_key
from gateway.store import open_store

# fork: the children start in milliseconds; each opens its own store, log and lock.
ctx = mp.get_context("fork")


def _open(i: Installation, every: int) -> AuditLog:
    store = open_store(i.settings.db_url, migrate=False)
    return AuditLog(store, i.checkpoints, load_private_key(i.settings.platform_key_path),
                    CheckpointPolicy(every_events=every, every_s=3600))


def _writer(i: Installation, name: str, n: int, out: Queue[tuple[str, list[int]]]) -> None:
    log = _open(i, every=25)
    seqs = [log.append(query_event(k, user=name)).seq for k in range(n)]
    out.put((name, seqs))


def test_four_processes_make_one_chain(install: Installation) -> None:
    install.log.append(query_event(0))  # the parent's log is open too: a fifth appender
    out: Queue[tuple[str, list[int]]] = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(install, f"user{p}", 150, out))
             for p in range(4)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    install.log.append(query_event(1))

    seqs = sorted(s for v in results.values() for s in v)
    assert seqs == sorted(set(seqs)), "duplicate sequence numbers"
    assert len(seqs) == 600 and set(seqs) <= set(range(2, 602))
    for v in results.values():
        assert v == sorted(v), "a process saw its own events out of order"
    report = install.verify()
    assert report.ok, report.problems
    assert report.events == 602 and report.checkpoints >= 600 // 25 - 1
    rows = install.sql().execute("SELECT count(DISTINCT prev_hash), count(*) FROM audit_events")
    assert rows.fetchone() == (602, 602), "two events share a predecessor: a fork"


def _append_forever(i: Installation) -> None:
    log = _open(i, every=7)  # checkpoints often, so some kills land inside one
    k = 0
    while True:
        log.append(query_event(k, user=f"pid{os.getpid()}"))
        k += 1


def test_sigkill_mid_append_leaves_a_verifiable_log(install: Installation) -> None:
    rng = random.Random(4)
    counts = []
    for _ in range(8):
        procs = [ctx.Process(target=_append_forever, args=(install,)) for _ in range(2)]
        for p in procs:
            p.start()
        time.sleep(rng.uniform(0.15, 0.4))
        for p in procs:
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            assert p.exitcode == -signal.SIGKILL
        report = install.verify()
        assert report.ok, report.problems
        counts.append(report.events)
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0
    # The survivors' lock and head are intact: appending goes on where the chain ends.
    receipt = install.log.append(query_event(0))
    assert receipt.seq == counts[-1] + 1
    assert install.verify().ok
