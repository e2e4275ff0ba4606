"""Shared test data for `storey.frames`: random event tables and aggregator sets (hypothesis strategies).

Event tables have the columns ``k`` (str key), ``k2`` (int, for tuple keys), ``t`` (epoch ms, int64),
``x`` (float64 with nulls, NaN, ±0.0 and ±inf), ``c`` (int64) and ``s`` (status str). Times mostly increase,
with late events (inside the windows), too-late events (older than every window) and repeated times.

Aggregator sets reuse a few compiled *shapes* (kernels, aggregations, number of windows, count cap kind):
window types, lengths, periods and caps vary freely at run time without recompiling.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from storey import FieldAggregator, FieldEquals, FixedWindows, SlidingWindows
from storey.aggregations.emit import (
    EmitAfterDelay,
    EmitAfterMaxEvent,
    EmitAfterPeriod,
    EmitAfterWindow,
    EmitEveryEvent,
)

MIN_MS = 60_000
BASE_MS = 1_700_000_000_000 - (1_700_000_000_000 % (24 * 3_600_000))  # a UTC midnight
ALL_TEN = ["count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev"]
X_VALUES = [0.0, -0.0, 1.0, -1.0, 2.5, 1e9, -1e-3, float("inf"), float("-inf"), 1e300, 5e-324]


@st.composite
def events(draw: Any, max_rows: int = 40, keys: int = 3) -> Any:
    """A random event table (pyarrow) in arrival order."""
    import pyarrow as pa

    n = draw(st.integers(1, max_rows))
    steps = draw(st.lists(st.integers(0, 25 * MIN_MS), min_size=n, max_size=n))
    kinds = draw(
        st.lists(st.sampled_from(["in", "in", "in", "late", "too_late", "same"]), min_size=n, max_size=n)
    )
    t = []
    clock = BASE_MS
    for step, kind in zip(steps, kinds, strict=True):
        clock += step
        if kind == "late":
            t.append(clock - draw(st.integers(1, 50 * MIN_MS)))
        elif kind == "too_late":
            t.append(clock - draw(st.integers(6 * 60 * MIN_MS, 30 * 60 * MIN_MS)))
        elif kind == "same" and t:
            t.append(t[-1])
        else:
            t.append(clock)
    x = draw(
        st.lists(
            st.one_of(st.none(), st.just(float("nan")), st.sampled_from(X_VALUES), st.floats(-1e3, 1e3)),
            min_size=n,
            max_size=n,
        )
    )
    return pa.table(
        {
            "k": pa.array(draw(st.lists(st.sampled_from("abcdefg"[:keys]), min_size=n, max_size=n))),
            "k2": pa.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), pa.int64()),
            "t": pa.array(t, pa.int64()),
            "x": pa.array(x, pa.float64()),
            "c": pa.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), pa.int64()),
            "s": pa.array(draw(st.lists(st.sampled_from(["ok", "fail"]), min_size=n, max_size=n))),
        }
    )


@st.composite
def windows(draw: Any) -> Any:
    """Two windows, sliding or fixed, with random lengths (in minutes) and period."""
    if draw(st.booleans()):
        period = draw(st.sampled_from([5, 10, 15]))
        a = period * draw(st.integers(1, 4))
        b = a + period * draw(st.integers(1, 12))
        return SlidingWindows([f"{a}m", f"{b}m"], f"{period}m")
    a = draw(st.sampled_from([10, 20, 30, 60]))
    return FixedWindows([f"{a}m", f"{a * draw(st.sampled_from([2, 3, 6]))}m"])


@st.composite
def aggregator_sets(draw: Any) -> list[FieldAggregator]:
    """Aggregators of the test shapes: all ten aggregations, a count (optionally capped by an int, filtered
    by `FieldEquals`), and capped selections (a float cap)."""
    out = [FieldAggregator("a", "x", ALL_TEN, draw(windows()))]
    cap = draw(st.sampled_from([None, 1, 2]))
    flt = FieldEquals("s", "fail") if draw(st.booleans()) else None
    out.append(
        FieldAggregator("n", draw(st.sampled_from(["x", "s", "c"])), ["count"], draw(windows()), flt, cap)
    )
    if draw(st.booleans()):
        capf = draw(st.sampled_from([0.0, 0.5, 2.0]))
        aggs = ["count", "sum", "sqr", "min", "max", "first", "last"]
        out.append(FieldAggregator("m", "x", aggs, draw(windows()), max_value=capf))
    return out


def policies() -> Any:
    """Every emit policy, with small random parameters (seconds)."""
    return st.one_of(
        st.just(EmitEveryEvent()),
        st.builds(EmitAfterMaxEvent, st.integers(1, 3)),
        st.builds(EmitAfterMaxEvent, st.integers(2, 4), st.sampled_from([60, 600, 3600])),
        st.builds(EmitAfterDelay, st.sampled_from([0, 60, 900])),
        st.builds(EmitAfterPeriod, st.sampled_from([0, 120])),
        st.builds(EmitAfterWindow, st.sampled_from([0, 600])),
    )


def same(a: Any, b: Any) -> bool:
    """The parity predicate for one value: equal, or both NaN (and equal types for ints)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return type(a) is type(b) and a == b


def assert_tables_equal(a: Any, b: Any) -> None:
    """Same column names, types and values (floats: equal or both NaN; nulls equal)."""
    assert a.schema.names == b.schema.names
    assert a.num_rows == b.num_rows
    for name in a.schema.names:
        ca, cb = a.column(name), b.column(name)
        assert ca.type == cb.type, name
        la, lb = ca.to_pylist(), cb.to_pylist()
        bad = [i for i, (u, v) in enumerate(zip(la, lb, strict=True)) if not (u is v is None or same(u, v))]
        assert not bad, f"{name}: row {bad[0]}: {la[bad[0]]!r} != {lb[bad[0]]!r}"


def fold_bits(values: list[float]) -> np.ndarray:
    """The raw bits of float64 values (to compare signed zeros and NaN payloads exactly)."""
    return np.asarray(values, dtype=np.float64).view(np.uint64)
