"""A 10-million-row records-mode result is streamed, never held in memory whole.

Arrow memory of this (gateway) process is sampled while the job runs and while the
result is downloaded; the result itself is 160 MB of Arrow data.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.ipc as ipc
import pytest
import yaml
from fastapi.testclient import TestClient

from gateway.access.accounts import Role, add_user, issue_token
from gateway.app import create_app
from gateway.datasets.keys import create_master_key
from gateway.datasets.publish import publish
from gateway.policy.loading import load_policies
from gateway.services import Services, build_services
from gateway.settings import Settings
from tests.api.conftest import add_signed_agreement, auth

ROWS = 10_000_000
AGREEMENT = "agr-stream-test"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, str]]:
    home = tmp_path_factory.mktemp("streaming")
    tree = home / "policies"
    shutil.copytree(Path("policies"), tree)
    (tree / "datasets" / "counter.yaml").write_text(yaml.safe_dump({
        "id": "counter", "title": "Counter", "provider": {"id": "test", "name": "Test"},
        "domain": "test", "summary": "ten million numbered rows", "class": "conditional",
        "update_frequency": "never", "version": "1", "columns": [
            {"name": "n", "type": "BIGINT", "sensitivity": "public"},
            {"name": "v", "type": "DOUBLE", "sensitivity": "public"}]}))
    (tree / "scenarios" / "counter-records.yaml").write_text(yaml.safe_dump({
        "id": "counter-records", "title": "all rows", "mode": "records", "channels": ["api"],
        "limits": {"max_rows": ROWS, "result_cells": 10**9, "timeout_ms": 300_000,
                   "memory_mb": 1024},
        "datasets": {"counter": {"columns": ["n", "v"]}}}))
    add_signed_agreement(tree, home, "stream-test", AGREEMENT, user="streamer",
                         role="enterprise", scenario="counter-records")
    settings = Settings(home=home / "var", policy_dir=tree)
    create_master_key(settings.master_key_path)
    source = home / "counter.parquet"
    duckdb.sql(f"COPY (SELECT range AS n, range * 0.5 AS v FROM range({ROWS})) "
               f"TO '{source}' (FORMAT parquet)")
    svc = build_services(settings)
    publish(settings, svc.store, load_policies(tree), source, "counter")
    source.unlink()
    add_user(svc.store, "streamer", Role.enterprise)
    yield svc, issue_token(svc.store, "streamer")
    svc.close()


class PeakMemory:
    """Peak resident memory of this (gateway) process across the block, from the kernel.

    Writing 5 to /proc/self/clear_refs resets VmHWM, the high-water mark of RSS.
    """

    @staticmethod
    def _kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not in /proc/self/status")

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")
        self.base = self._kb("VmRSS")
        return self

    def __exit__(self, *_: object) -> None:
        self.peak = self._kb("VmHWM")

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1024


def test_ten_million_rows_stream_through_the_gateway(big: tuple[Services, str]) -> None:
    svc, token = big
    result_mb = ROWS * 16 / 2**20
    with TestClient(create_app(services=svc)) as client, PeakMemory() as memory:
        response = client.post("/v1/jobs", headers=auth(token), json={
            "agreement": AGREEMENT, "sql": "SELECT n, v FROM counter", "wait_ms": 0})
        job = response.json()["id"]
        deadline = time.monotonic() + 240
        while (state := client.get(f"/v1/jobs/{job}", headers=auth(token)).json())[
                "status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["status"] == "succeeded", state
        assert state["rows"] == ROWS
        received = 0
        first = b""
        with client.stream("GET", f"/v1/jobs/{job}/result", params={"format": "arrow"},
                           headers=auth(token)) as stream:
            assert stream.status_code == 200
            for chunk in stream.iter_bytes():
                if len(first) < 1 << 22:
                    first += chunk
                received += len(chunk)
    assert received > ROWS * 16  # every row came through
    head = ipc.open_stream(io.BytesIO(first)).read_next_batch()
    assert head.column(0)[0].as_py() == 0 and head.schema.names == ["n", "v"]
    # Held whole, the result alone would add ~153 MB (and far more as Python objects).
    print(f"peak RSS growth {memory.growth_mb:.1f} MB for a {result_mb:.0f} MB result")
    assert memory.growth_mb < result_mb / 3, (memory.growth_mb, result_mb)
