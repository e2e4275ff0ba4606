"""Floors: how fast the speed targets of the issues could be met at best, measured on this machine.

Usage::

    .venv/bin/python -m benchmarks.bench_floors [--rows 1000000] [--no-upstream] [--no-peers]

Each section times only the work a target cannot avoid, each part alone and best of 3 (so the sum is an
optimistic bound: no runtime, no error handling, no metrics), and prints the resulting ceiling next to
storey's measured rate and the target.

- ``bodies`` (issue #2, ``ReadParquet``/``ReadCSV → Reduce`` at 20x upstream): a reader source must hand
  every row to the next step as a body of Python values (STEPS.md: a dict, or a list for ``ReadCSV``'s
  default) with aware UTC datetimes for timestamps. Floor = decoding the file + the cheapest conversion of
  each column to Python objects we know (dictionary-decoded strings, storey's aware-datetime builder,
  ``tolist`` for numbers) + one body per row + one Python call per row (the ``Reduce`` function).
- ``fold`` (issue #4, ``storey.frames`` at 10x the fastest peer on one core and 20 M ev/s end to end):
  AGGREGATIONS.md §5.3 fixes the fold of every window: oldest tile to newest with the Welford/Chan merge
  (``avg`` is the Chan mean, not ``sum / count``), each window from its own oldest tile; a cached fold of
  the closed tiles may be extended only while its oldest tile is unchanged. Floor = that fold for the
  README's ``purchases`` avg/min/max over 1h/2h/24h (period 10m) with the cache, over per-(key, tile)
  summaries precomputed outside the clock, events sorted by key, plus decoding the 5 README columns from
  Parquet. The other README features (counts) are left out, which only lowers the floor.
- ``event`` (issue #3, the README ``AggregateByKey`` flow through ``emit`` at 100x upstream): the runtime
  alone (``emit → Reduce``), reading key, time and the three fields column-wise per chunk of 1024 (as the
  batch lane does), one output dict per event (13 features merged with the body; the lane needs no `Event`
  per output), and the fold above in arrival order (the stream meets keys in time order, not grouped).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._data import events_path, streaming_events
from benchmarks._repeat import shortest

PERIOD_NS = 600 * 10**9
SPANS = (5, 11, 143)
"""Closed tiles before the current one in the 1h, 2h and 24h windows of period 10m."""
STRING_COLUMNS = ["key", "activity_status"]


# -- bodies (#2) -------------------------------------------------------------------------------------


def _strings(col: Any) -> list[Any]:
    """Python strings of a dictionary-decoded Arrow column: the dictionary once, then a gather."""
    words = col.dictionary.to_pylist()
    idx = col.indices
    if idx.null_count:
        return [None if i is None else words[i] for i in idx.to_pylist()]
    values = np.frombuffer(idx.buffers()[1], dtype=np.int32, count=len(idx), offset=4 * idx.offset)
    return [words[i] for i in values.tolist()]


def _python_columns(rb: Any) -> list[list[Any]]:
    import pyarrow as pa

    from storey.sources._arrow import column_to_pylist

    cols = []
    for col in rb.columns:
        if pa.types.is_dictionary(col.type):
            cols.append(_strings(col))
        elif pa.types.is_timestamp(col.type):
            cols.append(column_to_pylist(col))
        else:
            cols.append(col.to_pylist())
    return cols


def _pipeline(batches: Callable[[], Any], build: Callable[[list[Any]], list[Any]], stage: int) -> int:
    """A minimal reader → Reduce pipeline up to `stage` (0 decode, 1 + Python columns, 2 + bodies in
    256-row chunks as storey's batch lane, 3 + one call per row); nothing is kept (as in a flow)."""
    fn = lambda acc, _: acc + 1  # noqa: E731 - the benchmark's Reduce function
    acc = 0
    for rb in batches():
        if stage < 1:
            continue
        cols = _python_columns(rb)
        if stage < 2:
            continue
        for a in range(0, rb.num_rows, 256):
            bodies = build([c[a : a + 256] for c in cols])
            if stage < 3:
                continue
            for body in bodies:
                acc = fn(acc, body)
    return acc


def _stages(batches: Callable[[], Any], build: Callable[[list[Any]], list[Any]]) -> dict[str, float]:
    """Seconds of each stage of `_pipeline`: the difference between running up to it and up to the one
    before (best of 3 each)."""
    total = [shortest(lambda s=s: _pipeline(batches, build, s))[0] for s in range(4)]
    parts = [total[0], *(b - a for a, b in itertools.pairwise(total))]
    return dict(zip(("decode", "to_python", "bodies", "call"), parts, strict=True))


def bodies_floor(parquet: str, csv: str) -> dict[str, dict[str, float]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from storey.sources._reading import dict_rows

    pf = pq.ParquetFile(parquet, read_dictionary=STRING_COLUMNS)
    names = pf.schema_arrow.names
    opts = pcsv.ConvertOptions(
        column_types={"time": pa.timestamp("ns", tz="UTC")},
        auto_dict_encode=True,
        auto_dict_max_cardinality=1 << 30,
    )
    return {
        "parquet": _stages(lambda: pf.iter_batches(batch_size=65_536, use_threads=False), dict_rows(names)),
        "csv": _stages(
            lambda: pcsv.open_csv(csv, convert_options=opts),
            lambda cols: list(map(list, zip(*cols, strict=True))),
        ),
    }


# -- fold (#4, #3) -----------------------------------------------------------------------------------


def _fold_kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    import numba

    njit = numba.njit(fastmath=False, parallel=False)

    @njit
    def summaries(starts: Any, values: Any) -> tuple[Any, Any, Any, Any]:
        """Welford mean, count, min and max of each (key, tile) segment, in row order."""
        m = len(starts)
        n = len(values)
        mean = np.zeros(m)
        cnt = np.zeros(m, np.int64)
        lo = np.full(m, np.inf)
        hi = np.full(m, -np.inf)
        for j in range(m):
            end = starts[j + 1] if j + 1 < m else n
            for i in range(starts[j], end):
                x = values[i]
                if x == x:
                    cnt[j] += 1
                    mean[j] += (x - mean[j]) / cnt[j]
                    lo[j] = min(lo[j], x)
                    hi[j] = max(hi[j], x)
        return mean, cnt, lo, hi

    @njit
    def fold(
        seg_of_event: Any, seg_key: Any, seg_tile: Any, mean: Any, cnt: Any, lo: Any, hi: Any, out: Any
    ) -> int:
        """§5.3 for avg/min/max over the windows of `SPANS`, per event, with the per-window cache of the
        closed tiles' fold (one cache per window, kept while the window's oldest tile is unchanged)."""
        spans = (5, 11, 143)
        c_start = np.full(3, -1, np.int64)
        c_end = np.full(3, -1, np.int64)
        c_mean = np.zeros(3)
        c_n = np.zeros(3, np.int64)
        c_lo = np.zeros(3)
        c_hi = np.zeros(3)
        merges = 0
        for i in range(len(seg_of_event)):
            j = seg_of_event[i]
            key = seg_key[j]
            for w in range(3):
                first = seg_tile[j] - spans[w]
                a = j
                while a > 0 and seg_key[a - 1] == key and seg_tile[a - 1] >= first:
                    a -= 1
                if c_start[w] == a and c_end[w] <= j:
                    m, n, vlo, vhi, b0 = c_mean[w], c_n[w], c_lo[w], c_hi[w], c_end[w]
                else:
                    m, n, vlo, vhi, b0 = 0.0, 0, np.inf, -np.inf, a
                for b in range(b0, j + 1):
                    if b == j:  # the current tile goes last and is not cached
                        c_start[w], c_end[w], c_mean[w], c_n[w], c_lo[w], c_hi[w] = a, j, m, n, vlo, vhi
                    nb = cnt[b]
                    if nb:
                        nt = n + nb
                        m = m + (mean[b] - m) * (nb / nt) if n else mean[b]
                        n = nt
                        vlo = min(vlo, lo[b])
                        vhi = max(vhi, hi[b])
                    merges += 1
                out[i, 3 * w] = m if n else np.nan
                out[i, 3 * w + 1] = vlo
                out[i, 3 * w + 2] = vhi
        return merges

    return summaries, fold


def fold_floor(parquet: str) -> dict[str, float]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=["key", "time", "purchase_amount"])
    keys = pc.dictionary_encode(table.column("key")).combine_chunks().indices.to_numpy().astype(np.int64)
    ts = table.column("time").cast("int64").to_numpy()
    values = table.column("purchase_amount").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((ts, keys))
    keys, ts, values = keys[order], ts[order], values[order]
    tiles = ts // PERIOD_NS
    starts = np.r_[0, np.flatnonzero((np.diff(keys) != 0) | (np.diff(tiles) != 0)) + 1]
    summaries, fold = _fold_kernels()
    mean, cnt, lo, hi = summaries(starts, values)
    seg_of_event = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    arrival = seg_of_event[np.argsort(order, kind="stable")]
    n = len(values)
    out = np.zeros((n, 9))
    seg_key, seg_tile = keys[starts], tiles[starts]
    fold(seg_of_event, seg_key, seg_tile, mean, cnt, lo, hi, out)  # compile, touch `out`
    t_sorted, merges = shortest(lambda: fold(seg_of_event, seg_key, seg_tile, mean, cnt, lo, hi, out))
    t_arrival, _ = shortest(lambda: fold(arrival, seg_key, seg_tile, mean, cnt, lo, hi, out))
    pf = pq.ParquetFile(parquet, read_dictionary=STRING_COLUMNS)
    cols = ["key", "time", "click", "purchase_amount", "activity_status"]
    t_dec1, _ = shortest(lambda: list(pf.iter_batches(batch_size=65_536, columns=cols, use_threads=False)))
    t_dec2, _ = shortest(lambda: pq.read_table(parquet, columns=cols, read_dictionary=STRING_COLUMNS))
    return {
        "events": n,
        "merges_per_event": merges / n,
        "fold_sorted": t_sorted,
        "fold_arrival": t_arrival,
        "decode_1_thread": t_dec1,
        "decode_threads": t_dec2,
    }


# -- event (#3) --------------------------------------------------------------------------------------


def event_floor(n: int) -> dict[str, float]:
    """Per streamed event: storey's own ``emit → Reduce`` runtime, reading key, time and the three fields
    column-wise per chunk (as the batch lane does), and one output body per event (13 features merged with
    the body; no `Event` is needed on the batch lane)."""
    from itertools import repeat
    from operator import itemgetter, sub

    import numpy as np

    from storey import Reduce, Source, build_flow

    rows = streaming_events(n, source_rows=max(n, 1_000_000))

    def runtime() -> int:
        controller = build_flow([Source(), Reduce(0, lambda acc, _: acc + 1)]).run()
        for body in rows:
            controller.emit(body)
        return controller.terminate(wait=True)

    t_runtime, _ = shortest(runtime)
    chunks = [rows[i : i + 1024] for i in range(0, n, 1024)]
    epoch = rows[0]["time"].replace(year=1970, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    key, time, click, amount, status = (
        itemgetter(f) for f in ("key", "time", "click", "purchase_amount", "activity_status")
    )

    def reads() -> float:
        """What the step must read per event: key, time as int ns, the three aggregated fields."""
        total = 0.0
        for part in chunks:
            m = len(part)
            keys = list(map(key, part))
            ts = [
                ((d.days * 86400 + d.seconds) * 1000000 + d.microseconds) * 1000
                for d in map(sub, map(time, part), repeat(epoch, m))
            ]
            clicks = np.array(list(map(click, part)), np.float64)
            amounts = np.array(list(map(amount, part)), np.float64)
            fails = np.array([s == "fail" for s in map(status, part)], bool)
            total += len(keys) + ts[-1] + clicks.sum() + np.nansum(amounts) + fails.sum()
        return total

    t_reads, _ = shortest(reads)
    names = [f"f{i}" for i in range(13)]
    columns = [[float(i)] * 1024 for i in range(13)]
    display = "{" + ", ".join(f"{name!r}: c{i}[r]" for i, name in enumerate(names)) + "}"
    code = compile(
        f"def outputs(chunks):\n    count = 0\n    for part in chunks:\n        for r in range(len(part)):\n"
        f"            features = {display}\n            features.update(part[r])\n            count += 1\n"
        "    return count\n",
        "<outputs>",
        "exec",
    )
    namespace = {f"c{i}": column for i, column in enumerate(columns)}
    exec(code, namespace)
    t_out, _ = shortest(lambda: namespace["outputs"](chunks))
    return {"events": n, "runtime": t_runtime, "reads": t_reads, "outputs": t_out}


# -- report --------------------------------------------------------------------------------------------


def _line(what: str, rate: float, note: str = "") -> None:
    print(f"  {what:58s} {rate / 1e6:9.2f} M ev/s  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--event-rows", type=int, default=200_000, help="events of the emit section")
    parser.add_argument("--upstream-agg-events", type=int, default=50_000)
    parser.add_argument("--no-upstream", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    parquet = str(events_path(args.rows, "parquet"))
    csv = str(events_path(args.rows, "csv"))
    results: dict[str, Any] = {}

    from benchmarks.bench_flow import storey_read

    bodies = bodies_floor(parquet, csv)
    results["bodies"] = bodies
    measured = {kind: storey_read(kind, path) for kind, path in (("parquet", parquet), ("csv", csv))}
    upstream: dict[str, Any] = {}
    if not args.no_upstream:
        from benchmarks._upstream import upstream_aggregate, upstream_read_csv, upstream_read_parquet

        upstream["parquet"] = upstream_read_parquet(parquet)["events_per_s"]
        upstream["csv"] = upstream_read_csv(csv)["events_per_s"]
        upstream["aggregate"] = upstream_aggregate(parquet, args.upstream_agg_events)["events_per_s"]
    results["upstream"] = upstream
    print(f"bodies (#2: ReadParquet/ReadCSV -> Reduce, target 20x upstream), {args.rows:,} rows, seconds:")
    for kind, parts in bodies.items():
        floor = sum(parts.values())
        detail = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
        print(f" {kind}: {detail}")
        _line("ceiling (sum of the parts)", args.rows / floor)
        _line("storey ReadParquet/ReadCSV -> Reduce (measured)", measured[kind]["events_per_s"])
        if kind in upstream:
            _line("target: 20x upstream", 20 * upstream[kind], f"(upstream {upstream[kind]:,.0f} ev/s)")

    fold = fold_floor(parquet)
    results["fold"] = fold
    n = fold["events"]
    one_core = n / (fold["fold_sorted"] + fold["decode_1_thread"])
    two_cores = n / (fold["fold_sorted"] / 2 + fold["decode_threads"])
    print(f"fold (#4: storey.frames, README purchases avg/min/max 1h/2h/24h only), {n:,} events:")
    print(
        f"  {fold['merges_per_event']:.1f} tile merges/event; fold {fold['fold_sorted']:.3f} s sorted, "
        f"{fold['fold_arrival']:.3f} s arrival order; Parquet decode {fold['decode_1_thread']:.3f} s "
        f"(1 thread), {fold['decode_threads']:.3f} s (threads)"
    )
    _line("fold alone, one core", n / fold["fold_sorted"])
    _line("ceiling one core (fold + decode)", one_core)
    _line("ceiling two cores (fold split perfectly + threaded decode)", two_cores)
    _line("target: 20 M ev/s end to end", 20e6)
    if not args.no_peers:
        from benchmarks._peers import run_peer

        polars = run_peer("polars_rolling", parquet, threads=1)["events_per_s"]
        results["polars_rolling_1_thread"] = polars
        _line("target: 10x polars rolling, one core", 10 * polars, f"(polars {polars:,.0f} ev/s)")

    event = event_floor(args.event_rows)
    results["event"] = event
    m = event["events"]
    us = {
        "runtime": event["runtime"] / m * 1e6,
        "reads": event["reads"] / m * 1e6,
        "outputs": event["outputs"] / m * 1e6,
        "fold (arrival order)": fold["fold_arrival"] / n * 1e6,
    }
    print(f"event (#3: README AggregateByKey via emit, target 100x upstream), {m:,} events, us/event:")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in us.items()))
    _line("ceiling (sum of the parts)", 1e6 / sum(us.values()))
    if "aggregate" in upstream:
        _line(
            "target: 100x upstream",
            100 * upstream["aggregate"],
            f"(upstream {upstream['aggregate']:,.0f} ev/s)",
        )
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
