"""The agent: the one process inside a sandbox, executing statements the gateway sends.

It connects once to the gateway's socket (the only channel out of the sandbox), takes
the per-sandbox secret, the dataset keys and the limits from the first frame, opens the
locked-down engine on the read-only dataset files and then runs statements:

- only frames carrying the gateway's MAC and the next sequence number are accepted; any
  other frame ends the agent (and with it the sandbox) rather than being answered;
- only a single SELECT statement runs (the gateway has already rewritten it; this is a
  second line against DDL, SET, COPY, ATTACH or several statements in one string);
- the statement's timeout may only be shorter than the sandbox's, never longer;
- while it runs, progress is reported; the result streams back as Arrow IPC batches.

When the gateway goes away the agent exits at once: a sandbox never outlives its channel.
Imports: the standard library, duckdb, pyarrow and ``sandbox.engine``/``sandbox.protocol``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.protocol import (
    MAX_CONTROL_BYTES,
    MAX_DATA_BYTES,
    SECRET_BYTES,
    Kind,
    PeerClosed,
    ProtocolError,
    decode_json,
    open_sealed,
    recv_frame,
    send_frame,
    send_json,
)

DEFAULT_SOCKET = "/run/dsb/agent.sock"
# The modules the agent consists of (and all the SQL image contains of this project).
CODE_MODULES = ("__init__.py", "agent.py", "engine.py", "protocol.py")
CONNECT_TIMEOUT_S = 5.0
DEFAULT_BATCH_ROWS = 8192
MIN_PROGRESS_INTERVAL_MS = 50


@dataclass
class Statement:
    id: str
    sql: str
    timeout_ms: int
    batch_rows: int
    max_rows: int | None
    progress_ms: int
    cancelled: threading.Event


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class Agent:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.secret = b""
        self.seq = 0
        self.max_timeout_ms = 0
        self.con: Any = None  # duckdb.DuckDBPyConnection once HELLO is handled
        self.running: Statement | None = None
        self.state_lock = threading.Lock()
        # One long-lived worker runs every statement: a thread per statement would start
        # each with cold allocator caches (measured: +1.5 ms on a small aggregate).
        self.queue: queue.SimpleQueue[Statement] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="statements", daemon=True).start()

    # -- sending ---------------------------------------------------------------------

    def send(self, kind: Kind, body: dict[str, Any]) -> None:
        with self.send_lock:
            send_json(self.sock, kind, body)

    def send_raw(self, kind: Kind, payload: bytes | memoryview) -> None:
        with self.send_lock:
            send_frame(self.sock, kind, payload)

    # -- start-up --------------------------------------------------------------------

    def handshake(self) -> None:
        kind, payload = recv_frame(self.sock, MAX_CONTROL_BYTES)
        if kind is not Kind.HELLO:
            raise ProtocolError(f"expected HELLO first, got {kind.name}")
        hello = decode_json(payload)
        secret = bytes.fromhex(str(hello["secret"]))
        if len(secret) != SECRET_BYTES:
            raise ProtocolError("secret has the wrong length")
        self.secret = secret
        limits = hello["limits"]
        self.max_timeout_ms = int(limits["timeout_ms"])
        try:
            self.con = _open_engine(hello["datasets"], limits)
        except Exception as exc:  # noqa: BLE001 - reported, then the agent exits
            self.send(Kind.ERROR, {"id": None, "code": "sandbox_failed",
                                   "message": "could not open the datasets",
                                   "detail": f"{type(exc).__name__}: {exc}"})
            raise SystemExit(3) from None
        import duckdb

        self.send(Kind.READY, {"pid": os.getpid(), "uid": os.getuid(),
                               "duckdb": duckdb.__version__, "code": code_digest()})

    # -- main loop -------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                kind, payload = recv_frame(self.sock, MAX_CONTROL_BYTES)
            except PeerClosed:
                return
            expected = self.seq + 1
            if kind is Kind.EXEC:
                body = open_sealed(self.secret, kind, expected, payload)
                self.seq = expected
                self._start(body)
            elif kind is Kind.CANCEL:
                body = open_sealed(self.secret, kind, expected, payload)
                self.seq = expected
                self._cancel(str(body.get("id")))
            else:
                raise ProtocolError(f"unexpected {kind.name} frame")

    def _start(self, body: dict[str, Any]) -> None:
        requested = int(body.get("timeout_ms") or self.max_timeout_ms)
        max_rows = body.get("max_rows")
        stmt = Statement(
            id=str(body["id"]),
            sql=str(body["sql"]),
            # A caller may shorten the sandbox's timeout, never lengthen it.
            timeout_ms=max(1, min(requested, self.max_timeout_ms)),
            batch_rows=max(1, min(int(body.get("batch_rows") or DEFAULT_BATCH_ROWS), 1 << 20)),
            max_rows=None if max_rows is None else max(0, int(max_rows)),
            progress_ms=int(body.get("progress_ms") or 0),
            cancelled=threading.Event(),
        )
        with self.state_lock:
            if self.running is not None:
                self.send(Kind.ERROR, {"id": stmt.id, "code": "busy",
                                       "message": "a statement is already running"})
                return
            self.running = stmt
        self.queue.put(stmt)

    def _cancel(self, statement_id: str) -> None:
        with self.state_lock:
            stmt = self.running
        if stmt is not None and stmt.id == statement_id:
            stmt.cancelled.set()
            threading.Thread(target=self._interrupt_until_done, args=(stmt,),
                             daemon=True).start()

    def _interrupt_until_done(self, stmt: Statement) -> None:
        # The statement may not have reached the engine yet, and an interrupt while no
        # query runs is lost: repeat until the worker lets go of the statement. Under the
        # lock, so that an interrupt never lands on the next statement.
        while True:
            with self.state_lock:
                if self.running is not stmt:
                    return
                self.con.interrupt()
            time.sleep(0.02)

    # -- one statement ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            self._run(self.queue.get())

    def _run(self, stmt: Statement) -> None:
        kind = Kind.DONE
        try:
            body = self._execute(stmt)
        except _Failure as failure:
            kind, body = Kind.ERROR, {"id": stmt.id, **failure.body}
        except OSError:
            return  # the channel is gone; the main loop sees it and ends the agent
        except Exception as exc:  # noqa: BLE001 - never leave the gateway waiting
            kind, body = Kind.ERROR, {"id": stmt.id, "code": "execution_failed",
                                      "message": "the statement failed in the sandbox",
                                      "detail": f"{type(exc).__name__}: {exc}"}
        # Free the slot before answering: the gateway may send the next statement at once.
        with self.state_lock:
            self.running = None
        self.send(kind, body)

    def _execute(self, stmt: Statement) -> dict[str, Any]:
        import duckdb

        from sandbox.engine import deadline

        con = self.con
        started = time.monotonic()
        done = threading.Event()
        if stmt.progress_ms > 0:
            threading.Thread(target=self._progress, args=(stmt, started, done),
                             daemon=True).start()
        rows = 0
        truncated = False
        try:
            with deadline(con, stmt.timeout_ms) as fired:
                try:
                    _check_select(con, stmt.sql)
                    if stmt.cancelled.is_set():
                        raise _Failure("cancelled", "the statement was cancelled")
                    reader = con.execute(stmt.sql).to_arrow_reader(stmt.batch_rows)
                    self.send_raw(Kind.SCHEMA, reader.schema.serialize().to_pybytes())
                    for batch in reader:
                        if stmt.max_rows is not None and rows + batch.num_rows > stmt.max_rows:
                            batch = batch.slice(0, stmt.max_rows - rows)
                            truncated = True
                        for piece in _fit(batch):
                            # The IPC buffer itself, not a copy of it: results can be large.
                            self.send_raw(Kind.BATCH, memoryview(piece.serialize()))
                        rows += batch.num_rows
                        if truncated:
                            break
                        if stmt.cancelled.is_set():
                            raise _Failure("cancelled", "the statement was cancelled")
                except duckdb.InterruptException:
                    if stmt.cancelled.is_set():
                        raise _Failure("cancelled", "the statement was cancelled") from None
                    if fired.is_set():
                        raise _Failure(
                            "timeout", f"the statement ran longer than {stmt.timeout_ms} ms"
                            " (the scenario's limits.timeout_ms)") from None
                    raise
                except duckdb.OutOfMemoryException as exc:
                    raise _Failure("resource_exhausted",
                                   "the statement needed more memory than the scenario's "
                                   "limits.memory_mb", detail=str(exc)) from None
                except MemoryError:
                    raise _Failure("resource_exhausted",
                                   "the statement needed more memory than the sandbox has") \
                        from None
                except duckdb.Error as exc:
                    raise _Failure("execution_failed", "the statement failed in the engine",
                                   detail=f"{type(exc).__name__}: {exc}") from None
        finally:
            done.set()
        return {"id": stmt.id, "rows": rows, "truncated": truncated,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 3)}

    def _progress(self, stmt: Statement, started: float, done: threading.Event) -> None:
        interval = max(stmt.progress_ms, MIN_PROGRESS_INTERVAL_MS) / 1000
        while not done.wait(interval):
            try:
                percent = float(self.con.query_progress())
            except Exception:  # noqa: BLE001 - progress is best effort
                percent = -1.0
            if done.is_set():
                return
            self.send(Kind.PROGRESS, {
                "id": stmt.id, "percent": percent,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1)})


class _Failure(Exception):
    def __init__(self, code: str, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.body = {"code": code, "message": message, "detail": detail}


def _check_select(con: Any, sql: str) -> None:
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise _Failure("execution_failed", "the statement does not parse",
                       detail=str(exc)) from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in statements) or "nothing"
        raise _Failure("rejected", f"the sandbox runs exactly one SELECT statement, got {kinds}")


def _fit(batch: Any) -> list[Any]:
    """Split a batch so that each piece fits one frame."""
    size = batch.nbytes
    if size <= MAX_DATA_BYTES // 2 or batch.num_rows <= 1:
        return [batch]
    parts = -(-size // (MAX_DATA_BYTES // 2))
    step = max(1, -(-batch.num_rows // parts))
    return [batch.slice(i, step) for i in range(0, batch.num_rows, step)]


def _open_engine(datasets: list[dict[str, Any]], limits: dict[str, Any]) -> Any:
    from sandbox.engine import DatasetMount, EngineLimits, open_engine

    mounts = [DatasetMount(dataset_id=str(d["dataset_id"]), path=Path(str(d["path"])),
                           key=None if d.get("key") is None else str(d["key"]))
              for d in datasets]
    engine_limits = EngineLimits(memory_mb=int(limits["memory_mb"]),
                                 threads=int(limits["threads"]),
                                 timeout_ms=int(limits["timeout_ms"]))
    return open_engine(mounts, engine_limits, progress=True)


def code_digest() -> str:
    """Digest of the agent's modules, so the gateway can tell a stale image."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox.agent", description=__doc__)
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help="Unix socket of the gateway (the only channel)")
    args = parser.parse_args(argv)
    sock = _connect(args.socket)
    agent = Agent(sock)
    try:
        agent.handshake()
        agent.serve()
    except ProtocolError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        os._exit(2)
    except OSError:
        os._exit(1)
    # The gateway closed the channel: stop at once, running statement or not.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
