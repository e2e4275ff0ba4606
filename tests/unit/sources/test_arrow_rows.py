"""Arrow columns to Python values as ReadParquet builds bodies (spec STEPS.md §5.4)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from storey._time import from_ns
from storey.sources._arrow import column_to_pylist, datetimes_from_ns, rows_from_batch

UTC = dt.UTC
_NS = st.integers(-(2**63) + 1, 2**63 - 1)


_WHOLE_MICROS = st.integers(-(2**63) // 1000 + 1, (2**63 - 1) // 1000).map(lambda v: v * 1000)


@given(st.lists(st.one_of(_NS, _WHOLE_MICROS), max_size=50))
def test_datetimes_from_ns_is_from_ns_per_value(values):
    got = datetimes_from_ns(np.array(values, dtype=np.int64))
    want = [from_ns(v) for v in values]
    assert got == want
    assert [type(g) for g in got] == [type(w) for w in want]
    assert all(g.utcoffset() == dt.timedelta(0) for g in got)


@given(
    st.lists(st.one_of(st.none(), st.integers(-(2**33), 2**33)), max_size=30),
    st.sampled_from(["s", "ms", "us", "ns"]),
    st.sampled_from([None, "UTC", "Asia/Kolkata"]),
)
def test_timestamp_columns_are_aware_utc_with_nulls(values, unit, tz):
    column = pa.array(values, pa.timestamp(unit, tz=tz))
    factor = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    assert column_to_pylist(column) == [None if v is None else from_ns(v * factor) for v in values]


def test_timestamps_outside_the_ns_range_use_arrow_datetimes():
    column = pa.array([32_503_680_000, None], pa.timestamp("s", tz="Asia/Kolkata"))  # year 3000
    assert column_to_pylist(column) == [dt.datetime(3000, 1, 1, tzinfo=UTC), None]


def test_other_types_use_arrow_conversion_and_chunked_arrays():
    chunked = pa.chunked_array([pa.array([1, None]), pa.array([3])])
    assert column_to_pylist(chunked) == [1, None, 3]
    batch = pa.record_batch({"a": ["x"], "b": pa.array([{"k": 1}])})
    assert rows_from_batch(batch) == [{"a": "x", "b": {"k": 1}}]
    assert rows_from_batch(batch, ["b"]) == [{"b": {"k": 1}}]
