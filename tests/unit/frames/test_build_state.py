"""`build_state`: the persisted state equals the stream's, byte for byte, and a stream continues exactly
(spec AGGREGATIONS.md §9.1 "Persisted state", §7.3)."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import AggregateByKey, NoopDriver, SQLiteDriver, Table
from storey.frames import build_state
from storey.frames.aggregate import _build_state
from storey.frames.parity import stream_events
from storey.table import encode_key, state_attribute
from tests.unit.frames._streams import ALL_TEN, aggregator_sets, events

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _driver(kind: str, folder: str):
    if kind == "noop":
        return NoopDriver()
    return SQLiteDriver(os.path.join(folder, f"state-{len(os.listdir(folder))}.db"))


def _stream(table, aggs, events_table, key="k"):
    step = AggregateByKey(aggs, table, key=key, time_field="t")
    return stream_events(events_table, [step], time_field="t"), step


def _blobs(driver, path, keys, names):
    async def load():
        out = {}
        for key in keys:
            record = await driver.load_key(path, encode_key(key)) or {}
            out[key] = {n: record.get(state_attribute(n)) for n in names}
        return out, await driver.load_schema(path)

    return asyncio.run(load())


@SETTINGS
@given(
    events(max_rows=80, keys=4),
    aggregator_sets(),
    st.sampled_from(["noop", "sqlite"]),
    st.sampled_from(["reference", "auto"]),
)
def test_blobs_equal_the_streams(table, aggs, driver_kind, implementation):
    keys = sorted(set(table.column("k").to_pylist()))
    names = [a.name for a in aggs]
    with tempfile.TemporaryDirectory() as folder:
        d_stream, d_frames = _driver(driver_kind, folder), _driver(driver_kind, folder)
        _stream(Table("features", d_stream), aggs, table)
        metrics = _build_state(
            table, aggs, Table("features", d_frames), key="k", time_field="t", implementation=implementation
        )
        expected, schema = _blobs(d_stream, "features", keys, names)
        got, got_schema = _blobs(d_frames, "features", keys, names)
    assert got == expected
    assert got_schema == schema
    assert all(isinstance(b, bytes) for rec in got.values() for b in rec.values())
    assert metrics["events"] == table.num_rows


@SETTINGS
@given(events(max_rows=80, keys=3), aggregator_sets(), st.integers(0, 80))
def test_build_state_then_stream_equals_one_stream(table, aggs, cut):
    cut = min(cut, table.num_rows)
    head, tail = table.slice(0, cut), table.slice(cut)
    keys = sorted(set(table.column("k").to_pylist()))
    names = [a.name for a in aggs]
    one = NoopDriver()
    whole, _ = _stream(Table("f", one), aggs, table)
    two = NoopDriver()
    build_state(head, aggs, Table("f", two), key="k", time_field="t")
    resumed, _ = _stream(Table("f", two), aggs, tail)
    assert [e.body for e in resumed] == [e.body for e in whole[cut:]] or _same_bodies(resumed, whole[cut:])
    assert _blobs(two, "f", keys, names) == _blobs(one, "f", keys, names)


def _same_bodies(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.body.keys() != y.body.keys():
            return False
        for k in x.body:
            u, v = x.body[k], y.body[k]
            if not (u == v or (u != u and v != v)):
                return False
    return True


def test_build_state_requires_a_table():
    import pyarrow as pa

    from storey import FieldAggregator, SlidingWindows

    agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    with pytest.raises(TypeError, match="table"):
        build_state(pa.table({"k": ["a"], "t": [0], "x": [1.0]}), [agg], None, key="k", time_field="t")


def test_live_states_continue_in_the_same_table():
    """A stream over the very Table object build_state filled uses its live states."""
    import pyarrow as pa

    from storey import FieldAggregator, SlidingWindows

    agg = FieldAggregator("x", "x", ALL_TEN, SlidingWindows(["1h", "2h"], "10m"))
    events_table = pa.table(
        {"k": ["a", "a", "b", "a"], "t": [0, 60_000, 120_000, 180_000], "x": [1.0, 2.0, 4.0, 8.0]}
    )
    table = Table("f", NoopDriver())
    build_state(events_table.slice(0, 3), [agg], table, key="k", time_field="t")
    out, step = _stream(table, [agg], events_table.slice(3))
    assert [(e.body["x_sum_1h"], e.body["x_count_1h"]) for e in out] == [(11.0, 3)]
    assert step.metrics["events"] == 1
