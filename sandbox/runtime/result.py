"""A statement's result as the gateway reads it from the agent's channel.

Frames are read with the statement's deadline (its timeout plus a grace for the agent
to interrupt itself); past it the sandbox is killed. The agent's output is not trusted:
batches must decode against the schema and keep to ``max_rows``, and error messages are
the gateway's own (the agent's text goes to ``detail`` only, for the audit trail).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from gateway.errors import (
    EngineError,
    ExecutionError,
    QueryRejected,
    ResourceExhausted,
    SandboxFailed,
    StatementCancelled,
    StatementTimeout,
)
from sandbox.protocol import MAX_DATA_BYTES, Kind, decode_json
from sandbox.runtime.base import Progress, ProgressCallback

if TYPE_CHECKING:
    from sandbox.runtime.session import Sandbox


class ChannelLost(Exception):
    """The agent's socket closed or broke; the sandbox says why (``channel_lost``)."""


class StatementResult(Iterator[pa.RecordBatch]):
    """A statement's result: iterate for Arrow record batches, or ``read_all()``.

    ``schema`` waits for the engine to produce the first rows. After the last batch, ``rows``,
    ``truncated`` (``max_rows`` cut the result) and ``elapsed_ms`` are set. Closing an
    unfinished result cancels the statement. Errors raised while iterating are the
    service's (``timeout``, ``resource_exhausted``, ``sandbox_failed``, ``cancelled``).
    """

    def __init__(self, sandbox: Sandbox, statement_id: str, timeout_ms: int, deadline: float,
                 on_progress: ProgressCallback | None, max_rows: int | None = None) -> None:
        self.sandbox = sandbox
        self.statement_id = statement_id
        self.timeout_ms = timeout_ms
        self.deadline = deadline
        self.on_progress = on_progress
        self._schema: pa.Schema | None = None
        self.rows = 0
        self.truncated = False
        self.elapsed_ms = 0.0
        self.finished = False
        self.max_rows = max_rows
        self._received = 0
        self._on_finish: list[Callable[[], None]] = []

    def __iter__(self) -> StatementResult:
        return self

    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            self._wait_schema()
        assert self._schema is not None
        return self._schema

    def __next__(self) -> pa.RecordBatch:
        if self.finished:
            raise StopIteration
        schema = self.schema
        while not self.finished:
            kind, payload = self._next_frame()
            if kind is Kind.BATCH:
                batch = self._batch(payload, schema)
                if batch is not None:
                    return batch
                continue
            if kind is Kind.DONE:
                body = decode_json(payload)
                self.rows = int(body.get("rows", 0))
                self.truncated = bool(body.get("truncated", False))
                self.elapsed_ms = float(body.get("elapsed_ms", 0.0))
                self._finish()
            else:
                self._unexpected(kind)
        raise StopIteration

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        if self.finished:
            return
        self.sandbox.cancel()
        # Drain to the agent's answer so the channel is clean for the next statement.
        with contextlib.suppress(ExecutionError, QueryRejected):
            for _ in self:
                pass

    def __enter__(self) -> StatementResult:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def add_finish_callback(self, callback: Callable[[], None]) -> None:
        if self.finished:
            callback()
        else:
            self._on_finish.append(callback)

    # -- frames ----------------------------------------------------------------------

    def _wait_schema(self) -> None:
        if self.finished:
            raise SandboxFailed("the statement ended before it produced a result")
        while True:
            kind, payload = self._next_frame()
            if kind is Kind.SCHEMA:
                self._schema = pa.ipc.read_schema(pa.py_buffer(payload))
                return
            self._unexpected(kind)

    def _next_frame(self) -> tuple[Kind, bytes]:
        """The next SCHEMA/BATCH/DONE frame; progress handled, errors raised."""
        sandbox = self.sandbox
        while True:
            try:
                kind, payload = sandbox._recv(self.deadline, MAX_DATA_BYTES + 1024)
            except TimeoutError:
                self._finish()
                sandbox.kill()
                raise StatementTimeout(
                    f"the statement ran longer than {self.timeout_ms} ms (the scenario's "
                    "limits.timeout_ms) and its sandbox did not stop it; the sandbox has "
                    "been replaced") from None
            except ChannelLost as lost:
                self._finish()
                raise sandbox.channel_lost(str(lost)) from None
            if kind is Kind.PROGRESS:
                self._progress(payload)
                continue
            if kind is Kind.ERROR:
                self._finish()
                raise self._error(decode_json(payload))
            return kind, payload

    def _progress(self, payload: bytes) -> None:
        if self.on_progress is None:
            return
        body = decode_json(payload)
        self.on_progress(Progress(self.statement_id, float(body.get("percent", -1.0)),
                                  float(body.get("elapsed_ms", 0.0))))

    def _batch(self, payload: bytes, schema: pa.Schema) -> pa.RecordBatch | None:
        """Decode a batch; the agent's output is not trusted to keep to the limits."""
        try:
            batch = pa.ipc.read_record_batch(pa.py_buffer(payload), schema)
        except (pa.ArrowException, ValueError):
            self._finish()
            self.sandbox.kill()
            raise SandboxFailed("the sandbox sent a malformed result; it has been replaced") \
                from None
        self._received += batch.num_rows
        if self.max_rows is not None and self._received > self.max_rows:
            self._finish()
            self.sandbox.kill()
            raise SandboxFailed("the sandbox sent more rows than max_rows; it has been replaced")
        return batch

    def _error(self, body: dict[str, Any]) -> Exception:
        """The service error for an agent's ERROR frame.

        Messages are the gateway's own: what the agent says is not trusted to be free of
        data values, so its text only goes to ``detail`` (for the audit trail).
        """
        code = str(body.get("code", ""))
        detail = str(body.get("detail") or body.get("message") or "")[:2000]
        if code == "timeout":
            return StatementTimeout(f"the statement ran longer than {self.timeout_ms} ms "
                                    "(the scenario's limits.timeout_ms)")
        if code == "cancelled":
            return StatementCancelled("the statement was cancelled")
        if code == "resource_exhausted":
            # DuckDB may leave memory fragmented; a fresh sandbox serves the next query.
            self.sandbox.retired = True
            return ResourceExhausted("the statement needed more memory than the scenario's "
                                     "limits.memory_mb; the sandbox has been replaced")
        if code == "rejected":
            return QueryRejected("sandbox_select_only",
                                 "the sandbox runs exactly one SELECT statement per request")
        if code == "sandbox_failed":
            self.sandbox.retired = True
            return SandboxFailed("the sandbox failed; it has been replaced")
        return EngineError("the statement failed in the engine", detail=detail)

    def _unexpected(self, kind: Kind) -> None:
        self._finish()
        self.sandbox.kill()
        raise SandboxFailed(f"the sandbox sent an unexpected {kind.name} frame; "
                            "it has been replaced")

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.sandbox._finished(self)
        callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback()
