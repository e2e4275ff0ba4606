"""`storey.frames` on the README workload, next to the peers and upstream storey.

Workload (``_data.README_FEATURES``): 13 features per event (clicks count and purchases avg/min/max over
1h/2h/24h with a 10-minute period, failed activities count over 1h with a ``FieldEquals`` filter), one
output row per input event, 10 k keys, ~1 % late and ~0.05 % too-late events.

Measured, each in a fresh subprocess (end to end: read + compute + materialise; peak RSS = ``VmHWM``):

- ``storey.frames.aggregate`` from Parquet and CSV, single-threaded (``STOREY_FRAMES_THREADS=1``) and with
  its default threads (independent aggregators run concurrently), returning a `pyarrow.Table`;
- the peers of ``_peers.py`` (polars rolling and bucketed, pandas, DuckDB), single-threaded and default;
- upstream storey's streaming ``AggregateByKey`` (own virtualenv) on the first ``--upstream-n`` events;
- a parity check: ``check_parity`` (the real streaming flow vs frames) on the first ``--parity-n`` events of
  the 1 M file, bit for bit;
- a ``--big-n`` (10 M) row Parquet backfill streamed to Parquet with ``output=``, with its peak RSS;
- ``as_of`` for ``--labels`` labels at random events' own (key, time): the compiled label loop next to the
  Python one, their outputs compared bit for bit.

Usage::

    .venv/bin/python -m benchmarks.bench_frames                 # everything (takes a few minutes)
    .venv/bin/python -m benchmarks.bench_frames --repeat 3      # best of 3 fresh-process runs per engine
    .venv/bin/python -m benchmarks.bench_frames --skip-peers --skip-upstream --big-n 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._repeat import fastest_run

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


def readme_aggregates() -> list[Any]:
    """The README features as `FieldAggregator`s."""
    from benchmarks._data import README_FEATURES
    from storey import FieldAggregator, FieldEquals, SlidingWindows

    out = []
    for name, field, aggrs, windows, period, fail_only in README_FEATURES:
        flt = FieldEquals("activity_status", "fail") if fail_only else None
        out.append(
            FieldAggregator(name, field, list(aggrs), SlidingWindows(list(windows), period), aggr_filter=flt)
        )
    return out


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------- child processes
def _tiny_events() -> Any:
    """One event of the workload's schema (to load the compiled code before a clock starts)."""
    import pyarrow as pa

    return pa.table(
        {
            "key": ["a"],
            "time": pa.array([0], pa.timestamp("ns", "UTC")),
            "click": [1],
            "purchase_amount": [1.0],
            "activity_status": ["fail"],
        }
    )


def _child_frames(path: str, output: str | None) -> dict[str, Any]:
    from storey.frames import aggregate

    aggs = readme_aggregates()
    # load the compiled engine (numba's on-disk cache) before the clock starts, as imports are for the peers
    aggregate(_tiny_events(), aggs, key="key", time_field="time")
    rss_before = _peak_rss_mb()
    t0 = time.perf_counter()
    result = aggregate(path, aggs, key="key", time_field="time", output=output)
    seconds = time.perf_counter() - t0
    if output is None:
        rows_in = json.loads(result.schema.metadata[b"storey.metrics"])["rows"]
        rows_out = result.num_rows
    else:
        rows_in, rows_out = result["rows"], result["rows_out"]
    return {
        "engine": "storey.frames",
        "format": "csv" if path.endswith(".csv") else "parquet",
        "threads": os.environ.get("STOREY_FRAMES_THREADS", "default"),
        "output": "table" if output is None else Path(output).suffix.lstrip("."),
        "rows": rows_in,
        "rows_out": rows_out,
        "seconds": round(seconds, 3),
        "events_per_s": round(rows_in / seconds, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_mb": round(rss_before, 1),
    }


def _child_parity(path: str, n: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from storey.frames import check_parity

    table = pq.read_table(path).slice(0, n)
    t0 = time.perf_counter()
    report = check_parity(readme_aggregates(), table, key="key", time_field="time")
    return {
        "parity_ok": report.ok,
        "rows_compared": report.rows_compared,
        "columns": len(report.mismatches),
        "mismatching_cells": sum(report.mismatches.values()),
        "metrics": report.metrics,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": str(report).splitlines()[0],
    }


def _asof_labels(path: str, n_labels: int) -> Any:
    """`n_labels` labels at the (key, time) of random events of `path` (seed 1), in time order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys_times = pq.read_table(path, columns=["key", "time"])
    rows = np.sort(np.random.default_rng(1).choice(keys_times.num_rows, n_labels, replace=False))
    return keys_times.take(pa.array(rows))


def _child_asof(path: str, n_labels: int) -> dict[str, Any]:
    """`as_of` for labels at random events' own (key, time): the compiled label loop, then the Python one,
    compared bit for bit."""
    import numpy as np

    from storey.frames import as_of
    from storey.frames import asof as asof_module

    aggs = readme_aggregates()
    labels = _asof_labels(path, n_labels)
    as_of(labels.slice(0, 10), path, aggs, key="key", time_field="time")  # load code and readers first
    out: dict[str, Any] = {"labels": n_labels}
    tables = {}
    for mode in ("compiled", "python"):
        asof_module.USE_COMPILED = mode == "compiled"
        t0 = time.perf_counter()
        tables[mode] = as_of(labels, path, aggs, key="key", time_field="time")
        seconds = time.perf_counter() - t0
        rows = json.loads(tables[mode].schema.metadata[b"storey.metrics"])["events"]
        out[mode] = {"seconds": round(seconds, 3), "events_per_s": round(rows / seconds, 1),
                     "labels_per_s": round(n_labels / seconds, 1)}  # fmt: skip
    out["rows"] = rows
    diff = 0
    for name in tables["compiled"].schema.names[2:]:
        a = tables["compiled"].column(name).to_numpy(zero_copy_only=False)
        b = tables["python"].column(name).to_numpy(zero_copy_only=False)
        if a.dtype == np.float64:
            a, b = (np.where(np.isnan(x), np.nan, x).view(np.uint64) for x in (a, b))
        diff += int(np.count_nonzero(a != b))
    out["mismatching_cells"] = diff
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def _run_child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_frames", "_child", *args]
    proc = subprocess.run(cmd, cwd=REPO_DIR, env=env or dict(os.environ), capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"child {args} failed:\n{proc.stderr[-4000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_frames(path: Path, *, threads: int | None, output: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("STOREY_FRAMES_THREADS", None)
    if threads is not None:
        env["STOREY_FRAMES_THREADS"] = str(threads)
        env["POLARS_MAX_THREADS"] = str(threads)
    return _run_child(["frames", str(path), output or "-"], env)


# ----------------------------------------------------------------------------------------- report
def _print(rows: list[dict[str, Any]], ours: float | None) -> None:
    head = f"{'engine':28s} {'format':8s} {'threads':>7s} {'rows':>10s} {'seconds':>8s} {'ev/s':>12s} {'RSS MB':>8s}"
    print(head + ("  ours/x" if ours else ""))
    for r in rows:
        eps = r["events_per_s"]
        ratio = f"  {ours / eps:6.1f}x" if ours else ""
        name = r.get("engine") or r.get("peer")
        print(
            f"{name:28s} {r.get('format', '-'):8s} {r.get('threads', '-')!s:>7s} {r['rows']:>10,} "
            f"{r['seconds']:>8.2f} {eps:>12,.0f} {r.get('peak_rss_mb', float('nan')):>8.0f}{ratio}"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        kind = argv[1]
        if kind == "frames":
            out = _child_frames(argv[2], None if argv[3] == "-" else argv[3])
        elif kind == "asof":
            out = _child_asof(argv[2], int(argv[3]))
        else:
            out = _child_parity(argv[2], int(argv[3]))
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="events of the main comparison")
    parser.add_argument("--parity-n", type=int, default=200_000, help="events of the stream parity check")
    parser.add_argument("--upstream-n", type=int, default=50_000, help="events for upstream storey")
    parser.add_argument(
        "--big-n", type=int, default=10_000_000, help="rows of the output= backfill (0: skip)"
    )
    parser.add_argument("--labels", type=int, default=100_000, help="labels of the as_of run (0: skip)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fresh-process runs of storey.frames and each peer; the best counts",
    )
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-upstream", action="store_true")
    ns = parser.parse_args(argv)

    from benchmarks._data import events_path

    parquet, csv = events_path(ns.n, "parquet"), events_path(ns.n, "csv")
    print(f"workload: {ns.n:,} events, 10k keys, README features; files {parquet.name}, {csv.name}")
    import numba
    import pyarrow

    print(
        f"python {sys.version.split()[0]}, pyarrow {pyarrow.__version__}, numba {numba.__version__}, {os.cpu_count()} CPUs"
    )
    for path in (parquet, csv):  # compile / warm the on-disk numba cache once (the CSV reader has its own)
        run_frames(path, threads=1)
    rows = []
    for path in (parquet, csv):
        for threads in (1, None):
            rows.append(fastest_run(lambda p=path, t=threads: run_frames(p, threads=t), ns.repeat))
    ours = max(r["events_per_s"] for r in rows if r["format"] == "parquet" and r["threads"] == "1")
    if not ns.skip_peers:
        from benchmarks._peers import PEERS, run_peer

        for path in (parquet, csv):
            for threads in (1, None):
                for name in PEERS:
                    try:
                        r = fastest_run(
                            lambda n=name, p=path, t=threads: run_peer(n, p, threads=t), ns.repeat
                        )
                    except Exception as exc:
                        print(f"peer {name} on {path.name} failed: {exc}")
                        continue
                    rows.append(r)
    if not ns.skip_upstream:
        from benchmarks._upstream import upstream_aggregate

        try:
            up = upstream_aggregate(parquet, ns.upstream_n)
            rows.append({"engine": "upstream storey (stream)", "format": "parquet", "threads": 1,
                         "rows": up["events"], "seconds": up["seconds"], "events_per_s": up["events_per_s"]})  # fmt: skip
        except Exception as exc:
            print(f"upstream storey failed: {exc}")
    print()
    _print(rows, ours)
    peers_1 = [r for r in rows if r.get("peer") and r["threads"] == 1 and r["format"] == "parquet"]
    if peers_1:
        best = max(peers_1, key=lambda r: r["events_per_s"])
        print(f"\nfastest single-threaded peer on Parquet: {best['peer']} {best['events_per_s']:,.0f} ev/s; "
              f"storey.frames single-threaded {ours:,.0f} ev/s = {ours / best['events_per_s']:.1f}x")  # fmt: skip

    if ns.labels:
        env = {**os.environ, "STOREY_FRAMES_THREADS": "1"}
        r = _run_child(["asof", str(parquet), str(ns.labels)], env)
        c, p = r["compiled"], r["python"]
        print(f"\nas_of, {r['labels']:,} labels at random events' (key, time) over {r['rows']:,} events from "
              f"{parquet.name}, 1 thread: compiled {c['seconds']:.2f} s ({c['events_per_s']:,.0f} ev/s, "
              f"{c['labels_per_s']:,.0f} labels/s); Python label loop {p['seconds']:.2f} s "
              f"({p['seconds'] / c['seconds']:.1f}x slower); mismatching cells {r['mismatching_cells']}")  # fmt: skip

    print(f"\nparity: the streaming flow vs frames on the first {ns.parity_n:,} events of {parquet.name}")
    print(json.dumps(_run_child(["parity", str(parquet), str(ns.parity_n)]), indent=2))

    if ns.big_n:
        big = events_path(ns.big_n, "parquet")
        with tempfile.TemporaryDirectory() as folder:
            target = os.path.join(folder, "features.parquet")
            r = run_frames(big, threads=None, output=target)
            size = os.path.getsize(target) / 2**20
        print(f"\n{ns.big_n:,}-row Parquet backfill -> Parquet ({size:,.0f} MB written):")
        _print([r], None)
        verdict = "within" if r["peak_rss_mb"] <= 1024 else "ABOVE"
        print(f"peak RSS {r['peak_rss_mb']:,.0f} MB ({verdict} the 1 GiB target)")


if __name__ == "__main__":
    main()
