"""Runs inside the upstream-storey venv (``benchmarks/_upstream.py``); called by ``make_upstream_v3io_wire.py``.

Usage: ``python upstream_v3io_runner.py WEBAPI_URL``. Runs upstream storey 1.14.1's ``AggregateByKey`` +
``NoSqlTarget`` over a ``Table`` with its own ``V3ioDriver`` against the V3IO emulator at ``WEBAPI_URL``,
in two runs (the second resumes from the state the first persisted), for ``partitioned_by_key`` True and
False, and compares the emitted events with one uninterrupted in-memory (``NoopDriver``) run; then writes
a few records with ``StreamTarget``. Prints a one-line JSON summary.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta

BASE = datetime(2024, 1, 1, tzinfo=UTC)
EVENTS = [(f"u{i % 3}", float(i % 7) - 2.5, BASE + timedelta(minutes=7 * i)) for i in range(48)]


def run_flow(driver, table_path, events, partitioned):
    from storey import AggregateByKey, FieldAggregator, NoSqlTarget, Reduce, SyncEmitSource, Table, build_flow
    from storey.dtypes import SlidingWindows

    table = Table(table_path, driver, partitioned_by_key=partitioned)
    windows = SlidingWindows(["1h", "2h"], "10m")
    aggr = FieldAggregator("amount", "amount", ["sum", "count", "max", "min"], windows)
    c = build_flow(
        [
            SyncEmitSource(),
            AggregateByKey([aggr], table, time_field="t"),
            NoSqlTarget(table),
            Reduce([], lambda acc, x: [*acc, x]),
        ]
    ).run()
    for key, amount, t in events:
        c.emit({"amount": amount, "name": "it's" if key == "u1" else "plain", "t": t}, key=key)
    c.terminate()
    return c.await_termination()


def main() -> None:
    os.environ["V3IO_API"] = sys.argv[1]
    os.environ["V3IO_ACCESS_KEY"] = "upstream"
    from storey import StreamTarget, SyncEmitSource, build_flow
    from storey.drivers import NoopDriver, V3ioDriver

    out = {}
    for partitioned in (True, False):
        memory = run_flow(NoopDriver(), "memory", EVENTS, partitioned)
        path = f"/bigdata/upstream_{str(partitioned).lower()}/"
        resumed = run_flow(V3ioDriver(), path, EVENTS[:24], partitioned)
        resumed += run_flow(V3ioDriver(), path, EVENTS[24:], partitioned)
        out[path] = {"events": len(memory), "same_as_memory": memory == resumed}
    c = build_flow(
        [
            SyncEmitSource(),
            StreamTarget(
                V3ioDriver(), "/bigdata/upstream_stream", shards=2, sharding_func=lambda e: int(e.key[1:]) % 2
            ),
        ]
    ).run()
    for i in range(6):
        c.emit({"i": i}, key=f"k{i}")
    c.terminate()
    c.await_termination()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
