"""``engine='dask'`` next to the local engine: identical output on 1 M events, then 10 M events on 1 and 2
workers.

Usage::

    .venv/bin/python -m benchmarks.bench_dask [--check-events 1000000] [--events 10000000] [--workers 1 2]
                                               [--engine-threads 1] [--no-local]

Workload: `benchmarks._data` (README events: 10 k keys, 5 events/s, late and too-late events) as cached
Parquet files (row groups of 65 536 rows), the seed README features (13) with `EmitEveryEvent`.

1. **Identical output.** `aggregate` on the local engine (an Arrow table in memory) and on a 2-worker
   process `LocalCluster` (``output=`` a Parquet dataset written by the workers, read back) over the
   ``--check-events`` file; rows are compared after a stable sort by key (each key's rows in stream order),
   every value bit for bit (floats: ``a == b`` or both NaN, nulls equal), and the metrics.
2. **Scaling.** ``--events`` rows from the Parquet file to a Parquet dataset (``output=``) on a fresh
   ``LocalCluster(n_workers=w, processes=True, threads_per_worker=1)`` per ``w``; every worker first runs
   a small warm-up (numba modules load from the disk cache), which is not timed. Peak memory per worker
   is the worker process's ``VmHWM`` (the kernel's high-water mark of its RSS; includes the worker's start)
   and, as a cross-check, the highest process memory the workers reported to the scheduler
   (distributed's ``metrics['memory']``, from ``psutil``, sampled every 0.2 s). The local engine on the
   same file (``output=`` one Parquet file, in a fresh process) is the reference row.

``--repeat`` times each worker count several times on the same cluster and shows the fastest run (the
machine is shared; memory peaks cover all runs). ``--engine-threads`` sets ``STOREY_FRAMES_THREADS`` in the workers (the compiled engine runs independent
aggregators on threads; with one Dask thread per worker, 1 keeps one core per worker). The local reference
uses the engine's default threads. The machine's other load is printed: numbers come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._data import events_path

BENCH_DIR = Path(__file__).resolve().parent


def readme_aggregates() -> list[Any]:
    from storey import FieldAggregator, FieldEquals, SlidingWindows

    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    return [
        FieldAggregator("number_of_clicks", "click", ["count"], windows),
        FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
        FieldAggregator(
            "failed_activities",
            "activity_status",
            ["count"],
            SlidingWindows(["1h"], "10m"),
            aggr_filter=FieldEquals("activity_status", "fail"),
        ),
    ]


# ------------------------------------------------------------------------------------------ comparison
def stable_by_key(table: Any, key: str = "key") -> Any:
    """Rows stably sorted by key: each key's rows keep their (stream) order."""
    import pyarrow as pa

    _, codes = np.unique(table.column(key).to_numpy(zero_copy_only=False), return_inverse=True)
    return table.take(pa.array(np.argsort(codes.reshape(-1), kind="stable")))


def mismatches(a: Any, b: Any) -> dict[str, int]:
    """Per column, the rows whose values differ (floats: equal or both NaN; nulls must match)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        nx = x.is_null().to_numpy(zero_copy_only=False)
        ny = y.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_floating(x.type):
            xv = x.to_numpy(zero_copy_only=False)
            yv = y.to_numpy(zero_copy_only=False)
            equal = (xv == yv) | (np.isnan(xv) & np.isnan(yv))
        else:
            equal = pc.fill_null(pc.equal(x, y), False).to_numpy(zero_copy_only=False)
        bad = (nx != ny) | (~nx & ~equal)
        out[name] = int(bad.sum())
    return out


def check_identical(n: int, workdir: str) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from storey.frames import aggregate

    path = str(events_path(n))
    t0 = time.perf_counter()
    local = aggregate(path, readme_aggregates(), key="key", time_field="time")
    t_local = time.perf_counter() - t0
    out = os.path.join(workdir, "check")
    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        t0 = time.perf_counter()
        metrics = aggregate(
            path, readme_aggregates(), key="key", time_field="time", engine="dask", output=out
        )
        t_dask = time.perf_counter() - t0
    rows = pq.read_table(out)
    local_metrics = json.loads(local.schema.metadata[b"storey.metrics"])
    same_columns = sorted(rows.column_names) == sorted(local.column_names)
    bad = {}
    if same_columns and rows.num_rows == local.num_rows:
        bad = mismatches(stable_by_key(local), stable_by_key(rows.select(local.column_names)))
    identical = (
        same_columns
        and rows.num_rows == local.num_rows
        and not any(bad.values())
        and {**local_metrics, "rows_out": local.num_rows} == metrics
    )
    return {
        "events": n,
        "rows_local": local.num_rows,
        "rows_dask": rows.num_rows,
        "columns": len(local.column_names),
        "values_compared": local.num_rows * len(local.column_names),
        "mismatched_values": sum(bad.values()) if bad else None,
        "metrics_equal": {**local_metrics, "rows_out": local.num_rows} == metrics,
        "identical": identical,
        "seconds_local": round(t_local, 2),
        "seconds_dask_2_workers": round(t_dask, 2),
        "files": len(os.listdir(out)),
    }


# ------------------------------------------------------------------------------------------ scaling
def _peak_rss_kb() -> int:
    """This process's peak RSS in KiB: ``VmHWM`` (Linux; reset by exec, unlike ``ru_maxrss``, which a
    spawned worker inherits from the process that forked it), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class MemorySampler:
    """The highest process memory each worker reports to the scheduler (distributed's psutil metric)."""

    def __init__(self, client: Any, every: float = 0.2) -> None:
        self.client = client
        self.every = every
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                workers = self.client.scheduler_info(n_workers=-1)["workers"]
            except Exception:
                workers = {}
            for addr, info in workers.items():
                memory = int(info.get("metrics", {}).get("memory", 0))
                self.peak[addr] = max(self.peak.get(addr, 0), memory)
            self._stop.wait(self.every)


def run_dask(n: int, workers: int, engine_threads: int, workdir: str, repeat: int = 1) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster

    from storey.frames import aggregate

    path = str(events_path(n))
    warm = str(events_path(100_000))
    env = {"STOREY_FRAMES_THREADS": str(engine_threads)} if engine_threads else {}
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None, env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        startup = time.perf_counter() - t0
        with dask.config.set({"storey.partition-rows": 20_000}):  # every worker gets a partition
            aggregate(warm, readme_aggregates(), key="key", time_field="time", engine="dask",
                      output=os.path.join(workdir, f"warm{workers}"))  # fmt: skip
        times = []
        with MemorySampler(client) as sampler:
            for i in range(repeat):
                t0 = time.perf_counter()
                metrics = aggregate(
                    path,
                    readme_aggregates(),
                    key="key",
                    time_field="time",
                    engine="dask",
                    output=os.path.join(workdir, f"dask{workers}-{i}"),
                )
                times.append(time.perf_counter() - t0)
        seconds = min(times)
        peaks = client.run(_peak_rss_kb)
    return {
        "engine": "dask",
        "workers": workers,
        "seconds": seconds,
        "all_seconds": [round(t, 2) for t in times],
        "rows_per_s": n / seconds,
        "peak_rss_mb": sorted(round(v / 1024) for v in peaks.values()),
        "peak_reported_mb": sorted(round(v / 2**20) for v in sampler.peak.values()),
        "cluster_start_s": startup,
        "events": metrics["events"],
        "rows_out": metrics["rows_out"],
    }


_LOCAL_SCRIPT = """
import json, sys, time
from benchmarks.bench_dask import _peak_rss_kb, readme_aggregates
from storey.frames import aggregate
t0 = time.perf_counter()
m = aggregate(sys.argv[1], readme_aggregates(), key="key", time_field="time", output=sys.argv[2])
s = time.perf_counter() - t0
print(json.dumps({"seconds": s, "peak_kb": _peak_rss_kb(), "rows_out": m["rows_out"]}))
"""


def run_local(n: int, workdir: str) -> dict[str, Any]:
    path = str(events_path(n))
    out = os.path.join(workdir, "local.parquet")
    proc = subprocess.run(
        [sys.executable, "-c", _LOCAL_SCRIPT, path, out],
        cwd=BENCH_DIR.parent,
        check=True,
        capture_output=True,
        text=True,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "engine": "local",
        "workers": 1,
        "seconds": r["seconds"],
        "rows_per_s": n / r["seconds"],
        "peak_rss_mb": [round(r["peak_kb"] / 1024)],
        "peak_reported_mb": [],
        "cluster_start_s": 0.0,
        "events": n,
        "rows_out": r["rows_out"],
    }


def print_table(rows: list[dict[str, Any]], n: int) -> None:
    base = next((r["rows_per_s"] for r in rows if r["engine"] == "dask" and r["workers"] == 1), None)
    print(f"\n{n:,} events (README features, EmitEveryEvent, Parquet in -> Parquet out)")
    head = ["engine", "workers", "seconds", "rows/s", "peak RSS/worker MB", "reported MB", "vs 1 worker"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ratio = f"{r['rows_per_s'] / base:.2f}x" if base and r["engine"] == "dask" else "-"
        cells = [
            r["engine"],
            str(r["workers"]),
            f"{r['seconds']:.1f}",
            f"{r['rows_per_s']:,.0f}",
            ", ".join(map(str, r["peak_rss_mb"])),
            ", ".join(map(str, r["peak_reported_mb"])) or "-",
            ratio,
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-events", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--engine-threads", type=int, default=1, help="STOREY_FRAMES_THREADS in workers (0: unset)"
    )
    parser.add_argument("--no-local", action="store_true", help="skip the local reference row")
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed runs per worker count (the fastest is shown)"
    )
    ns = parser.parse_args()

    import dask
    import distributed
    import numba
    import pandas
    import pyarrow

    print(
        f"python {sys.version.split()[0]}, dask {dask.__version__}, distributed {distributed.__version__}, "
        f"pandas {pandas.__version__}, pyarrow {pyarrow.__version__}, numba {numba.__version__}, "
        f"cpus {os.cpu_count()}, load average before {os.getloadavg()}"
    )
    events_path(ns.check_events)
    events_path(100_000)
    events_path(ns.events)
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as workdir:
        if ns.check_events:
            check = check_identical(ns.check_events, workdir)
            print("\nidentical output check:", json.dumps(check))
            if not check["identical"]:
                raise SystemExit("dask output differs from the local engine")
        rows = []
        if not ns.no_local:
            rows.append(run_local(ns.events, workdir))
            print("local:", json.dumps(rows[-1]), flush=True)
        for w in ns.workers:
            rows.append(run_dask(ns.events, w, ns.engine_threads, workdir, ns.repeat))
            print("dask:", json.dumps(rows[-1]), flush=True)
        print_table(rows, ns.events)
        one = next((r for r in rows if r["engine"] == "dask" and r["workers"] == 1), None)
        two = next((r for r in rows if r["engine"] == "dask" and r["workers"] == 2), None)
        if one and two:
            print(
                f"\nscaling ratio (2 workers / 1 worker rows/s): {two['rows_per_s'] / one['rows_per_s']:.2f}"
            )
        print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
