"""`as_of`: point-in-time features at label times (spec AGGREGATIONS.md §8.5).

Checked against a brute-force oracle built directly from the kernels (per label: the key's events up to the
label time, grouped by tile, folded in input order, tiles merged oldest → newest), for leakage (events after
the label never matter), and against the streaming features at the events' own times for in-order keys.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import (
    AggregateByKey,
    FieldAggregator,
    FieldEquals,
    FixedWindows,
    FixedWindowType,
    NoopDriver,
    SlidingWindows,
    Table,
)
from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.aggregations.windows import window_range
from storey.frames import as_of
from storey.frames.parity import stream_events
from tests.unit.frames._streams import ALL_TEN, MIN_MS, aggregator_sets, events, same

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MS = 1_000_000


def _oracle(agg, rows, key, q, inclusive, fwt):
    """Features of `agg` for label (key, q): a direct evaluation of §8.5 with the kernels."""
    P = agg.windows.period_ns
    kernels = [get_kernel(k) for k in agg.kernels]
    cap = None if agg.max_value is None else float(agg.max_value)
    tiles: dict[int, list] = {}
    for k, t, row in rows:
        if k != key or not (t <= q if inclusive else t < q):
            continue
        if agg.aggr_filter is not None and not agg.aggr_filter(row):
            continue
        v = row[agg.field]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        v = float(v)
        tile = tiles.setdefault(t // P, [0, [kernel.init() for kernel in kernels]])
        n = tile[0]
        tile[1] = [kernel.update(st, n, v, t, cap) for kernel, st in zip(kernels, tile[1], strict=True)]
        tile[0] = n + 1
    kq = q // P
    out = []
    kind = agg.windows.window_type
    for aggr in agg.aggregations:
        for nw in agg.windows.tiles_per_window:
            lo, hi = window_range(kind, kq, nw, fwt if kind == "fixed" else None)
            n, acc, capped = (
                0,
                [kernel.init() for kernel in kernels],
                0.0 if isinstance(agg.max_value, float) else 0,
            )
            for tile_index in sorted(i for i in tiles if lo <= i <= hi):
                tn, tst = tiles[tile_index]
                acc = [kernel.merge(a, n, b, tn) for kernel, a, b in zip(kernels, acc, tst, strict=True)]
                n += tn
                if agg.max_value is not None:
                    capped = capped + (agg.max_value if tn > agg.max_value else tn)
            summary = {"n": n}
            for kernel, stv in zip(kernels, acc, strict=True):
                summary.update(zip(kernel.field_names, stv, strict=True))
            if aggr == "count" and agg.max_value is not None:
                out.append(capped)
            else:
                out.append(get_aggregation(aggr).finalize(summary))
    return out


def _rows(table):
    ts = table.column("t").to_pylist()
    bodies = table.to_pylist()
    return [(b["k"], t * MS, b) for t, b in zip(ts, bodies, strict=True)]


@st.composite
def label_tables(draw, table):
    ts = table.column("t").to_pylist()
    n = draw(st.integers(1, 25))
    choices = st.one_of(st.sampled_from(ts), st.integers(min(ts) - 120 * MIN_MS, max(ts) + 120 * MIN_MS))
    return pa.table(
        {
            "k": draw(st.lists(st.sampled_from(["a", "b", "c", "z"]), min_size=n, max_size=n)),
            "t": pa.array(draw(st.lists(choices, min_size=n, max_size=n)), pa.int64()),
        }
    )


@SETTINGS
@given(
    st.data(),
    events(max_rows=50, keys=3),
    aggregator_sets(),
    st.booleans(),
    st.sampled_from(list(FixedWindowType)),
)
def test_as_of_equals_the_brute_force_oracle(data, table, aggs, inclusive, fwt):
    aggs = [a for a in aggs if a.field != "s"]  # numeric fields (the oracle converts with float)
    labels = data.draw(label_tables(table))
    out = as_of(labels, table, aggs, key="k", time_field="t", inclusive=inclusive, fixed_window_type=fwt)
    assert out.schema.names[:2] == ["k", "t"]
    rows = _rows(table)
    for i, (key, t) in enumerate(
        zip(labels.column("k").to_pylist(), labels.column("t").to_pylist(), strict=True)
    ):
        for agg in aggs:
            want = _oracle(agg, rows, key, t * MS, inclusive, fwt)
            got = [out.column(f)[i].as_py() for f in agg.feature_names]
            assert all(same(g, w) for g, w in zip(got, want, strict=True)), (agg.name, i, got, want)


@SETTINGS
@given(st.data(), events(max_rows=40, keys=3), aggregator_sets())
def test_later_events_never_leak(data, table, aggs):
    labels = data.draw(label_tables(table))
    horizon = max(labels.column("t").to_pylist())
    early = table.filter(pa.compute.less_equal(table.column("t"), horizon))
    base = as_of(labels, early, aggs, key="k", time_field="t")
    full = as_of(labels, table, aggs, key="k", time_field="t")  # + events after every label, in any order
    for name in base.schema.names:
        a, b = base.column(name).to_pylist(), full.column(name).to_pylist()
        assert all(same(x, y) for x, y in zip(a, b, strict=True)), name


@SETTINGS
@given(st.lists(st.integers(1, 20 * MIN_MS), min_size=1, max_size=40), st.data())
def test_as_of_at_the_events_own_times_equals_the_stream(steps, data):
    """In-order keys without repeated times: as_of at each event's (key, time) == EmitEveryEvent."""
    n = len(steps)
    t = np.cumsum(steps) + 1_700_000_000_000
    x = data.draw(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=n, max_size=n))
    keys = data.draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    status = data.draw(st.lists(st.sampled_from(["ok", "fail"]), min_size=n, max_size=n))
    table = pa.table({"k": keys, "t": pa.array(t, pa.int64()), "x": pa.array(x, pa.float64()), "s": status})
    aggs = [
        FieldAggregator("a", "x", ALL_TEN, SlidingWindows(["20m", "1h"], "10m")),
        FieldAggregator(
            "n", "s", ["count"], FixedWindows(["30m", "1h"]), aggr_filter=FieldEquals("s", "fail")
        ),
    ]
    stream = stream_events(
        table, [AggregateByKey(aggs, Table("t", NoopDriver()), key="k", time_field="t")], time_field="t"
    )
    out = as_of(table.select(["k", "t"]), table, aggs, key="k", time_field="t")
    for name in [f for a in aggs for f in a.feature_names]:
        col = out.column(name).to_pylist()
        assert all(same(e.body[name], v) for e, v in zip(stream, col, strict=True)), name


def test_label_columns_and_keys_without_events():
    events_table = pa.table({"user": ["a", "a"], "ts": [0, 60_000], "x": [1.0, 2.0]})
    labels = pa.table({"who": ["a", "nobody"], "when": [60_000, 60_000], "extra": [1, 2]})
    agg = FieldAggregator("x", "x", ALL_TEN, SlidingWindows(["1h", "2h"], "10m"))
    out = as_of(labels, events_table, [agg], key="user", time_field="ts", label_key="who", label_time="when")
    assert out.schema.names[:3] == ["who", "when", "extra"]
    assert out.column("x_sum_1h").to_pylist() == [3.0, 0.0]
    assert out.column("x_count_1h").to_pylist() == [2, 0]
    assert math.isnan(out.column("x_min_1h")[1].as_py())
    exclusive = as_of(
        labels,
        events_table,
        [agg],
        key="user",
        time_field="ts",
        label_key="who",
        label_time="when",
        inclusive=False,
    )
    assert exclusive.column("x_sum_1h").to_pylist() == [1.0, 0.0]


def test_null_label_time_fails():
    from storey import MissingFieldError

    agg = FieldAggregator("x", "x", ALL_TEN, SlidingWindows(["1h", "2h"], "10m"))
    labels = pa.table({"k": ["a"], "t": pa.array([None], pa.int64())})
    with pytest.raises(MissingFieldError, match="null"):
        as_of(labels, pa.table({"k": ["a"], "t": [0], "x": [1.0]}), [agg], key="k", time_field="t")


def _bits(column):
    """A column's values as comparable bits: int64 as is, float64 as uint64 with one NaN payload."""
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == np.float64:
        values = np.where(np.isnan(values), np.nan, values).view(np.uint64)
    return values


@SETTINGS
@given(
    st.data(),
    events(max_rows=60, keys=3),
    aggregator_sets(),
    st.booleans(),
    st.sampled_from(list(FixedWindowType)),
)
def test_compiled_label_loop_equals_the_python_one_bit_for_bit(data, table, aggs, inclusive, fwt):
    from storey.aggregations.state import AggregatorPlan
    from storey.frames import asof as asof_module

    plans = [AggregatorPlan(a, fixed_window_type=fwt) for a in aggs]
    fixed_lcw = fwt is FixedWindowType.LastClosedWindow and any(p.window_type == "fixed" for p in plans)
    assert asof_module._compiled_plans(plans) is not fixed_lcw  # LastClosedWindow reads run in Python
    labels = data.draw(label_tables(table))
    kwargs = {"key": "k", "time_field": "t", "inclusive": inclusive, "fixed_window_type": fwt}
    compiled = as_of(labels, table, aggs, **kwargs)
    asof_module.USE_COMPILED = False
    try:
        python = as_of(labels, table, aggs, **kwargs)
    finally:
        asof_module.USE_COMPILED = True
    assert compiled.schema == python.schema
    for name in compiled.schema.names[2:]:
        np.testing.assert_array_equal(_bits(compiled.column(name)), _bits(python.column(name)), err_msg=name)
