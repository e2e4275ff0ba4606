"""Point-operation throughput of each driver: ``save_key``/``load_key`` ops/s and `Table.flush` keys/s.

A record is 3 attributes (a float, an int and a 200-byte state blob), as an aggregation write would be.
``seq`` awaits one call at a time; ``c8`` keeps 8 calls in flight (as `WriteToTable` does with its default
``max_in_flight``). ``flush`` marks N keys dirty and times one `Table.flush` (batched `save_keys`).
Redis runs against a private ``redis-server`` on loopback when the binary is available, else ``REDIS_URL``.

Usage: ``python -m benchmarks.bench_drivers_micro [n_ops] [n_flush_keys]``
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storey.drivers import Driver, NoopDriver, RedisDriver, SQLiteDriver
from storey.table import Table

RECORD = {"sum": 1234.5678, "n": 42, "_storey_a_x": bytes(range(200))}


class State:
    def encode(self) -> bytes:
        return RECORD["_storey_a_x"]


async def rate(n: int, concurrency: int, op: Callable[[int], Any]) -> float:
    async def worker(start: int) -> None:
        for i in range(start, n, concurrency):
            await op(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(j) for j in range(concurrency)))
    return n / (time.perf_counter() - t0)


async def measure(driver: Driver, n: int, n_flush: int) -> dict[str, float]:
    keys = [f"user{i % 1000}" for i in range(n)]
    await driver.save_key("bench", "warmup", RECORD)
    out = {}
    for conc in (1, 8):
        label = "seq" if conc == 1 else f"c{conc}"
        out[f"save {label}"] = await rate(n, conc, lambda i: driver.save_key("bench", keys[i], RECORD))
        out[f"load {label}"] = await rate(n, conc, lambda i: driver.load_key("bench", keys[i]))
    table = Table("bench-flush", driver)
    for i in range(n_flush):
        table.set_state(i, "x", State())
        table.mark_state_dirty(i, "x", f"e{i}", i)
        table.update_key(i, {"sum": 1.5, "n": i})
    t0 = time.perf_counter()
    await table.flush()
    out["flush keys/s"] = n_flush / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(min(n, n_flush)):
        await table.persist_key(i, {"n": -i})
    out["persist_key seq"] = min(n, n_flush) / (time.perf_counter() - t0)
    await table.close()
    return out


def start_redis() -> tuple[str | None, subprocess.Popen[bytes] | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return os.environ.get("REDIS_URL"), None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.01)
    return f"redis://127.0.0.1:{port}/0", proc


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    n_flush = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    redis_url, proc = start_redis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            drivers: dict[str, Driver] = {
                "noop": NoopDriver(),
                "sqlite :memory:": SQLiteDriver(),
                "sqlite file (WAL)": SQLiteDriver(Path(tmp) / "bench.db"),
            }
            if redis_url:
                drivers["redis (loopback)"] = RedisDriver(redis_url, key_prefix="bench:")
            rows = {}
            for name, driver in drivers.items():
                rows[name] = await measure(driver, n, n_flush)
                await driver.close()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    columns = list(next(iter(rows.values())))
    print(f"{n} ops per cell, {n_flush} keys per flush; ops/s (higher is better)")
    print(f"{'driver':<20}" + "".join(f"{c:>16}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<20}" + "".join(f"{row[c]:>16,.0f}" for c in columns))
    if not redis_url:
        print("redis: skipped (no redis-server binary and no REDIS_URL)")
    versions = f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    if proc is not None or redis_url:
        import redis

        versions += f", redis-py {redis.__version__}"
    print(versions, f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    asyncio.run(main())
