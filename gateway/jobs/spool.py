"""Result spool: a job's released result as an Arrow IPC stream file, and its formats.

Results stream from the sandbox into the spool batch by batch and out of it batch by
batch in the format asked for, so a large records-mode result is never held in memory
whole. Spool files are created 0600 in a 0700 directory and deleted with the job.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

Format = Literal["json", "csv", "parquet", "arrow"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}


def spool_dir(home: Path) -> Path:
    path = home / "results"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


class SpoolWriter:
    """Writes batches to ``path`` and keeps a SHA-256 of the Arrow stream it wrote."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._sink = _HashingSink(self._file, self._hash)
        self._writer = ipc.new_stream(self._sink, schema)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> str:
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._file.close()
            self.path.unlink(missing_ok=True)


class _HashingSink(io.RawIOBase):
    def __init__(self, target: Any, digest: Any) -> None:
        self._target = target
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._target.write(view)
        return len(view)


def read_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.OSFile(str(path), "rb") as source:
        reader = ipc.open_stream(source)
        yield from reader


def schema_of(path: Path) -> pa.Schema:
    with pa.OSFile(str(path), "rb") as source:
        return ipc.open_stream(source).schema


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


# DuckDB's infinite dates and timestamps, as their stored integers.
INFINITE: dict[int, str] = {2**31 - 1: "infinity", -(2**31 - 1): "-infinity",
                            2**63 - 1: "infinity", -(2**63 - 1): "-infinity"}


def values(array: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Python values of a column; dates and times Python cannot hold (infinity, years past
    9999) as the text DuckDB would print, so that a stream never breaks half-written."""
    try:
        plain: list[Any] = array.to_pylist()
        return plain
    except (OverflowError, ValueError):
        if not pa.types.is_temporal(array.type):
            raise
    raw = array.cast(pa.int64() if pa.types.is_timestamp(array.type)
                     or pa.types.is_date64(array.type) else pa.int32()).to_pylist()
    texts = pc.cast(array, pa.string()).to_pylist()
    return [None if number is None else INFINITE.get(number, text)
            for number, text in zip(raw, texts, strict=True)]


def stream_json(path: Path, envelope: dict[str, Any]) -> Iterator[bytes]:
    """``{..envelope.., "columns": [...], "rows": [[...], ...]}`` without building it whole."""
    head = dict(envelope)
    schema = schema_of(path)
    head["columns"] = [{"name": f.name, "type": str(f.type)} for f in schema]
    opening = json.dumps(head, ensure_ascii=False)[:-1] + ', "rows": ['
    yield opening.encode()
    first = True
    for batch in read_batches(path):
        columns = [values(batch.column(i)) for i in range(batch.num_columns)]
        chunk = []
        for row in zip(*columns, strict=True):
            chunk.append(("" if first else ",") + json.dumps(
                [_jsonable(v) for v in row], ensure_ascii=False, default=str))
            first = False
        if chunk:
            yield "".join(chunk).encode()
    yield b"]}"


def stream_csv(path: Path) -> Iterator[bytes]:
    schema = schema_of(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(schema.names)
    for batch in read_batches(path):
        columns = [values(batch.column(i)) for i in range(batch.num_columns)]
        writer.writerows(zip(*columns, strict=True))
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def stream_arrow(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 16), b"")


def stream_parquet(path: Path, scratch: Path) -> Iterator[bytes]:
    """Parquet needs a footer, so it is written batch by batch to a scratch file first."""
    target = scratch / (path.name + ".parquet")
    try:
        with pq.ParquetWriter(str(target), schema_of(path)) as writer:
            for batch in read_batches(path):
                writer.write_batch(batch)
        with target.open("rb") as handle:
            yield from iter(lambda: handle.read(1 << 16), b"")
    finally:
        target.unlink(missing_ok=True)
