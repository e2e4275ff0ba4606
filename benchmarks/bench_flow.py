"""Flow runtime throughput: storey next to upstream storey, in the same run.

Usage::

    .venv/bin/python -m benchmarks.bench_flow [--events 1000000] [--upstream-events 50000] [--repeat 3]

Paths (each as in `benchmarks/upstream_scripts/`):

- ``emit``: ``Source → Map → Filter → Reduce`` fed through ``controller.emit`` (bodies ``{'i', 'x'}``; Map
  doubles x, Filter keeps even i, Reduce sums x; the result is checked against plain Python);
- ``csv``: ``ReadCSV(header=True, key_field='key', time_field='time') → Reduce`` counting rows;
- ``parquet``: ``ReadParquet(key_field='key') → Reduce`` counting rows;

over the README workload files of `benchmarks._data` (1 M rows). Upstream runs in its own virtualenv (same
import name); its emit path handles only a few thousand events/s, so it gets ``--upstream-events`` events.

Imports are outside the clock on both sides: upstream's ``import storey`` imports pandas and pyarrow before
its timer starts; storey imports them (and, for large CSV files, the vectorised reader of `storey.frames`)
lazily on first use, so `storey_read` imports the modules its path will load before starting the clock
(``--cold`` keeps them inside; they cost a few tenths of a second once per process).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

from benchmarks._data import events_path
from benchmarks._repeat import fastest_run
from benchmarks._upstream import upstream_flow_emit, upstream_read_csv, upstream_read_parquet


def _rate(n: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds, 1), **extra}


def storey_emit(n: int) -> dict[str, Any]:
    from storey import Filter, Map, Reduce, Source, build_flow

    bodies = [{"i": i, "x": float(i)} for i in range(n)]
    start = time.perf_counter()
    controller = build_flow(
        [
            Source(),
            Map(lambda b: {"i": b["i"], "x": b["x"] * 2.0}),
            Filter(lambda b: b["i"] % 2 == 0),
            Reduce(0.0, lambda acc, b: acc + b["x"]),
        ]
    ).run()
    for body in bodies:
        controller.emit(body)
    total = controller.terminate(wait=True)
    seconds = time.perf_counter() - start
    expected = sum(2.0 * i for i in range(0, n, 2))
    if total != expected:
        raise SystemExit(f"wrong result {total} != {expected}")
    return _rate(n, seconds)


def _warm_imports(kind: str) -> None:
    """Import what the read path imports lazily (as upstream's ``import storey`` does before its clock)."""
    import pyarrow

    if kind == "csv":
        import pandas  # noqa: F401 - pyarrow imports it when storey.frames builds Arrow values
        import pyarrow.compute
        import pyarrow.csv

        import storey.frames._io_csv  # noqa: F401
    else:
        import pyarrow.parquet  # noqa: F401


def storey_read(kind: str, path: str, cold: bool = False) -> dict[str, Any]:
    from storey import ReadCSV, ReadParquet, Reduce, build_flow

    if not cold:
        _warm_imports(kind)
    start = time.perf_counter()
    if kind == "csv":
        source = ReadCSV(path, header=True, key_field="key", time_field="time")
    else:
        source = ReadParquet(path, key_field="key")
    rows = build_flow([source, Reduce(0, lambda acc, _: acc + 1)]).run().await_termination()
    return _rate(rows, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--upstream-events", type=int, default=50_000)
    parser.add_argument("--no-upstream", action="store_true")
    parser.add_argument("--cold", action="store_true", help="time storey's lazy imports too")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of every measurement, storey's and upstream's; the best counts",
    )
    args = parser.parse_args()
    parquet = str(events_path(args.events, "parquet"))
    csv = str(events_path(args.events, "csv"))
    repeat = max(1, args.repeat)
    results: dict[str, dict[str, dict[str, Any]]] = {
        "emit": {"storey": fastest_run(lambda: storey_emit(args.events), repeat)},
        "csv": {"storey": fastest_run(lambda: storey_read("csv", csv, args.cold), repeat)},
        "parquet": {"storey": fastest_run(lambda: storey_read("parquet", parquet, args.cold), repeat)},
    }
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not args.no_upstream:
        results["emit"]["upstream"] = fastest_run(lambda: upstream_flow_emit(args.upstream_events), repeat)
        results["csv"]["upstream"] = fastest_run(lambda: upstream_read_csv(csv), repeat)
        results["parquet"]["upstream"] = fastest_run(lambda: upstream_read_parquet(parquet), repeat)
    print(f"{'path':8} {'engine':9} {'events':>10} {'seconds':>8} {'events/s':>12} {'ratio':>7}")
    for path, by_engine in results.items():
        up = by_engine.get("upstream", {}).get("events_per_s")
        for engine, r in by_engine.items():
            ratio = f"{r['events_per_s'] / up:6.1f}x" if up and engine == "storey" else ""
            print(
                f"{path:8} {engine:9} {r['events']:>10,} {r['seconds']:>8.2f} {r['events_per_s']:>12,.0f} {ratio:>7}"
            )
    print(f"storey peak RSS: {peak} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
