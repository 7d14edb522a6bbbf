"""The warm pool: the SandboxRuntime the gateway uses, over any Backend.

- A released sandbox stays up for its agreement's idle time, so the next statement of
  that agreement pays no start-up; a warm sandbox is reused only for an identical spec
  (same dataset files, keys and limits: see ``SandboxSpec.fingerprint``).
- At most ``max_live`` sandboxes live; to start another, the least recently used idle
  one is stopped. When all are busy, ``acquire`` fails at once (no queueing here).
- A background thread stops sandboxes past their idle time and notices idle ones that
  died (their socket closed), so a killed container is replaced on the next acquire.
- ``stop_agreement`` kills every sandbox of the agreement — those of this pool and any
  other the engine has under the agreement's label — and a start racing with it is
  thrown away rather than handed out.
- Orphans are sandboxes whose owning gateway process no longer runs (labels say which
  process on which host owns them).
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.errors import ResourceExhausted, StatementCancelled
from sandbox.runtime.base import (
    LABEL_AGREEMENT,
    LABEL_OWNER,
    LABEL_SANDBOX,
    LABEL_SPEC,
    Backend,
    ProgressCallback,
    SandboxRecord,
    SandboxRuntime,
    SandboxSpec,
    start_ticks,
)
from sandbox.runtime.result import StatementResult
from sandbox.runtime.session import Sandbox
from sandbox.runtime.settings import RuntimeSettings

REAP_INTERVAL_S = 0.5


def owner_token() -> str:
    """``host:pid:start-ticks:nonce`` of this gateway process (one nonce per pool)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}:{uuid.uuid4().hex[:8]}"


def owner_alive(token: str) -> bool:
    """False only if the owner certainly is gone: same host, process ended or pid reused.

    A sandbox owned by a gateway on another host is never judged from here.
    """
    parts = token.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid, ticks, _nonce = parts
    if host != socket.gethostname():
        return True
    return start_ticks(int(pid)) == ticks


def prepare_run_dir(path: Path) -> None:
    """Create the socket root 0711 (traversable, not listable) and refuse a planted one."""
    path.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise RuntimeError(f"{path} is not a directory owned by this user; refusing to use it")
    os.chmod(path, 0o711)  # noqa: S103 - sandboxes must traverse it; listing is denied


class WarmPool(SandboxRuntime):
    def __init__(self, backend: Backend, settings: RuntimeSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or RuntimeSettings()
        prepare_run_dir(self.settings.run_dir)
        self.owner = owner_token()
        self._lock = threading.Lock()
        # Ordered least recently used first.
        self._sandboxes: OrderedDict[str, Sandbox] = OrderedDict()
        self._starting = 0
        # Bumped by stop_agreement: a start that began before must not be handed out.
        self._generation: defaultdict[str, int] = defaultdict(int)
        self._cleanup = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dsb-sandbox-rm")
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, name="dsb-sandbox-idle",
                                        daemon=True)
        self._reaper.start()

    # -- acquire / release -----------------------------------------------------------

    def acquire(self, spec: SandboxSpec, *, idle_s: float | None = None) -> Sandbox:
        if self._closed.is_set():
            raise RuntimeError("the sandbox pool is closed")
        fingerprint = spec.fingerprint()
        idle = self.settings.idle_s if idle_s is None else idle_s
        stale: list[Sandbox] = []
        with self._lock:
            try:
                warm: Sandbox | None = None
                for sandbox in reversed(self._sandboxes.values()):  # most recent first
                    if sandbox.agreement_id != spec.agreement_id or sandbox.leased:
                        continue
                    if warm is None and sandbox.fingerprint == fingerprint and sandbox.alive():
                        warm = sandbox
                    elif sandbox.fingerprint != fingerprint or sandbox.retired:
                        # Broken, or made for an older spec of this agreement.
                        stale.append(sandbox)
                for sandbox in stale:
                    del self._sandboxes[sandbox.id]
                if warm is not None:
                    warm.leased = True
                    warm.idle_s = idle
                    self._sandboxes.move_to_end(warm.id)
                    return warm
                self._make_room(stale)
                self._starting += 1
                generation = self._generation[spec.agreement_id]
            finally:
                for sandbox in stale:
                    self._dispose(sandbox)
        try:
            sandbox = Sandbox.start(self.backend, spec, run_dir=self.settings.run_dir,
                                    labels=self._labels(spec),
                                    start_timeout_s=self.settings.start_timeout_s)
        finally:
            with self._lock:
                self._starting -= 1
        with self._lock:
            if self._generation[spec.agreement_id] == generation and not self._closed.is_set():
                sandbox.leased = True
                sandbox.idle_s = idle
                self._sandboxes[sandbox.id] = sandbox
                return sandbox
        sandbox.destroy()
        raise StatementCancelled("the agreement's sandboxes were stopped while one started")

    def _make_room(self, evicted: list[Sandbox]) -> None:
        """Evict least recently used idle sandboxes until one more fits (lock held)."""
        while len(self._sandboxes) + self._starting >= self.settings.max_live:
            victim = next((s for s in self._sandboxes.values() if not s.leased), None)
            if victim is None:
                raise ResourceExhausted(
                    f"all {self.settings.max_live} sandboxes are busy "
                    "(DSB_SANDBOX_MAX_LIVE); try again shortly")
            del self._sandboxes[victim.id]
            evicted.append(victim)

    def _labels(self, spec: SandboxSpec) -> dict[str, str]:
        return {**self.settings.labels, LABEL_SANDBOX: "1", LABEL_AGREEMENT: spec.agreement_id,
                LABEL_OWNER: self.owner, LABEL_SPEC: spec.fingerprint()}

    def release(self, sandbox: Sandbox) -> None:
        running = sandbox._running
        if running is not None and not running.finished:
            running.close()
        with self._lock:
            sandbox.leased = False
            sandbox.last_used = time.monotonic()
            keep = (not sandbox.retired and not sandbox.dead and sandbox.idle_s > 0
                    and self._sandboxes.get(sandbox.id) is sandbox)
            if keep:
                self._sandboxes.move_to_end(sandbox.id)
                return
            self._sandboxes.pop(sandbox.id, None)
        self._dispose(sandbox)

    # -- statements ------------------------------------------------------------------

    def execute(
        self,
        sandbox: Sandbox,
        sql: str,
        *,
        timeout_ms: int | None = None,
        batch_rows: int | None = None,
        max_rows: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> StatementResult:
        return sandbox.execute(sql, timeout_ms=timeout_ms, batch_rows=batch_rows,
                               max_rows=max_rows, on_progress=on_progress,
                               grace_ms=self.settings.grace_ms)

    def cancel(self, sandbox: Sandbox) -> None:
        sandbox.cancel(grace_ms=self.settings.grace_ms)

    # -- stopping --------------------------------------------------------------------

    def stop_agreement(self, agreement_id: str) -> int:
        with self._lock:
            self._generation[agreement_id] += 1
            victims = [s for s in self._sandboxes.values() if s.agreement_id == agreement_id]
            for sandbox in victims:
                sandbox.stopped_on_request = True
                sandbox.retired = True
                if not sandbox.leased:
                    del self._sandboxes[sandbox.id]
        ours = {s.handle.ref for s in victims}
        others = [r for r in self.backend.list_sandboxes(agreement_id=agreement_id)
                  if r.ref not in ours and r.running]
        # In parallel: each kill is one engine round trip.
        with ThreadPoolExecutor(max_workers=8) as kill_pool:
            list(kill_pool.map(lambda s: s.kill(), victims))
            list(kill_pool.map(self.backend.kill_record, others))
        for sandbox in victims:
            # A leased one is freed by its holder's release(); its reader sees the kill.
            if not sandbox.leased:
                self._dispose(sandbox)
        return len(victims) + len(others)

    def list_orphans(self) -> Sequence[SandboxRecord]:
        return [r for r in self.backend.list_sandboxes() if not owner_alive(r.owner)]

    def reap_orphans(self) -> int:
        orphans = self.list_orphans()
        for record in orphans:
            self.backend.kill_record(record)
        return len(orphans)

    def _dispose(self, sandbox: Sandbox) -> None:
        """Destroy in the background (container removal takes ~100 ms), inline once closed."""
        try:
            self._cleanup.submit(sandbox.destroy)
        except RuntimeError:  # the executor is shut down: the pool is closing
            sandbox.destroy()

    def live(self) -> list[Sandbox]:
        with self._lock:
            return list(self._sandboxes.values())

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sandboxes = list(self._sandboxes.values())
            self._sandboxes.clear()
        for sandbox in sandboxes:
            self._dispose(sandbox)
        self._cleanup.shutdown(wait=True)
        self._reaper.join(timeout=2)
        self.backend.close()

    # -- idle reaper -----------------------------------------------------------------

    def _reap_idle(self) -> None:
        while not self._closed.wait(REAP_INTERVAL_S):
            now = time.monotonic()
            expired: list[Sandbox] = []
            with self._lock:
                for sandbox in list(self._sandboxes.values()):
                    if sandbox.leased:
                        continue
                    if now - sandbox.last_used >= sandbox.idle_s or not sandbox.alive():
                        del self._sandboxes[sandbox.id]
                        expired.append(sandbox)
            for sandbox in expired:
                self._dispose(sandbox)
