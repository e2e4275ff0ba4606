"""AggregateByKey throughput on each driver, and QueryByKey point-read latency on Redis.

Usage::

    .venv/bin/python -m benchmarks.bench_stores [--events 30000] [--queries 2000]

For each driver (memory `NoopDriver`, `SQLiteDriver` on a file, `RedisDriver` on a loopback redis-server
started here, `V3ioDriver` on the loopback V3IO emulator) it runs the README aggregation over the first
``--events`` rows of the workload twice: ``AggregateByKey`` alone (the driver is hit to load each new key and
by the final flush) and ``AggregateByKey → WriteToTable`` (one persisted record per event). Then it serves
``--queries`` requests one at a time through ``QueryByKey`` on Redis (a key reload per request: no live
state in the serving process) and prints p50/p99 of the request round trip.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._data import streaming_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Redis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.01)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _aggregates() -> list[Any]:
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


def _ingest(driver: Any, table_path: str, rows: list[dict[str, Any]], write: bool) -> float:
    from storey import AggregateByKey, Reduce, Source, Table, WriteToTable, build_flow

    table = Table(table_path, driver)
    steps: list[Any] = [Source(), AggregateByKey(_aggregates(), table, key="key", time_field="time")]
    if write:
        steps.append(WriteToTable(table, columns=["click"]))
    steps.append(Reduce(0, lambda n, _: n + 1))
    start = time.perf_counter()
    controller = build_flow(steps).run()
    for body in rows:
        controller.emit(body, key=body["key"])
    controller.terminate(wait=True)
    return time.perf_counter() - start


def _query_latency(driver: Any, table_path: str, rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    from storey import Complete, QueryByKey, Source, Table, build_flow

    controller = build_flow(
        [
            Source(),
            QueryByKey(
                ["number_of_clicks_count_1h", "purchases_avg_24h", "failed_activities_count_1h"],
                Table(table_path, driver),
                key="key",
                time_field="time",
            ),
            Complete(),
        ]
    ).run()
    latencies = []
    last = rows[-1]["time"]
    for i in range(n):
        body = {"key": rows[(i * 7919) % len(rows)]["key"], "time": last}
        start = time.perf_counter()
        controller.emit(body).await_result()
        latencies.append(time.perf_counter() - start)
    controller.terminate(wait=True)
    latencies.sort()
    return {
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 3),
        "queries": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=2_000)
    args = parser.parse_args()
    from storey import NoopDriver, RedisDriver, SQLiteDriver
    from storey.drivers.v3io import V3ioDriver
    from storey.testing.v3io_emulator import V3ioEmulator

    rows = streaming_events(args.events)
    tmp = Path(tempfile.mkdtemp())
    redis = _Redis()
    emulator = V3ioEmulator().start()
    drivers = {
        "memory": (lambda: NoopDriver(), "t"),
        "sqlite": (lambda: SQLiteDriver(str(tmp / "bench.db")), "t"),
        "redis": (lambda: RedisDriver(redis.url), "t"),
        "v3io-emulator": (lambda: V3ioDriver(emulator.url, access_key="bench"), "/bigdata/bench"),
    }
    results: dict[str, Any] = {}
    try:
        for name, (make, path) in drivers.items():
            agg = _ingest(make(), f"{path}-agg", rows, write=False)
            write = _ingest(make(), f"{path}-write", rows, write=True)
            results[name] = {
                "aggregate_events_per_s": round(len(rows) / agg, 1),
                "aggregate_write_events_per_s": round(len(rows) / write, 1),
            }
        results["redis"]["query"] = _query_latency(RedisDriver(redis.url), "t-agg", rows, args.queries)
    finally:
        redis.stop()
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'driver':15} {'AggregateByKey ev/s':>20} {'+ WriteToTable ev/s':>20}")
    for name, r in results.items():
        print(f"{name:15} {r['aggregate_events_per_s']:>20,.0f} {r['aggregate_write_events_per_s']:>20,.0f}")
    q = results["redis"]["query"]
    print(f"QueryByKey on Redis ({q['queries']} requests): p50 {q['p50_ms']} ms, p99 {q['p99_ms']} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
