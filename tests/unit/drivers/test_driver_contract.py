"""The driver contract (STEPS.md §9.2), run against every backend of the `driver_factory` fixture."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import struct
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.errors import StoreyError

UTC = dt.UTC
CONTRACT_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def fresh_key() -> str:
    return uuid.uuid4().hex


def same_value(expected: Any, got: Any) -> bool:
    """Equal, with floats compared bit for bit (NaN: any NaN) and the Python type checked."""
    if isinstance(expected, float):
        if not isinstance(got, float):
            return False
        if math.isnan(expected):
            return math.isnan(got)
        return struct.pack("<d", expected) == struct.pack("<d", got)
    if isinstance(expected, dt.datetime):
        return isinstance(got, dt.datetime) and got.tzinfo is not None and got == expected
    return type(got) is type(expected) and got == expected


# Every value the contract requires, with the edge cases that break naive encodings.
ROUND_TRIP_VALUES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "i64_max": 2**63 - 1,
    "i64_min": -(2**63),
    "neg_zero": -0.0,
    "pos_zero": 0.0,
    "inf": math.inf,
    "neg_inf": -math.inf,
    "nan": math.nan,
    "subnormal": 5e-324,
    "max_float": 1.7976931348623157e308,
    "third": 1 / 3,
    "empty_str": "",
    "unicode": "héllo ✓ 𝄞",
    "tag_lookalike": "f:1.5",
    "colons": "a:b:c",
    "empty_bytes": b"",
    "binary": bytes(range(256)),
    "utc_micros": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    "offset": dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "pre_epoch": dt.datetime(1900, 1, 1, tzinfo=UTC),
    "ns_timestamp": pd.Timestamp("2024-03-01T12:00:00.123456789Z"),
}


async def test_every_value_type_round_trips(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("values"), fresh_key()
    await driver.save_key(table, key, ROUND_TRIP_VALUES)
    loaded = await driver.load_key(table, key)
    assert set(loaded) == set(ROUND_TRIP_VALUES)
    for name, expected in ROUND_TRIP_VALUES.items():
        assert same_value(expected, loaded[name]), (name, expected, loaded[name])
    assert isinstance(loaded["ns_timestamp"], pd.Timestamp)
    assert loaded["ns_timestamp"].value == ROUND_TRIP_VALUES["ns_timestamp"].value


async def test_numpy_scalars_load_as_python_values(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("numpy"), fresh_key()
    values = {
        "i": np.int64(-7),
        "u": np.uint32(7),
        "f": np.float32(0.1),
        "b": np.bool_(True),
        "t": np.datetime64("2024-01-01T00:00:00.000000001"),
    }
    await driver.save_key(table, key, values)
    loaded = await driver.load_key(table, key)
    assert same_value(-7, loaded["i"]) and same_value(7, loaded["u"]) and same_value(True, loaded["b"])
    assert same_value(float(np.float32(0.1)), loaded["f"])
    assert pd.Timestamp(loaded["t"]).value == 1704067200000000001


FLOATS = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    FLOATS,
    st.text(),
    st.binary(),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(UTC)),
)
NAMES = st.text(min_size=1).filter(lambda s: "\x00" not in s)


@CONTRACT_SETTINGS
@given(record=st.dictionaries(NAMES, VALUES, max_size=8))
async def test_random_records_round_trip(driver_factory: Any, record: dict[str, Any]) -> None:
    driver = driver_factory.created[0] if driver_factory.created else driver_factory()
    table, key = driver_factory.table_path("random"), fresh_key()
    await driver.save_key(table, key, record)
    loaded = await driver.load_key(table, key)
    if not record:
        assert loaded is None
        return
    assert set(loaded) == set(record)
    for name, expected in record.items():
        assert same_value(expected, loaded[name]), (name, expected, loaded[name])


@CONTRACT_SETTINGS
@given(bits=st.integers(min_value=0, max_value=2**64 - 1))
async def test_every_float_bit_pattern_survives(driver_factory: Any, bits: int) -> None:
    driver = driver_factory.created[0] if driver_factory.created else driver_factory()
    value = struct.unpack("<d", struct.pack("<Q", bits))[0]
    table, key = driver_factory.table_path("bits"), fresh_key()
    await driver.save_key(table, key, {"x": value})
    assert same_value(value, (await driver.load_key(table, key))["x"])


async def test_save_key_upserts_only_the_given_attributes(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("upsert"), fresh_key()
    await driver.save_key(table, key, {"a": 1, "b": "two", "c": b"3"})
    await driver.save_key(table, key, {"b": None, "d": 4.5})
    assert await driver.load_key(table, key) == {"a": 1, "b": None, "c": b"3", "d": 4.5}
    other = fresh_key()
    assert await driver.load_key(table, other) is None
    await driver.save_key(table, key, {})  # a no-op
    await driver.save_key(table, other, {})  # does not create a record
    assert await driver.load_key(table, other) is None
    assert await driver.load_key(table, key) == {"a": 1, "b": None, "c": b"3", "d": 4.5}


async def test_load_selected_attributes(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("select"), fresh_key()
    await driver.save_key(table, key, {"a": 1, "b": None, "_storey_a_x": b"\x01"})
    assert await driver.load_key(table, key, ["b", "zz", "_storey_a_x"]) == {
        "b": None,
        "_storey_a_x": b"\x01",
    }
    assert await driver.load_key(table, key, ["zz"]) == {}
    assert await driver.load_key(table, key, []) == {}
    assert await driver.load_key(table, key, "a") == {"a": 1}
    assert await driver.load_key(table, fresh_key(), ["a"]) is None


async def test_tables_and_keys_are_isolated(driver_factory: Any) -> None:
    driver = driver_factory()
    t1, t2 = driver_factory.table_path("iso1"), driver_factory.table_path("iso2")
    keys = ["k", "k.1", "a:b", "ä/ü €", " spaced ", "*", "%", "_"]
    for i, key in enumerate(keys):
        await driver.save_key(t1, key, {"v": i})
        await driver.save_key(t2, key, {"v": -i})
    for i, key in enumerate(keys):
        assert await driver.load_key(t1, key) == {"v": i}
        assert await driver.load_key(t2, key) == {"v": -i}


async def test_loaded_records_are_copies(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("copies"), fresh_key()
    attrs = {"a": "x", "blob": b"abc"}
    await driver.save_key(table, key, attrs)
    attrs["a"] = "mutated"
    loaded = await driver.load_key(table, key)
    loaded["a"] = "mutated too"
    assert await driver.load_key(table, key) == {"a": "x", "blob": b"abc"}


async def test_schema_save_load_replace(driver_factory: Any) -> None:
    driver = driver_factory()
    table = driver_factory.table_path("schema")
    assert await driver.load_schema(table) is None
    doc = {"storey_schema": 1, "aggregators": {"p": {"windows": ["1h"], "period_ns": 600_000_000_000}}}
    await driver.save_schema(table, doc)
    assert await driver.load_schema(table) == doc
    await driver.save_schema(table, {"storey_schema": 1, "aggregators": {}})
    assert await driver.load_schema(table) == {"storey_schema": 1, "aggregators": {}}
    assert await driver.load_schema(driver_factory.table_path("schema-other")) is None
    await driver.save_key(table, "k", {"a": 1})  # records and schema do not collide
    assert await driver.load_schema(table) == {"storey_schema": 1, "aggregators": {}}
    with pytest.raises(driver.error_class, match="JSON"):
        await driver.save_schema(table, {"bad": object()})


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({"nested": 1}, "dict"),
        ([1, 2], "list"),
        (dt.timedelta(seconds=1), "timedelta"),
        (2**63, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        ("\ud800", "UTF-8"),
        (pd.NaT, "NaT"),
    ],
)
async def test_unsupported_value_fails_naming_the_attribute(
    driver_factory: Any, value: Any, what: str
) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("bad"), fresh_key()
    await driver.save_key(table, key, {"good": 1})
    with pytest.raises(driver.error_class, match=f"'the_attr'.*{what}") as info:
        await driver.save_key(table, key, {"good": 2, "the_attr": value})
    assert isinstance(info.value, StoreyError)
    assert await driver.load_key(table, key) == {"good": 1}  # nothing of the failed save was written


async def test_save_keys_writes_every_record(driver_factory: Any) -> None:
    driver = driver_factory()
    table = driver_factory.table_path("batch")
    records = [(f"k{i}", {"i": i, "blob": i.to_bytes(4, "little")}) for i in range(1200)]
    records.append(("empty", {}))
    await driver.save_keys(table, records)
    for key, attrs in records[::97]:
        assert await driver.load_key(table, key) == attrs
    assert await driver.load_key(table, "k1199") == records[1199][1]
    assert await driver.load_key(table, "empty") is None


async def test_concurrent_saves_of_different_keys(driver_factory: Any) -> None:
    driver = driver_factory()
    table = driver_factory.table_path("concurrent")
    await asyncio.gather(*(driver.save_key(table, f"k{i}", {"i": i}) for i in range(200)))
    loaded = await asyncio.gather(*(driver.load_key(table, f"k{i}") for i in range(200)))
    assert loaded == [{"i": i} for i in range(200)]


async def test_close_is_idempotent_and_the_driver_reopens(driver_factory: Any) -> None:
    driver = driver_factory()
    table, key = driver_factory.table_path("reopen"), fresh_key()
    await driver.close()  # before first use
    await driver.save_key(table, key, {"a": 1})
    await driver.close()
    await driver.close()
    assert await driver.load_key(table, key) == {"a": 1}
    await driver.save_key(table, key, {"b": 2})
    await driver.close()
    if driver_factory.persistent:
        other = driver_factory()
        assert await other.load_key(table, key) == {"a": 1, "b": 2}


async def test_drivers_work_across_event_loops(driver_factory: Any) -> None:
    """A Table is closed at the end of a flow and may be used by a later flow in another loop."""
    driver = driver_factory()
    table, key = driver_factory.table_path("loops"), fresh_key()
    await driver.save_key(table, key, {"a": 1})
    await driver.close()

    def in_other_loop() -> Any:
        async def use() -> Any:
            await driver.save_key(table, key, {"b": 2})
            try:
                return await driver.load_key(table, key)
            finally:
                await driver.close()

        return asyncio.run(use())

    assert await asyncio.get_running_loop().run_in_executor(None, in_other_loop) == {"a": 1, "b": 2}
    assert await driver.load_key(table, key) == {"a": 1, "b": 2}
