"""Deterministic generators for the README workload used by the benchmarks.

The generator itself lives in `storey._demo` (it also makes the bundled demo dataset); this module sets the
benchmark defaults (10 k keys, 5 events/s, so 1 M events span ~56 h) and writes/caches files.

Columns (the events of the seed README's aggregation example):

======================  ==========================  ==============================================
column                  type                        content
======================  ==========================  ==============================================
``key``                 string                      ``"user_00042"``, uniform over ``n_keys`` keys
``time``                timestamp[ns, tz=UTC]       millisecond values, mostly increasing (below)
``click``               int64                       Poisson(1)
``purchase_amount``     float64, nullable           log-normal amount in cents / 100, null ~20%
``activity_status``     string                      ``ok`` 90%, ``fail`` 7%, ``pending`` 3%
======================  ==========================  ==============================================

Times: arrivals at ``events_per_second`` overall (exponential gaps, so ~2000 s between events of one key
with 10 k keys at 5 ev/s), starting at ``2024-01-01T00:00:00Z``. A fraction ``late_fraction`` of events
is moved back by up to 30 min (late but within every window of the README features); a fraction
``too_late_fraction`` by 30 to 48 h (older than the 24 h window: too late for the key). Rows are in
arrival order. Everything is a pure function of the arguments (``numpy.random.default_rng(seed)``).

Typical use::

    from benchmarks._data import events_path, make_events
    table = make_events(50_000, n_keys=1_000)        # pyarrow.Table, in memory
    path = events_path(1_000_000, "parquet")         # cached file under benchmarks/.data/
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from storey._demo import demo_columns, demo_table

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("STOREY_BENCH_DATA", BENCH_DIR / ".data"))
ROW_GROUP_SIZE = 65_536
N_KEYS = 10_000
EVENTS_PER_SECOND = 5.0

# The README features: (name, field, aggregations, windows, period, count only activity_status == 'fail').
README_FEATURES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str, bool], ...] = (
    ("number_of_clicks", "click", ("count",), ("1h", "2h", "24h"), "10m", False),
    ("purchases", "purchase_amount", ("avg", "min", "max"), ("1h", "2h", "24h"), "10m", False),
    ("failed_activities", "activity_status", ("count",), ("1h",), "10m", True),
)
README_FEATURE_COUNT = sum(len(aggrs) * len(windows) for _, _, aggrs, windows, _, _ in README_FEATURES)


def make_columns(n_rows: int, *, n_keys: int = N_KEYS, seed: int = 0, **kwargs: Any) -> dict[str, np.ndarray]:
    """The workload as numpy arrays (`storey._demo.demo_columns` with the benchmark defaults)."""
    kwargs.setdefault("events_per_second", EVENTS_PER_SECOND)
    return demo_columns(n_rows, n_keys=n_keys, seed=seed, **kwargs)


def make_events(n_rows: int, *, n_keys: int = N_KEYS, seed: int = 0, **kwargs: Any):
    """The workload as a `pyarrow.Table` (`storey._demo.demo_table` with the benchmark defaults)."""
    kwargs.setdefault("events_per_second", EVENTS_PER_SECOND)
    return demo_table(n_rows, n_keys=n_keys, seed=seed, **kwargs)


def write_parquet(table, path: str | Path, *, row_group_size: int = ROW_GROUP_SIZE) -> Path:
    """Write ``table`` as snappy Parquet with ``row_group_size`` rows per group."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size, compression="snappy")
    return path


def write_csv(table, path: str | Path) -> Path:
    """Write ``table`` as CSV with a header; times as ISO 8601 ``2024-01-01T00:00:00.123Z``; nulls empty."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = table.column("time").cast(pa.int64()).to_numpy()
    iso = np.char.add(np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ms"), "Z")
    out = table.set_column(table.schema.get_field_index("time"), "time", pa.array(iso, pa.string()))
    pcsv.write_csv(out, path, pcsv.WriteOptions(quoting_style="none"))
    return path


def write_events(
    directory: str | Path,
    n_rows: int,
    *,
    formats: Sequence[str] = ("parquet", "csv"),
    n_keys: int = N_KEYS,
    seed: int = 0,
    **kwargs: Any,
) -> dict[str, Path]:
    """Generate the workload and write it as ``events.parquet`` / ``events.csv`` in ``directory``."""
    table = make_events(n_rows, n_keys=n_keys, seed=seed, **kwargs)
    directory = Path(directory)
    writers = {"parquet": write_parquet, "csv": write_csv}
    return {fmt: writers[fmt](table, directory / f"events.{fmt}") for fmt in formats}


def events_path(
    n_rows: int, fmt: str = "parquet", *, n_keys: int = N_KEYS, seed: int = 0, subprocess: bool = True
) -> Path:
    """A cached workload file under ``benchmarks/.data/`` (``$STOREY_BENCH_DATA``), created on first use.

    Only the default generator settings are cached; use `write_events` for other settings. The file is
    generated in a child process by default, so that generating 10 M rows does not raise the peak RSS of
    the benchmark that asks for it.
    """
    path = DATA_DIR / f"events_n{n_rows}_k{n_keys}_s{seed}.{fmt}"
    if path.exists():
        return path
    if subprocess:
        import subprocess as sp
        import sys

        cmd = [sys.executable, "-m", "benchmarks._data", "--cache", fmt, str(n_rows), "--keys", str(n_keys)]
        sp.run([*cmd, "--seed", str(seed)], cwd=BENCH_DIR.parent, check=True, stdout=sp.DEVNULL)
        return path
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.{fmt}")
    table = make_events(n_rows, n_keys=n_keys, seed=seed)
    {"parquet": write_parquet, "csv": write_csv}[fmt](table, tmp)
    tmp.replace(path)
    return path


def event_dicts(table, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a workload table as dicts (``time`` an aware UTC `datetime.datetime`, nulls ``None``): the
    bodies a streaming benchmark feeds to ``controller.emit``."""
    import pyarrow as pa

    if columns is not None:
        table = table.select(list(columns))
    if "time" in table.column_names:  # whole milliseconds: microseconds are exact and give datetimes
        i = table.schema.get_field_index("time")
        table = table.set_column(i, "time", table.column(i).cast(pa.timestamp("us", tz="UTC")))
    return table.to_pylist()


def streaming_events(
    n_rows: int = 50_000, *, source_rows: int = 1_000_000, n_keys: int = N_KEYS, seed: int = 0
) -> list[dict[str, Any]]:
    """The smaller streaming variant: the first ``n_rows`` events of the cached ``source_rows`` Parquet
    file, as dict bodies. These are the events ``_upstream.upstream_aggregate(events_path(source_rows),
    n_rows)`` feeds to upstream storey, so the two streaming runs see the same data."""
    import pyarrow.parquet as pq

    path = events_path(source_rows, "parquet", n_keys=n_keys, seed=seed)
    return event_dicts(pq.read_table(path).slice(0, n_rows))


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="write README-workload files")
    parser.add_argument("n_rows", type=int)
    parser.add_argument("directory", nargs="?", default=str(DATA_DIR))
    parser.add_argument("--keys", type=int, default=N_KEYS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", choices=["parquet", "csv"], help="write one cached file (events_path)")
    ns = parser.parse_args()
    t0 = time.perf_counter()
    if ns.cache:
        out = events_path(ns.n_rows, ns.cache, n_keys=ns.keys, seed=ns.seed, subprocess=False)
        print(out, f"{time.perf_counter() - t0:.1f}s")
    else:
        paths = write_events(ns.directory, ns.n_rows, n_keys=ns.keys, seed=ns.seed)
        print({k: str(v) for k, v in paths.items()}, f"{time.perf_counter() - t0:.1f}s")
