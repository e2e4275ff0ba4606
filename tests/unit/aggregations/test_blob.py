"""The per-key state blob, format 1 (spec AGGREGATIONS.md §7.2)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.aggregations.blob import MAGIC, decode, decode_state, encode, encode_state
from storey.aggregations.checks import same_bits
from storey.aggregations.field import FieldAggregator
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindows, SlidingWindows
from storey.errors import SchemaMismatchError

S = 10**9
ALL = ["count", "sum", "sqr", "min", "max", "first", "last", "avg"]


def make_plan(windows=None, aggrs=ALL, **kw):
    return AggregatorPlan(
        FieldAggregator("f", "x", aggrs, windows or SlidingWindows(["3s", "5s"], "1s")), **kw
    )


def test_layout_by_hand():
    plan = make_plan(aggrs=["sum", "first"])
    state = plan.new_state()
    state.update(1.5, 10 * S + 1)
    state.update(-0.0, 12 * S)
    blob = encode_state(state)
    fields = ("n", "s", "ft", "fv")
    head = MAGIC + struct.pack("<qq", 12 * S, S) + struct.pack("<H", 4)
    head += b"".join(struct.pack("<B", len(f)) + f.encode() for f in fields)
    body = struct.pack("<I", 2) + struct.pack("<qq", 10, 12)
    # s = 0.0 + -0.0 = +0.0 in the second tile; fv keeps the -0.0
    body += struct.pack("<qq", 1, 1) + struct.pack("<dd", 1.5, 0.0) + struct.pack("<qq", 10 * S + 1, 12 * S)
    body += struct.pack("<dd", 1.5, -0.0)
    assert blob == head + body


def test_canonical_field_order():
    plan = make_plan(aggrs=["last", "avg", "max", "sqr", "first", "min", "sum", "count"])
    assert plan.row_fields == ("n", "s", "q", "mean", "m2", "mn", "mx", "ft", "fv", "lt", "lv")


values = st.one_of(
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf]),
    st.none(),
    st.just(math.nan),
)


@settings(max_examples=80, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 40 * S), values), max_size=40),
    fixed=st.booleans(),
    taus=st.lists(st.integers(-10 * S, 60 * S), max_size=5),
)
def test_round_trip_and_determinism(events, fixed, taus):
    windows = FixedWindows(["2s", "6s"]) if fixed else SlidingWindows(["3s", "5s"], "1s")
    plan = make_plan(windows)
    state, twin = plan.new_state(), plan.new_state()
    for t, v in events:
        for s in (state, twin):
            if s.observe(t) and v is not None and not math.isnan(v):
                s.add(v, t)
        twin.evaluate(t, {})  # a state that also ran evaluations (caches) encodes the same bytes
    blob = encode_state(state)
    assert blob == encode_state(twin)
    restored = decode_state(plan, blob)
    assert encode_state(restored) == blob
    assert restored.H == state.H
    for tau in [t for t, _ in events[-3:]] + taus:
        a, b = {}, {}
        assert state.evaluate(tau, a) == restored.evaluate(tau, b)
        assert list(a) == list(b) and all(same_bits(a[k], b[k]) for k in a)
    bound = state.retention_bound
    assert all(k >= bound for k in decode(blob)[3])


def test_only_retained_tiles_are_written():
    plan = make_plan(SlidingWindows(["2s"], "1s"), aggrs=["count"])  # N = 2: keep tiles >= M - 2
    state = plan.new_state()
    for t in (0, 1, 2, 3, 4):
        state.update(1.0, t * S)
    state.observe(5 * S)  # H advances without a new tile; tile 3 (= M - 2) is the oldest kept
    _, _, fields, tiles, columns = decode(encode_state(state))
    assert fields == ("n",) and tiles == [3, 4] and columns == [[1, 1]]


def test_encode_validates():
    with pytest.raises(ValueError, match="ascending"):
        encode(0, 1, ["n"], [2, 1], [[1, 1]])
    with pytest.raises(ValueError, match="values for"):
        encode(0, 1, ["n"], [1, 2], [[1]])
    with pytest.raises(ValueError, match="unknown state field"):
        encode(0, 1, ["zz"], [1], [[1]])


def test_decode_rejects_garbage_and_mismatches():
    plan = make_plan()
    state = plan.new_state()
    state.update(1.0, 5 * S)
    blob = encode_state(state)
    with pytest.raises(ValueError, match="not a storey state blob"):
        decode(b"XXXX" + blob[4:])
    with pytest.raises(ValueError, match="corrupt"):
        decode(blob[:-3])
    with pytest.raises(ValueError, match="trailing"):
        decode(blob + b"\0")
    with pytest.raises(SchemaMismatchError, match="period"):
        decode_state(make_plan(SlidingWindows(["4s"], "2s")), blob)
    with pytest.raises(SchemaMismatchError, match="fields"):
        decode_state(make_plan(aggrs=["sum"]), blob)


def test_empty_state_round_trip():
    plan = make_plan()
    state = plan.new_state()
    restored = decode_state(plan, encode_state(state))
    assert restored.H == state.H and restored.keys == []
