"""Rows/s of the `storey.frames` input/output layer on the README workload (`storey.frames.io`).

Measures, each as the best of ``--repeat`` runs in this process:

- `iter_batches` over the cached CSV file (time field ``time``, key ``key``): the vectorised path, and the
  parser path it falls back to (forced), next to `CSVParser` alone (the rules `ReadCSV` uses);
- `iter_batches` over the cached Parquet file (all columns, and projected to ``key``/``time``/``click``);
- `OutputSink` writing the Parquet table back (one file) and as CSV.

Usage: ``.venv/bin/python -m benchmarks.bench_frames_io [--rows 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._data import events_path
from storey.frames import _io_csv
from storey.frames.io import OutputSink, iter_batches
from storey.sources._csvparse import CSVParser


def best_rate(n_rows: int, fn: Callable[[], int], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        assert n == n_rows, (n, n_rows)
        best = max(best, n / dt)
    return best


def count(data: object, **kw: object) -> int:
    return sum(b.num_rows for b in iter_batches(data, **kw))


def parser_path(path: str) -> int:
    def no_fast(ctx: object, p: str):  # type: ignore[no-untyped-def]
        raise _io_csv._Fallback
        yield

    saved = _io_csv._fast_batches
    _io_csv._fast_batches = no_fast  # type: ignore[assignment]
    try:
        return count(path, time_field="time", key_fields=["key"])
    finally:
        _io_csv._fast_batches = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ns = ap.parse_args()
    n, r = ns.rows, ns.repeat
    csv_path = str(events_path(n, "csv"))
    pq_path = str(events_path(n, "parquet"))
    results = {
        "CSV iter_batches (vectorised)": best_rate(
            n, lambda: count(csv_path, time_field="time", key_fields=["key"]), r
        ),
        "CSV iter_batches (parser path)": best_rate(n, lambda: parser_path(csv_path), r),
        "CSV CSVParser alone (ReadCSV rules)": best_rate(
            n,
            lambda: sum(
                len(b) for b in CSVParser(header=True, time_field="time", batch_size=65536).read(csv_path)
            ),
            r,
        ),
        "Parquet iter_batches (all columns)": best_rate(n, lambda: count(pq_path, time_field="time"), r),
        "Parquet iter_batches (key, time, click)": best_rate(
            n, lambda: count(pq_path, columns=["click"], time_field="time", key_fields=["key"]), r
        ),
    }
    table = pq.read_table(pq_path)
    with tempfile.TemporaryDirectory() as d:

        def write(name: str) -> int:
            with OutputSink(str(Path(d) / name)) as sink:
                for rb in table.to_batches(max_chunksize=65536):
                    sink.write(rb)
            return sink.rows_written

        results["OutputSink Parquet file"] = best_rate(n, lambda: write("out.parquet"), r)
        results["OutputSink CSV"] = best_rate(n, lambda: write("out.csv"), max(1, r - 1))
    print(f"{n:,} rows; pyarrow {pa.__version__}")
    for name, rate in results.items():
        print(f"  {name:42s} {rate / 1e6:8.2f} M rows/s")


if __name__ == "__main__":
    main()
