"""The one time-conversion helper and Event time normalisation (spec AGGREGATIONS.md §1, STEPS.md §1.1)."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey import Event, MissingFieldError, to_ns, to_ns_array
from storey._time import from_ns

UTC = dt.UTC


def test_scalar_rules():
    assert to_ns(1) == 1_000_000
    assert to_ns(np.int32(2)) == 2_000_000
    assert to_ns(1.5) == 1_500_000
    assert to_ns(0.0000005) == 0  # round half even of 0.5 ns
    assert to_ns(0.0000015) == 2
    assert to_ns(dt.datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000_000  # naive is UTC
    assert to_ns(dt.datetime(1970, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == 0
    assert to_ns(pd.Timestamp("1970-01-01T00:00:00.000000001")) == 1
    assert to_ns(pd.Timestamp("1970-01-01T01:00:00.000000001+01:00")) == 1
    assert to_ns(np.datetime64(3, "s")) == 3_000_000_000
    assert to_ns("1970-01-01T00:00:00.123456789Z") == 123_456_789
    assert to_ns("1970-01-01T02:00:00+02:00") == 0
    assert to_ns(dt.date(1970, 1, 2)) == 86_400 * 10**9


@pytest.mark.parametrize("bad", [True, object(), [1]])
def test_type_errors(bad):
    with pytest.raises(TypeError):
        to_ns(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "yesterday", 10**17, dt.datetime(2300, 1, 1)])
def test_value_errors(bad):
    with pytest.raises(ValueError):
        to_ns(bad)


@pytest.mark.parametrize("null", [None, pd.NaT, np.datetime64("NaT")])
def test_nulls_are_missing(null):
    with pytest.raises(MissingFieldError):
        to_ns(null)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**62) // 10**6, (2**62) // 10**6), min_size=1, max_size=20))
def test_vector_equals_scalar_for_ints(values):
    assert to_ns_array(np.array(values, dtype=np.int64)).tolist() == [to_ns(v) for v in values]
    assert to_ns_array(pa.array(values, pa.int64())).tolist() == [to_ns(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=20))
def test_vector_equals_scalar_for_floats(values):
    assert to_ns_array(np.array(values)).tolist() == [to_ns(v) for v in values]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(10**17), 10**17), min_size=1, max_size=10),
    st.sampled_from(["s", "ms", "us", "ns"]),
    st.sampled_from([None, "UTC", "Asia/Tokyo"]),
)
def test_arrow_timestamps_of_any_unit_and_zone(raw, unit, tz):
    factor = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    raw = [r // factor for r in raw]
    arr = pa.array(raw, pa.timestamp(unit, tz))
    assert to_ns_array(arr).tolist() == [r * factor for r in raw]
    assert to_ns_array(arr).tolist() == [to_ns(np.datetime64(r, unit)) for r in raw]


def test_arrow_errors_name_column_and_row():
    with pytest.raises(MissingFieldError, match=r"column 'time', input a.parquet, row 1"):
        to_ns_array(pa.array([1, None]), column="time", source="a.parquet")
    with pytest.raises(ValueError, match="row 0"):
        to_ns_array(pa.array([2**62], pa.timestamp("s")), column="t")
    assert to_ns_array(pa.array([1], pa.date32())).tolist() == [86_400 * 10**9]


def test_event_time_normalisation():
    assert Event(1, time=0).time == dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert Event(1, time=dt.datetime(2020, 1, 1)).time == dt.datetime(2020, 1, 1, tzinfo=UTC)
    ts = Event(1, time=pd.Timestamp("2020-01-01T00:00:00.000000005")).time
    assert isinstance(ts, pd.Timestamp) and ts.value % 1000 == 5 and str(ts.tz) == "UTC"
    assert Event(1, time="2020-01-01T01:00:00+01:00").time == dt.datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(TypeError):
        Event(1, time=True)
    now = dt.datetime.now(UTC)
    assert abs((Event(1).time - now).total_seconds()) < 5
    assert Event(1, time=5).processing_time == Event(1, time=5).time


def test_event_equality_copy_and_hash():
    import copy

    e = Event({"a": 1}, key="k", time=3)
    c = copy.copy(e)
    assert c == e and c.body is e.body and c.id == e.id
    assert e != Event({"a": 1}, key="k", time=3)
    assert e != "not an event"
    with pytest.raises(TypeError):
        hash(e)
    assert "key='k'" in repr(e)


def test_from_ns_round_trips_with_precision():
    assert from_ns(1_000) == dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert to_ns(from_ns(1_234_567_891)) == 1_234_567_891


def test_import_storey_is_light():
    code = (
        "import sys, storey, storey.dtypes, storey.flow, storey.steps, storey.sources\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'aiohttp', 'fsspec', 'redis', 'v3io', 'numba', 'dask')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import storey pulled in {out.stdout.strip()}"


def _element_wise(items):
    try:
        return [to_ns(v) for v in items]
    except ValueError:
        return ValueError


def _column(items):
    try:
        return to_ns_array(items).tolist()
    except ValueError:
        return ValueError


@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.datetimes(min_value=dt.datetime(1678, 1, 1), max_value=dt.datetime(2261, 12, 31)),
                st.datetimes(min_value=dt.datetime(1600, 1, 1), max_value=dt.datetime(2400, 1, 1)),
                st.datetimes(),  # years 1 to 9999
            ),
            st.sampled_from(["utc", "zoneinfo-utc", "plus-2h", "naive"]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["numba", "pandas", "python"]),
)
@settings(deadline=None)  # the first example loads the compiled reader
def test_lists_of_datetimes_match_to_ns(values, path):
    """The one-pass path for lists of aware UTC datetimes (one zone; compiled when numba is imported, else
    through pandas when it is) gives `to_ns`'s integers, or its error out of the int64 range; lists it does
    not cover (other zones, naive, mixed) take the element-wise path."""
    from unittest import mock
    from zoneinfo import ZoneInfo

    zones = {"utc": dt.UTC, "zoneinfo-utc": ZoneInfo("UTC"), "plus-2h": dt.timezone(dt.timedelta(hours=2))}
    items = [v if z == "naive" else v.replace(tzinfo=zones[z]) for v, z in values]
    same_zone = [v.replace(tzinfo=ZoneInfo("UTC")) for v, _ in values]
    hidden = {"numba": {}, "pandas": {"numba": None}, "python": {"numba": None, "pandas": None}}[path]
    if path == "numba":  # the compiled path runs once numba is loaded; load it outside the patched modules
        import numba  # noqa: F401

        from storey._time_nb import _checked

        _checked()
    with mock.patch.dict(sys.modules, hidden):
        assert _column(items) == _element_wise(items)
        assert _column(same_zone) == _element_wise(same_zone)


def test_compiled_datetime_reader_passes_its_layout_check():
    """On CPython the compiled reader is used (its layout check passed): lists of aware UTC datetimes come back
    as an array, and a value outside the int64 ns range hands the list back to the exact path."""
    import numba  # noqa: F401

    from storey import _time_nb

    assert _time_nb._checked() is not False
    got = _time_nb.utc_datetimes_ns([dt.datetime(2024, 2, 29, 1, 2, 3, 456789, tzinfo=dt.UTC)])
    assert got is not None and got.tolist() == [
        to_ns(dt.datetime(2024, 2, 29, 1, 2, 3, 456789, tzinfo=dt.UTC))
    ]
    assert _time_nb.utc_datetimes_ns([dt.datetime(3000, 1, 1, tzinfo=dt.UTC)]) is None
