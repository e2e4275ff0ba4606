"""Peer baselines for the batch benchmark: the README features computed per event by other engines.

The README features (``_data.README_FEATURES``, 13 columns): ``number_of_clicks`` count and ``purchases``
avg/min/max over 1h/2h/24h, ``failed_activities`` count over 1h of events with
``activity_status == 'fail'``; one output row per input event, with ``key`` and ``time``.

Peers (``PEERS``):

``polars_rolling``
    ``DataFrame.rolling(index_column='time', period=W, group_by='key')`` once per window, after sorting by
    ``(key, time)``; windows are ``(t − W, t]``.
``polars_bucketed``
    The same 10-minute tile semantics as storey (window W as of t = tiles ``tile(t) − n + 1 … tile(t)``,
    ``n = W / 10m``): per-(key, tile) summaries rolled over the previous ``n − 1`` tiles
    (``rolling(index_column='tile', period='{n-1}i', offset='-{n}i')``), joined back to the events and
    combined with the running within-tile prefix in arrival order. Exact for in-order data; for a late
    event its earlier tiles also hold events that arrive after it (a batch view).
``pandas_rolling``
    ``df.groupby('key').rolling(W, on='time')`` once per window (sorted by ``(key, time)``).
``duckdb_range``
    ``… OVER (PARTITION BY key ORDER BY time RANGE BETWEEN INTERVAL W PRECEDING AND CURRENT ROW)``,
    materialized as an Arrow table.

Each peer reads the file itself (Parquet or CSV), so the time is end to end. `run_peer` runs one peer in a
fresh subprocess and reports ``rows``, ``seconds`` (read + compute + materialize; imports excluded and
reported apart), and ``peak_rss_mb`` (``ru_maxrss`` of that process). ``threads=1`` sets
``POLARS_MAX_THREADS=1``, DuckDB ``SET threads=1`` and pyarrow's CPU/IO pools to 1; ``threads=None``
leaves every library at its default.

Usage::

    from benchmarks._peers import run_peer, run_peers
    run_peer("duckdb_range", events_path(1_000_000), threads=1)
    # {'peer': 'duckdb_range', 'format': 'parquet', 'threads': 1, 'rows': 1000000, 'seconds': ...,
    #  'events_per_s': ..., 'peak_rss_mb': ..., 'import_seconds': ...}
    run_peers([parquet_path, csv_path], threads=(1, None))   # list of such dicts

``python -m benchmarks._peers [-n 1000000]`` prints a table for all peers, both formats, both thread
settings; ``--check`` compares the peers with each other on a small input first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

WINDOWS = (("1h", 3_600), ("2h", 7_200), ("24h", 86_400))
FAIL_WINDOWS = (("1h", 3_600),)
PERIOD_S = 600
OUTPUT_FEATURES = (
    *(f"number_of_clicks_count_{w}" for w, _ in WINDOWS),
    *(f"purchases_{a}_{w}" for a in ("avg", "min", "max") for w, _ in WINDOWS),
    *(f"failed_activities_count_{w}" for w, _ in FAIL_WINDOWS),
)


def _format(path: str | Path) -> str:
    return "csv" if str(path).endswith(".csv") else "parquet"


# --- polars -------------------------------------------------------------------------------------------


def _polars_read(path: str | Path):
    import polars as pl

    if _format(path) == "parquet":
        return pl.read_parquet(path)
    df = pl.read_csv(path, schema_overrides={"time": pl.String})
    return df.with_columns(
        pl.col("time").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="ns").dt.replace_time_zone("UTC")
    )


def polars_rolling(path: str | Path):
    """Per-event features with ``polars.DataFrame.rolling`` (one call per window); a polars DataFrame."""
    import polars as pl

    df = _polars_read(path).sort("key", "time")
    is_fail = (pl.col("activity_status") == "fail").cast(pl.Int64)
    out = [df.select("key", "time")]
    for w, _ in WINDOWS:
        aggs = [
            pl.col("click").count().alias(f"number_of_clicks_count_{w}"),
            pl.col("purchase_amount").mean().alias(f"purchases_avg_{w}"),
            pl.col("purchase_amount").min().alias(f"purchases_min_{w}"),
            pl.col("purchase_amount").max().alias(f"purchases_max_{w}"),
        ]
        if (w, _) in FAIL_WINDOWS:
            aggs.append(is_fail.sum().alias(f"failed_activities_count_{w}"))
        rolled = df.rolling(index_column="time", period=w, group_by="key").agg(aggs)
        out.append(rolled.drop("key", "time"))
    return pl.concat(out, how="horizontal").select("key", "time", *OUTPUT_FEATURES)


def polars_bucketed(path: str | Path):
    """Per-event features with storey's tile semantics, in polars; a polars DataFrame in input order."""
    import polars as pl

    inf = float("inf")
    df = _polars_read(path).with_columns(
        tile=pl.col("time").dt.epoch("ns") // (PERIOD_S * 1_000_000_000),
        _v=pl.col("purchase_amount"),
        _f=(pl.col("activity_status") == "fail").cast(pl.Int64),
    )
    kt = ["key", "tile"]
    # Running summary within the event's own tile, in arrival order (row order).
    prefix = df.with_columns(
        p_c=pl.col("click").is_not_null().cast(pl.Int64).cum_sum().over(kt),
        p_n=pl.col("_v").is_not_null().cast(pl.Int64).cum_sum().over(kt),
        p_s=pl.col("_v").fill_null(0.0).cum_sum().over(kt),
        p_mn=pl.col("_v").fill_null(inf).cum_min().over(kt),
        p_mx=pl.col("_v").fill_null(-inf).cum_max().over(kt),
        p_f=pl.col("_f").cum_sum().over(kt),
    )
    tiles = (
        df.group_by(kt)
        .agg(
            t_c=pl.col("click").count(),
            t_n=pl.col("_v").count(),
            t_s=pl.col("_v").sum(),
            t_mn=pl.col("_v").fill_null(inf).min(),
            t_mx=pl.col("_v").fill_null(-inf).max(),
            t_f=pl.col("_f").sum(),
        )
        .sort(kt)
    )
    # Roll every window over the tile table first, then join the events once.
    for w, seconds in WINDOWS:
        n = seconds // PERIOD_S
        rolled = tiles.rolling(index_column="tile", period=f"{n - 1}i", offset=f"-{n}i", group_by="key").agg(
            pl.col("t_c").sum().alias(f"c_{w}"),
            pl.col("t_n").sum().alias(f"n_{w}"),
            pl.col("t_s").sum().alias(f"s_{w}"),
            pl.col("t_mn").min().alias(f"mn_{w}"),
            pl.col("t_mx").max().alias(f"mx_{w}"),
            pl.col("t_f").sum().alias(f"f_{w}"),
        )
        tiles = tiles.join(rolled, on=kt, how="left", maintain_order="left")
    result = prefix.join(tiles, on=kt, how="left", maintain_order="left")
    cols = []
    for w, seconds in WINDOWS:
        count = pl.col(f"n_{w}").fill_null(0) + pl.col("p_n")
        mn = pl.min_horizontal(pl.col(f"mn_{w}").fill_null(inf), "p_mn")
        mx = pl.max_horizontal(pl.col(f"mx_{w}").fill_null(-inf), "p_mx")
        total = pl.col(f"s_{w}").fill_null(0.0) + pl.col("p_s")
        cols += [
            (pl.col(f"c_{w}").fill_null(0) + pl.col("p_c")).alias(f"number_of_clicks_count_{w}"),
            pl.when(count > 0).then(total / count).alias(f"purchases_avg_{w}"),
            pl.when(count > 0).then(mn).alias(f"purchases_min_{w}"),
            pl.when(count > 0).then(mx).alias(f"purchases_max_{w}"),
        ]
        if (w, seconds) in FAIL_WINDOWS:
            cols.append((pl.col(f"f_{w}").fill_null(0) + pl.col("p_f")).alias(f"failed_activities_count_{w}"))
    result = result.with_columns(cols)
    return result.select("key", "time", *OUTPUT_FEATURES)


# --- pandas -------------------------------------------------------------------------------------------


def pandas_rolling(path: str | Path):
    """Per-event features with pandas ``groupby().rolling(W, on='time')``; a pandas DataFrame."""
    import pandas as pd

    if _format(path) == "parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, engine="pyarrow")
        df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    df["_fail"] = (df["activity_status"] == "fail").astype("int64")
    df = df.sort_values(["key", "time"], kind="stable").reset_index(drop=True)
    out = {"key": df["key"].to_numpy(), "time": df["time"].to_numpy()}
    grouped = df.groupby("key", sort=True)
    for w, seconds in WINDOWS:
        roll = grouped.rolling(w, on="time")
        out[f"number_of_clicks_count_{w}"] = roll["click"].count().to_numpy()
        amount = roll["purchase_amount"]
        out[f"purchases_avg_{w}"] = amount.mean().to_numpy()
        out[f"purchases_min_{w}"] = amount.min().to_numpy()
        out[f"purchases_max_{w}"] = amount.max().to_numpy()
        if (w, seconds) in FAIL_WINDOWS:
            out[f"failed_activities_count_{w}"] = roll["_fail"].sum().to_numpy()
    return pd.DataFrame(out)[["key", "time", *OUTPUT_FEATURES]]


# --- DuckDB -------------------------------------------------------------------------------------------


def duckdb_range(path: str | Path, *, threads: int | None = None):
    """Per-event features with DuckDB RANGE windows; a pyarrow Table."""
    import duckdb

    con = duckdb.connect()
    if threads is not None:
        con.execute(f"SET threads={int(threads)}")
    if _format(path) == "parquet":
        src = f"read_parquet('{path}')"
    else:
        src = f"read_csv('{path}', header=true, types={{'time': 'TIMESTAMPTZ'}})"
    selects, windows = [], []
    for w, seconds in WINDOWS:
        name = f"w{w}"
        windows.append(
            f"{name} AS (PARTITION BY key ORDER BY time "
            f"RANGE BETWEEN INTERVAL {seconds} SECONDS PRECEDING AND CURRENT ROW)"
        )
        selects += [
            f"count(click) OVER {name} AS number_of_clicks_count_{w}",
            f"avg(purchase_amount) OVER {name} AS purchases_avg_{w}",
            f"min(purchase_amount) OVER {name} AS purchases_min_{w}",
            f"max(purchase_amount) OVER {name} AS purchases_max_{w}",
        ]
        if (w, seconds) in FAIL_WINDOWS:
            selects.append(
                f"count(*) FILTER (WHERE activity_status = 'fail') OVER {name} AS failed_activities_count_{w}"
            )
    sql = f"SELECT key, time, {', '.join(selects)} FROM {src} WINDOW {', '.join(windows)}"
    table = con.sql(sql).to_arrow_table()
    con.close()
    return table.select(["key", "time", *OUTPUT_FEATURES])


PEERS: dict[str, Callable[..., Any]] = {
    "polars_rolling": polars_rolling,
    "polars_bucketed": polars_bucketed,
    "pandas_rolling": pandas_rolling,
    "duckdb_range": duckdb_range,
}
_IMPORTS = {
    "polars_rolling": ("polars",),
    "polars_bucketed": ("polars",),
    "pandas_rolling": ("pandas", "pyarrow"),
    "duckdb_range": ("duckdb", "pyarrow"),
}


# --- subprocess runner --------------------------------------------------------------------------------


def _peak_rss_kb() -> int:
    """Peak RSS of this process in KiB: ``VmHWM``, which (unlike ``ru_maxrss``) is not inherited from the
    parent across ``fork`` + ``exec``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(name: str, path: str, threads: int | None) -> dict[str, Any]:
    """Body of the measuring subprocess (environment already set by `run_peer`)."""
    t0 = time.perf_counter()
    import importlib

    for module in _IMPORTS[name]:
        importlib.import_module(module)
    import pyarrow as pa

    if threads is not None:
        pa.set_cpu_count(threads)
        pa.set_io_thread_count(threads)
    import_seconds = time.perf_counter() - t0
    rss_before = _peak_rss_kb()
    kwargs = {"threads": threads} if name == "duckdb_range" else {}
    t1 = time.perf_counter()
    result = PEERS[name](path, **kwargs)
    seconds = time.perf_counter() - t1
    rows = len(result)
    return {
        "peer": name,
        "format": _format(path),
        "threads": threads or "default",
        "rows": rows,
        "seconds": round(seconds, 4),
        "events_per_s": round(rows / seconds, 1),
        "peak_rss_mb": round(_peak_rss_kb() / 1024, 1),
        "rss_after_imports_mb": round(rss_before / 1024, 1),
        "import_seconds": round(import_seconds, 3),
    }


def _thread_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    if threads is not None:
        for var in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def run_peer(
    name: str, path: str | Path, *, threads: int | None = 1, timeout: float = 1800
) -> dict[str, Any]:
    """Run peer ``name`` on ``path`` in a fresh subprocess; return its measurement dict.

    Parameters
    ----------
    name
        A key of `PEERS`.
    path
        A workload ``.parquet`` or ``.csv`` file (``_data.events_path``).
    threads
        ``1`` for single-threaded settings, ``None`` for each library's default.
    """
    if name not in PEERS:
        msg = f"unknown peer {name!r}; expected one of {sorted(PEERS)}"
        raise ValueError(msg)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks._peers",
        "_child",
        name,
        str(Path(path).resolve()),
        str(threads or 0),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_DIR, env=_thread_env(threads), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        msg = f"peer {name} failed on {path}:\n{proc.stderr[-4000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_peers(
    paths: Iterable[str | Path],
    *,
    peers: Sequence[str] = tuple(PEERS),
    threads: Sequence[int | None] = (1, None),
) -> list[dict[str, Any]]:
    """`run_peer` for every (path, peer, thread setting); a list of measurement dicts."""
    return [run_peer(name, path, threads=t) for path in paths for t in threads for name in peers]


# --- cross-check --------------------------------------------------------------------------------------


def compare_peers(path: str | Path) -> dict[str, dict[str, float]]:
    """In-process cross-check on a small file: the fraction of (row, feature) cells where each peer differs
    from ``duckdb_range`` (rows matched on ``(key, time)``; NaN equals null; floats to 1e-9 relative).

    Differences are expected only from window edges: DuckDB's RANGE includes ``t − W``, polars/pandas
    exclude it; ``polars_bucketed`` uses tiles.
    """
    import numpy as np
    import pyarrow as pa

    def canon(t) -> pa.Table:
        if not isinstance(t, pa.Table):
            t = t.to_arrow() if hasattr(t, "to_arrow") else pa.Table.from_pandas(t, preserve_index=False)
        t = t.cast(
            pa.schema(
                [pa.field("key", pa.string()), pa.field("time", pa.timestamp("ns", "UTC"))]
                + [pa.field(f, pa.float64()) for f in OUTPUT_FEATURES]
            )
        )
        return t.sort_by([("key", "ascending"), ("time", "ascending")])

    ref = canon(duckdb_range(path))
    report = {}
    for name in ("polars_rolling", "polars_bucketed", "pandas_rolling"):
        other = canon(PEERS[name](path))
        per = {}
        for f in OUTPUT_FEATURES:
            a = ref.column(f).to_numpy(zero_copy_only=False)
            b = other.column(f).to_numpy(zero_copy_only=False)
            same = np.isclose(a, b, rtol=1e-9, atol=0.0) | (np.isnan(a) & np.isnan(b))
            per[f] = round(float(1.0 - same.mean()), 6)
        report[name] = per
    return report


def _print_table(rows: list[dict[str, Any]], *, header: bool = True) -> None:
    if header:
        cols = ("peer", "format", "threads", "rows", "seconds", "M ev/s", "peak MB")
        print("{:<16} {:<8} {:<8} {:>9} {:>8} {:>7} {:>8}".format(*cols))
    for r in rows:
        print(
            f"{r['peer']:<16} {r['format']:<8} {r['threads']!s:<8} {r['rows']:>9} {r['seconds']:>8.2f} "
            f"{r['events_per_s'] / 1e6:>7.2f} {r['peak_rss_mb']:>8.0f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_child":
        name, path, threads = argv[1], argv[2], int(argv[3]) or None
        print(json.dumps(_child(name, path, threads)))
        return
    from benchmarks._data import events_path

    parser = argparse.ArgumentParser(description="peer baselines for the README features")
    parser.add_argument("-n", type=int, default=1_000_000, help="events (10 k keys)")
    parser.add_argument("--peers", nargs="*", default=list(PEERS))
    parser.add_argument("--formats", nargs="*", default=["parquet", "csv"])
    parser.add_argument("--threads", nargs="*", default=["1", "default"])
    parser.add_argument("--check", action="store_true", help="cross-check the peers on 20 k events first")
    parser.add_argument("--json", help="also write the results to this file")
    ns = parser.parse_args(argv)
    if ns.check:
        import tempfile

        from benchmarks._data import write_events

        with tempfile.TemporaryDirectory() as tmp:
            # 20 k events over ~28 h, 500 keys: every window length matters.
            small = write_events(tmp, 20_000, n_keys=500, events_per_second=0.2)
            for fmt, path in small.items():
                print(fmt, json.dumps(compare_peers(path), indent=1))
    threads = [None if t == "default" else int(t) for t in ns.threads]
    paths = [events_path(ns.n, fmt) for fmt in ns.formats]
    rows: list[dict[str, Any]] = []
    _print_table([])
    for path in paths:
        for t in threads:
            for name in ns.peers:
                rows.append(run_peer(name, path, threads=t))
                _print_table(rows[-1:], header=False)
    if ns.json:
        Path(ns.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
