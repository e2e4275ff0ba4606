"""The compiled engine's key-grouped loop and its reduced window folds, bit for bit.

`test_engines` compares the compiled engine with the reference engine on a few keys. Here the grouped
loop (policies without timers) runs on many keys and large batches, so that its inputs are gathered in
key-grouped order, its outputs scattered back and its prefetch hints run ahead across key groups. The
aggregators emit only some of their kernels' fields (``avg`` without ``stdvar``: the window folds then
carry ``mean`` but not ``m2``), which the all-ten aggregator sets of `test_engines` never do.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import FieldAggregator, FieldEquals, FixedWindows, SlidingWindows
from storey.aggregations._fused import _merge_block
from storey.aggregations.emit import EmitAfterMaxEvent, EmitEveryEvent
from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.frames._codegen import live_merge
from storey.frames.aggregate import _aggregate
from tests.unit.frames._streams import BASE_MS, MIN_MS, assert_tables_equal

pytest.importorskip("numba", reason="the compiled engine is optional (storey[fast])")

# aggregation sets whose results read only part of their kernels' fields
# (one compiled shape each: few, to keep the first run's compile time short)
PARTIAL = [["avg", "min", "max"], ["avg"], ["sum", "avg", "sqr"], ["first", "last", "count"]]


def _events(seed: int, n: int, n_keys: int):
    """Sparse keys (a few events per key per batch, as in the README workload), late and too-late events,
    skipped values (None, NaN) and signed zeros."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    t = BASE_MS + np.cumsum(rng.exponential(n_keys * 8 * MIN_MS / 40, n)).astype(np.int64)
    u = rng.random(n)
    t = np.where(u < 0.03, t - rng.integers(1, 90 * MIN_MS, n), t)  # late
    t = np.where((u >= 0.03) & (u < 0.04), t - 30 * 60 * MIN_MS, t)  # too late
    x = rng.choice([0.0, -0.0, 1.0, -2.5, 1e9, -1e-3, 3.0, 7.25], n) + np.round(rng.normal(0, 100, n), 2)
    x[rng.random(n) < 0.05] = np.nan
    x[rng.random(n) < 0.02] = -0.0
    xs = pa.array(x, pa.float64(), mask=rng.random(n) < 0.1)
    keys = rng.integers(0, n_keys, n)
    return pa.table(
        {
            "k": pa.array([f"key{k}" for k in keys]),
            "t": pa.array(t, pa.int64()),
            "x": xs,
            "s": pa.array(rng.choice(["ok", "fail"], n).tolist()),
        }
    )


@st.composite
def _aggregators(draw):
    aggs = draw(st.sampled_from(PARTIAL))
    if draw(st.booleans()):
        windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    else:
        windows = FixedWindows(["1h", "2h", "24h"])
    out = [FieldAggregator("p", "x", aggs, windows)]
    out.append(FieldAggregator("c", "x", ["count"], SlidingWindows(["1h", "2h", "24h"], "10m")))
    out.append(
        FieldAggregator(
            "f", "s", ["count"], SlidingWindows(["1h"], "10m"), aggr_filter=FieldEquals("s", "fail")
        )
    )
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32 - 1),
    st.integers(300, 2500),
    st.integers(20, 400),
    _aggregators(),
    st.sampled_from([EmitEveryEvent(), EmitAfterMaxEvent(2)]),
    st.integers(64, 4096),
)
def test_grouped_many_keys_equals_reference(seed, n, n_keys, aggs, policy, batch_size):
    table = _events(seed, n, n_keys)
    options = {"key": "k", "time_field": "t", "emit_policy": policy, "batch_size": batch_size}
    outs = [_aggregate(table, aggs, implementation=impl, **options) for impl in ("reference", "compiled")]
    assert_tables_equal(*outs)
    metrics = [json.loads(o.schema.metadata[b"storey.metrics"]) for o in outs]
    assert metrics[0] == metrics[1]


def _bits(x: float | int) -> bytes:
    return struct.pack("<q", x) if isinstance(x, int) else struct.pack("<d", x)


_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 1e300, -1e300, 5e-324]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.sampled_from(["sum", "sqr", "moments", "min", "max", "first", "last"]), min_size=1),
    st.data(),
)
def test_live_merge_keeps_the_bits_of_the_read_fields(kernel_names, data):
    """The reduced merge computes every carried field exactly as the full merge block does."""
    kernels = [(0, get_kernel("count"))] + [
        (i + 1, get_kernel(k)) for i, k in enumerate(sorted(kernel_names))
    ]
    fields = tuple(f for _, k in kernels for f in k.field_names)
    names = ["count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev"]
    usable = [a for a in names if set(get_aggregation(a).kernels) <= {k.name for _, k in kernels}]
    aggs = data.draw(st.sets(st.sampled_from(usable), min_size=1))
    reads = {"n"} | {f for a in aggs for f in get_aggregation(a).reads}
    block = _merge_block(kernels)
    code, carried = live_merge(block, fields, reads)
    assert reads <= set(carried) <= set(fields)
    env = {}
    dtypes = {f: dt for _, k in kernels for f, dt in k.fields}
    for side in ("a_", "b_"):
        for f in fields:
            if dtypes[f] == "i8":
                env[side + f] = data.draw(
                    st.integers(1, 10**6) if f == "n" else st.integers(-(10**12), 10**12)
                )
            else:
                env[side + f] = data.draw(_FLOATS)
    full: dict = dict(env)
    reduced: dict = dict(env)
    exec(block, {"float": float, "math": math}, full)  # the kernels' own templates
    exec(code, {"float": float, "math": math}, reduced)
    for f in carried:
        assert _bits(reduced[f]) == _bits(full[f]), f


def test_grouped_on_threads_equals_one_thread(monkeypatch):
    """Aggregators run on threads for large batches (each with its own state, gathers and scratch outputs):
    the same table as one thread, and as the reference engine."""
    table = _events(7, 12_000, 1_500)
    aggs = [
        FieldAggregator("p", "x", ["avg", "min", "max"], SlidingWindows(["1h", "2h", "24h"], "10m")),
        FieldAggregator("c", "x", ["count"], SlidingWindows(["1h", "2h", "24h"], "10m")),
        FieldAggregator(
            "f", "s", ["count"], SlidingWindows(["1h"], "10m"), aggr_filter=FieldEquals("s", "fail")
        ),
    ]
    outs = []
    for threads in ("1", "2"):
        monkeypatch.setenv("STOREY_FRAMES_THREADS", threads)
        outs.append(
            _aggregate(table, aggs, key="k", time_field="t", implementation="compiled", batch_size=8192)
        )
    assert_tables_equal(*outs)
    head = table.slice(0, 5000)
    ref = _aggregate(head, aggs, key="k", time_field="t", implementation="reference", batch_size=8192)
    assert_tables_equal(ref, outs[1].slice(0, 5000))
