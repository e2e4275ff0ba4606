"""The typed-string encoding (STEPS.md §9.2) shared by the drivers."""

from __future__ import annotations

import datetime as dt
import math
import struct

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storey.drivers._encoding import decode_schema, decode_value, encode_schema, encode_value
from storey.errors import RedisError, SQLiteError, StoreyError

UTC = dt.UTC


def enc(value: object) -> bytes:
    return encode_value(value, name="attr", error_class=SQLiteError, where="here")


def dec(data: bytes) -> object:
    return decode_value(data, name="attr", error_class=SQLiteError, where="here")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b"n:"),
        (True, b"b:1"),
        (False, b"b:0"),
        (-12, b"i:-12"),
        (0.1, b"f:0.1"),
        (-0.0, b"f:-0.0"),
        (math.inf, b"f:inf"),
        (-math.inf, b"f:-inf"),
        ("ü", b"s:\xc3\xbc"),
        (b"\x00y:", b"y:\x00y:"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), b"t:2024-01-02T03:04:05.000006000+00:00"),
        (pd.Timestamp("2024-01-02T03:04:05.123456789Z"), b"t:2024-01-02T03:04:05.123456789+00:00"),
    ],
)
def test_wire_format(value: object, encoded: bytes) -> None:
    assert enc(value) == encoded


def test_nan_encodes_as_nan() -> None:
    assert enc(math.nan) == b"f:nan"
    assert math.isnan(dec(b"f:nan"))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_float_bits_round_trip(bits: int) -> None:
    value = struct.unpack("<d", struct.pack("<Q", bits))[0]
    back = dec(enc(value))
    if math.isnan(value):
        assert math.isnan(back)
    else:
        assert struct.pack("<d", back) == struct.pack("<d", value)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_round_trips(value: int) -> None:
    assert dec(enc(value)) == value


@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, dt.timezone(dt.timedelta(hours=-7)), dt.timezone(dt.timedelta(hours=9))]
        ),
    )
)
def test_aware_datetimes_round_trip_as_utc(value: dt.datetime) -> None:
    back = dec(enc(value))
    assert back == value
    assert back.utcoffset() == dt.timedelta(0)
    assert type(back) is dt.datetime


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_timestamps_keep_nanoseconds(ns: int) -> None:
    value = pd.Timestamp(ns, unit="ns", tz="UTC")
    back = dec(enc(value))
    assert pd.Timestamp(back).value == ns
    # sub-microsecond digits come back as a pandas.Timestamp, whole microseconds as a datetime
    assert isinstance(back, pd.Timestamp) == (ns % 1000 != 0)


def test_naive_datetime_is_read_as_utc() -> None:
    assert dec(enc(dt.datetime(2024, 5, 6, 7, 8, 9))) == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_equal_instants_encode_identically() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert enc(dt.datetime(2024, 1, 1, 2, tzinfo=plus_two)) == enc(dt.datetime(2024, 1, 1, tzinfo=UTC))


def test_datetime_out_of_range_in_utc_is_an_error() -> None:
    value = dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    with pytest.raises(SQLiteError, match=r"'attr'.*out of range"):
        enc(value)


@pytest.mark.parametrize("value", [object(), {1: 2}, [1], (1,), {1}, 1j, dt.date(2024, 1, 1), dt.time(1)])
def test_unsupported_values_name_the_attribute_and_the_type(value: object) -> None:
    with pytest.raises(
        RedisError, match=rf"here: cannot store attribute 'x y': unsupported type {type(value).__name__}"
    ):
        encode_value(value, name="x y", error_class=RedisError, where="here")


@pytest.mark.parametrize(
    "data", [b"", b"x", b"q:1", b"i:1.5", b"f:abc", b"b:2", b"n:x", b"s:\xff", b"t:yesterday"]
)
def test_corrupt_values_are_driver_errors(data: bytes) -> None:
    with pytest.raises(SQLiteError, match="'attr'"):
        dec(data)


def test_schema_json() -> None:
    doc = {"storey_schema": 1, "aggregators": {"a": {"max_value": None, "windows": ["1h"]}}}
    text = encode_schema(doc, error_class=StoreyError, where="w")
    assert decode_schema(text, error_class=StoreyError, where="w") == doc
    assert decode_schema(text.encode(), error_class=StoreyError, where="w") == doc
    with pytest.raises(StoreyError, match="mapping"):
        encode_schema([1], error_class=StoreyError, where="w")  # type: ignore[arg-type]
    with pytest.raises(StoreyError, match="not a JSON object"):
        decode_schema("[1]", error_class=StoreyError, where="w")
    with pytest.raises(StoreyError, match="not valid JSON"):
        decode_schema("{", error_class=StoreyError, where="w")
