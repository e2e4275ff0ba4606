"""Generate ``tests/golden/upstream_*.json``: AggregateByKey outputs of the upstream ``storey`` package.

Run explicitly (it is not a test)::

    .venv/bin/python tests/golden/make_upstream_golden.py            # writes the golden files
    .venv/bin/python tests/golden/make_upstream_golden.py --explore  # also reports excluded configurations

Upstream storey (PyPI, ``benchmarks/_upstream.py::REQUIREMENTS``) runs in its own virtualenv under
``benchmarks/.upstream-venv/`` because it has the same import name; ``upstream_golden_runner.py`` is the part
that runs there. ``test_upstream_golden.py`` replays the same events through this project's AggregateByKey.

What the streams are
--------------------
Seeded, random, **in order** (every key's times strictly increase; the merged stream is sorted by time), a
few keys with a few hundred events each, times in whole seconds, values ints or multiples of 1/8 in
[-500, 500). Gaps are mostly ~6 min, with some of 2.5-5 h and of 25-30 h so that windows empty and
upstream's bucket arrays are reset. No ``None`` values, no ``aggr_filter``.

Why the grids coincide
----------------------
AGGREGATIONS.md §10 says upstream anchors its sliding grid at each key's first event. Reading upstream
1.14.1 (``storey/table.py::AggregationBuckets``, ``storey/dtypes.py``): the bucket *array* starts at the
key's first event, but that start is ``int(t / period) * period``
(``SlidingWindows.get_window_start_time_by_time``), and it advances by whole periods, so sliding bucket
boundaries are multiples of the period since the epoch: the same tiles as ours for any first-event time
(the first events here are deliberately not on a tile boundary, and the oracle check below confirms it).

Fixed windows start at ``int(t / lcm(windows)) * lcm`` and hold exactly one lcm block (advancing drops
the whole array). They are evaluated two ways: pre-aggregates give epoch-aligned calendar windows;
recalculation (after a min/max eviction or a reset) gives ``[ceil_unit(t) − W, ceil_unit(t))`` with the
smallest window's unit, cut to the current lcm block. Both agree with our epoch-aligned calendar windows
when the largest window is the lcm of the windows (``['1h']``, ``['1d']``, ``['1h', '2h']``,
``['1h', '1d']``); with ``['2h', '3h']`` (lcm 6h) the recalculated 3h window reaches into the previous 3h
block, so such configurations are excluded. Times are whole seconds so that upstream's float-millisecond
arithmetic is exact.

Before writing, every upstream value is checked against a brute-force oracle of *our* spec (tiles of
AGGREGATIONS.md §2.3/§2.4, exact sums, ``math.fsum`` means, ``Fraction`` variances); the script fails if
they disagree, so a golden file only holds behaviour both implementations share.

What deliberately differs (AGGREGATIONS.md §10) and is therefore kept out of the golden data
-------------------------------------------------------------------------------------------------
- ``first``: upstream's recalculation keeps the newest bucket's first value (unsupported/crashing in §10).
- late events (upstream's recomputation undercounts), too-late events, ``None`` values and ``aggr_filter``:
  upstream does not advance the bucket array for a skipped value, so later features can be stale; and empty
  windows give 0/NaN/±inf in upstream where we give 0 / 0.0 / NaN.
- ``avg``/``stdvar``/``stddev``: upstream computes ``sum / count`` and the naive
  ``(n·Σx² − (Σx)²) / (n(n−1))``; we use Welford/Chan. With these values upstream's sums are exact, so the
  results agree to ~1e-15; the golden files say to compare them with a relative tolerance of 1e-9.
- ``sum``/``sqr`` use subtract-on-evict upstream; exact here only because every partial sum of these values
  is exactly representable.
- FixedWindows whose largest window is not the lcm of the windows (``['2h', '3h']``, ``['40m', '1h']``), and
  ``LastClosedWindow``; ``--explore`` reports how often upstream differs from the spec there.
- ``last`` ties (equal times within a key): upstream keeps the first arrival, we keep the latest; the
  streams have no ties within a key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._upstream import REQUIREMENTS, run_upstream  # noqa: E402

START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
S = 1_000_000_000
UNITS = {"s": S, "m": 60 * S, "h": 3600 * S, "d": 86400 * S}
ALL = ["count", "sum", "sqr", "min", "max", "last", "avg", "stdvar", "stddev"]
EXACT = ["count", "sum", "sqr", "min", "max", "last"]
REL_TOL = {"avg": 1e-9, "stdvar": 1e-9, "stddev": 1e-9}


def sliding(windows: list[str], period: str) -> dict[str, Any]:
    return {"type": "sliding", "windows": windows, "period": period}


def fixed(windows: list[str]) -> dict[str, Any]:
    return {"type": "fixed", "windows": windows}


def agg(name: str, field: str, aggr: list[str], windows: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "field": field, "aggr": aggr, "windows": windows}


# (name, seed, keys, events per key, {field: 'int' | 'eighths'}, aggregators)
CASES = [
    ("sliding_1h_2h_ints", 1, 3, 120, {"v": "int"}, [agg("a", "v", ALL, sliding(["1h", "2h"], "10m"))]),
    (
        "sliding_1h_2h_eighths",
        2,
        4,
        100,
        {"v": "eighths"},
        [agg("a", "v", ALL, sliding(["1h", "2h"], "10m"))],
    ),
    (
        "sliding_10m_1h_24h_eighths",
        3,
        3,
        150,
        {"v": "eighths"},
        [agg("a", "v", ALL, sliding(["10m", "1h", "24h"], "10m"))],
    ),
    ("sliding_30m_2h_5m_ints", 4, 3, 120, {"v": "int"}, [agg("a", "v", ALL, sliding(["30m", "2h"], "5m"))]),
    ("fixed_1h_ints", 5, 3, 120, {"v": "int"}, [agg("a", "v", ALL, fixed(["1h"]))]),
    ("fixed_1d_eighths", 6, 3, 150, {"v": "eighths"}, [agg("a", "v", ALL, fixed(["1d"]))]),
    ("fixed_1h_2h_ints", 8, 3, 120, {"v": "int"}, [agg("a", "v", ALL, fixed(["1h", "2h"]))]),
    ("fixed_1h_1d_eighths", 9, 3, 150, {"v": "eighths"}, [agg("a", "v", ALL, fixed(["1h", "1d"]))]),
    (
        "two_aggregators",
        7,
        4,
        100,
        {"v": "int", "w": "eighths"},
        [
            agg("clicks", "v", ["count", "sum", "max"], sliding(["1h", "2h", "24h"], "10m")),
            agg("amount", "w", ["min", "last", "avg"], fixed(["1h"])),
        ],
    ),
]
# Configurations where upstream's semantics differ from the spec (reported by --explore, never written).
EXPLORE = [
    (
        "x_fixed_2h_3h",
        11,
        3,
        300,
        {"v": "int"},
        [agg("a", "v", ["count", "sum", "min", "max"], fixed(["2h", "3h"]))],
    ),
    (
        "x_fixed_40m_1h",
        12,
        3,
        300,
        {"v": "int"},
        [agg("a", "v", ["count", "sum", "min", "max"], fixed(["40m", "1h"]))],
    ),
    ("x_first", 14, 3, 120, {"v": "int"}, [agg("a", "v", ["first"], sliding(["1h", "2h"], "10m"))]),
]


def duration_ns(s: str) -> int:
    return int(s[:-1]) * UNITS[s[-1]]


def feature_names(aggregators: list[dict[str, Any]]) -> list[str]:
    """Features in spec order (AGGREGATIONS.md §3.3): aggregator, aggregation, window by duration."""
    names = []
    for a in aggregators:
        windows = sorted(a["windows"]["windows"], key=duration_ns)
        names += [f"{a['name']}_{op}_{w}" for op in a["aggr"] for w in windows]
    return names


def make_events(seed: int, n_keys: int, per_key: int, fields: dict[str, str]) -> list[dict[str, Any]]:
    """An in-order stream: per key strictly increasing whole-second times, merged by time."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(n_keys):
        gaps = np.maximum(1, np.round(rng.exponential(360.0, per_key))).astype(np.int64)
        u = rng.random(per_key)
        gaps[u < 0.03] = rng.integers(9_000, 18_000, int((u < 0.03).sum()))
        gaps[u > 0.99] = rng.integers(90_000, 108_000, int((u > 0.99).sum()))
        gaps[0] = rng.integers(0, 3_600)
        times = START_NS + np.cumsum(gaps) * S
        values = {}
        for name, kind in fields.items():
            ints = rng.integers(-500, 500, per_key) if kind == "int" else rng.integers(-4000, 4000, per_key)
            values[name] = [int(x) for x in ints] if kind == "int" else [float(x) / 8 for x in ints]
        for i, t in enumerate(times):
            events.append({"key": f"k{k}", "time_ns": int(t), **{f: values[f][i] for f in fields}})
    events.sort(key=lambda e: (e["time_ns"], e["key"]))
    return events


def window_tiles(wspec: dict[str, Any], window: str, tau: int) -> tuple[int, int, int]:
    """(P, first tile, last tile) of ``window`` as of ``tau`` per AGGREGATIONS.md §2.3/§2.4."""
    w = duration_ns(window)
    if wspec["type"] == "sliding":
        p = duration_ns(wspec["period"])
        n = w // p
        return p, tau // p - n + 1, tau // p
    p = math.gcd(*[duration_ns(x) for x in wspec["windows"]])
    n = w // p
    return p, (tau // p // n) * n, tau // p


def oracle_value(op: str, hist: list[tuple[int, float]]) -> float:
    vals = [v for _, v in hist]
    n = len(vals)
    if op == "count":
        return n
    if op == "sum":
        return math.fsum(vals)
    if op == "sqr":
        return math.fsum(v * v for v in vals)
    if n == 0:
        return math.nan
    if op == "min":
        return min(vals)
    if op == "max":
        return max(vals)
    if op == "first":
        return min(hist, key=lambda tv: tv[0])[1]
    if op == "last":
        return max(hist, key=lambda tv: tv[0])[1]
    if op == "avg":
        return math.fsum(vals) / n
    if n < 2:
        return math.nan
    fr = [Fraction(v) for v in vals]
    mean = sum(fr) / n
    var = sum((x - mean) ** 2 for x in fr) / (n - 1)
    return float(var) if op == "stdvar" else math.sqrt(float(var))


def oracle(case: dict[str, Any]) -> list[dict[str, float]]:
    """Our spec's features for every event of an in-order stream, by brute force."""
    history: dict[str, list[dict[str, Any]]] = {}
    out = []
    for event in case["events"]:
        hist = history.setdefault(event["key"], [])
        hist.append(event)
        tau = event["time_ns"]
        features = {}
        for a in case["aggregators"]:
            for w in a["windows"]["windows"]:
                p, lo, hi = window_tiles(a["windows"], w, tau)
                inside = [(e["time_ns"], e[a["field"]]) for e in hist if lo <= e["time_ns"] // p <= hi]
                for op in a["aggr"]:
                    features[f"{a['name']}_{op}_{w}"] = oracle_value(op, inside)
        out.append(features)
    return out


def agrees(op: str, ours: float, theirs: float | None) -> bool:
    if theirs is None:
        return False
    if isinstance(ours, float) and math.isnan(ours):
        return isinstance(theirs, float) and math.isnan(theirs)
    if op in REL_TOL:
        return math.isclose(ours, theirs, rel_tol=REL_TOL[op], abs_tol=0.0)
    return ours == theirs


def build_cases(specs: list[tuple]) -> list[dict[str, Any]]:
    cases = []
    for name, seed, n_keys, per_key, fields, aggregators in specs:
        cases.append(
            {
                "name": name,
                "seed": seed,
                "aggregators": aggregators,
                "features": feature_names(aggregators),
                "events": make_events(seed, n_keys, per_key, fields),
            }
        )
    return cases


def run_cases(cases: list[dict[str, Any]]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    with tempfile.TemporaryDirectory(prefix="storey-golden-") as tmp:
        cases_path, out_path = Path(tmp) / "cases.json", Path(tmp) / "out.json"
        cases_path.write_text(json.dumps(cases))
        run_upstream(HERE / "upstream_golden_runner.py", [str(cases_path), str(out_path)])
        result = json.loads(out_path.read_text())
    return result["storey_version"], result["outputs"]


def mismatches(case: dict[str, Any], upstream: list[dict[str, Any]]) -> dict[str, int]:
    expected = oracle(case)
    bad: dict[str, int] = {}
    for ours, theirs in zip(expected, upstream, strict=True):
        for name, value in ours.items():
            op = name.split("_")[-2]
            if not agrees(op, value, theirs.get(name)):
                bad[name] = bad.get(name, 0) + 1
    return bad


def golden_document(case: dict[str, Any], version: str, upstream: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "about": (
            "AggregateByKey outputs (EmitEveryEvent) of the upstream storey package on an in-order stream;"
            " generated by tests/golden/make_upstream_golden.py,"
            " compared by tests/golden/test_upstream_golden.py"
        ),
        "upstream_storey": version,
        "upstream_requirements": list(REQUIREMENTS),
        "name": case["name"],
        "seed": case["seed"],
        "step": {"key_field": "key", "time_field": "time", "emit_policy": "EmitEveryEvent"},
        "aggregators": case["aggregators"],
        "features": case["features"],
        "compare": {"exact": EXACT, "rel_tol": REL_TOL},
        "events": case["events"],
        # One row per input event, values in `features` order; null = feature absent from the output.
        "expected": [[row.get(name) for name in case["features"]] for row in upstream],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explore", action="store_true", help="report the excluded configurations too")
    parser.add_argument("--out", default=str(HERE), help="directory for upstream_*.json")
    ns = parser.parse_args()
    cases = build_cases(CASES)
    version, outputs = run_cases(cases)
    failed = False
    for case in cases:
        bad = mismatches(case, outputs[case["name"]])
        print(f"{case['name']}: {len(case['events'])} events, mismatches vs spec oracle: {bad or 'none'}")
        failed |= bool(bad)
    if ns.explore:
        explore = build_cases(EXPLORE)
        _, explored = run_cases(explore)
        for case in explore:
            bad = mismatches(case, explored[case["name"]])
            print(f"[excluded] {case['name']}: {len(case['events'])} events, mismatches: {bad or 'none'}")
    if failed:
        raise SystemExit("upstream disagrees with the spec oracle on a golden case; nothing written")
    for case in cases:
        path = Path(ns.out) / f"upstream_{case['name']}.json"
        path.write_text(
            json.dumps(golden_document(case, version, outputs[case["name"]]), separators=(",", ":"))
        )
        print(
            f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({path.stat().st_size} B)"
        )


if __name__ == "__main__":
    main()
