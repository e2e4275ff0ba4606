"""`V3ioDriver` against the V3IO emulator: value encodings, conditional writes, retries and failures,
schemas, item reads and streams. (The generic driver contract also runs on V3IO: tests/unit/drivers.)"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import math
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pandas as pd
import pytest
import v3io.aio.dataplane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from v3io.dataplane.response import HttpResponseError

from storey.drivers.v3io import TYPED_BLOB_MARKER, PutRecordResult, StreamInfo, V3ioDriver
from storey.errors import V3ioError
from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

TABLE = "/bigdata/features"
UTC = dt.UTC
FIXTURE_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
async def driver(v3io_emulator: V3ioEmulator) -> AsyncIterator[V3ioDriver]:
    d = V3ioDriver(v3io_emulator.url, access_key="k", retry_backoff_secs=0.001)
    yield d
    await d.close()


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def raw_item(emu: V3ioEmulator, key: str, table: str = TABLE) -> dict:
    item = emu.item(f"{table}/{key}")
    assert item is not None
    return item


def functions(emu: V3ioEmulator) -> list[tuple[str, int | None]]:
    return [(r.function, r.status) for r in emu.requests]


# ------------------------------------------------------------------------------------- construction
def test_constructor_reads_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("V3IO_API", "webapi.example:8081")
    monkeypatch.setenv("V3IO_ACCESS_KEY", "env-key")
    d = V3ioDriver()
    assert d.webapi == "http://webapi.example:8081"
    assert V3ioDriver("https://x/").webapi == "https://x"
    monkeypatch.delenv("V3IO_API")
    with pytest.raises(ValueError, match="V3IO_API"):
        V3ioDriver()
    monkeypatch.delenv("V3IO_ACCESS_KEY")
    with pytest.raises(ValueError, match="V3IO_ACCESS_KEY"):
        V3ioDriver("http://x")
    with pytest.raises(ValueError, match="timeout_secs"):
        V3ioDriver("http://x", "k", timeout_secs=0)
    with pytest.raises(ValueError):
        V3ioDriver("http://x", "k", max_retries=-1)


async def test_bad_table_paths_and_keys(driver) -> None:
    with pytest.raises(V3ioError, match="container"):
        await driver.load_key("/bigdata", "k")
    with pytest.raises(V3ioError, match="key"):
        await driver.save_key(TABLE, "", {"a": 1})
    with pytest.raises(V3ioError, match=r"'x'.*unsupported type"):
        await driver.save_key(TABLE, "k", {"x": object()})
    with pytest.raises(V3ioError, match="64 bits"):
        await driver.save_key(TABLE, "k", {"x": 2**63})


# ------------------------------------------------------------------------------------------ values
async def test_native_types_where_exact_typed_blobs_otherwise(driver, v3io_emulator) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    record = {
        "i": -7,
        "f": 2.5,
        "whole": 3.0,
        "big": 1e300,
        "tiny": 5e-324,
        "s": "it's",
        "both": 'it\'s "quoted"',
        "backslash": "a\\b",
        "b": True,
        "y": b"\x00\x01raw",
        "t": when,
        "none": None,
        "neg_zero": -0.0,
        "inf": math.inf,
        "nan": math.nan,
        "marker_bytes": TYPED_BLOB_MARKER + b"n:",
        "array_bytes": struct.pack("<IIIIq", 11223344, 1, 8, 259, 5),
        "old": dt.datetime(1960, 1, 1, tzinfo=UTC),
        "min": 1,  # a reserved word of the expression language
        "with space": "x",
    }
    await driver.save_key(TABLE, "k", record)
    stored = raw_item(v3io_emulator, "k")
    # what other V3IO readers see: plain attributes where V3IO has the type
    assert stored["i"] == -7 and type(stored["i"]) is int
    assert stored["f"] == 2.5 and stored["whole"] == 3.0 and type(stored["whole"]) is float
    assert stored["big"] == 1e300 and bits(stored["tiny"]) == bits(5e-324)
    assert stored["s"] == "it's"
    assert stored["b"] is True and stored["y"] == b"\x00\x01raw"
    assert (stored["t"].secs, stored["t"].nsecs) == (int(when.timestamp()), 678901000)
    assert stored["min"] == 1
    for name in ("none", "neg_zero", "inf", "nan", "both", "backslash", "marker_bytes", "array_bytes", "old"):
        assert stored[name].startswith(TYPED_BLOB_MARKER), name
    assert stored["_storey_x_" + b"with space".hex()] == "x"
    loaded = await driver.load_key(TABLE, "k")
    assert set(loaded) == set(record)
    for name, value in record.items():
        if isinstance(value, float):
            assert type(loaded[name]) is float, name
            assert math.isnan(loaded[name]) if math.isnan(value) else bits(loaded[name]) == bits(value), name
        else:
            assert type(loaded[name]) is type(value) and loaded[name] == value, name


@FIXTURE_SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
async def test_floats_round_trip_bit_exact(driver, x: float) -> None:
    await driver.save_key(TABLE, "f", {"x": x})
    got = (await driver.load_key(TABLE, "f"))["x"]
    assert type(got) is float
    assert math.isnan(got) if math.isnan(x) else bits(got) == bits(x)


@FIXTURE_SETTINGS
@given(st.text(max_size=40))
async def test_strings_round_trip(driver, s: str) -> None:
    await driver.save_key(TABLE, "s", {"s": s})
    assert (await driver.load_key(TABLE, "s")) == {"s": s}


@FIXTURE_SETTINGS
@given(st.integers(-(2**63), 2**63 - 1))
async def test_ints_round_trip(driver, n: int) -> None:
    await driver.save_key(TABLE, "n", {"n": n})
    got = (await driver.load_key(TABLE, "n"))["n"]
    assert type(got) is int and got == n


@FIXTURE_SETTINGS
@given(st.integers(-(2**62), 2**62))
async def test_nanosecond_times_round_trip(driver, ns: int) -> None:
    value = pd.Timestamp(ns, unit="ns", tz="UTC")
    await driver.save_key(TABLE, "t", {"t": value})
    got = (await driver.load_key(TABLE, "t"))["t"]
    assert got == value
    assert pd.Timestamp(got).value == ns


async def test_aware_datetimes_in_other_zones_load_as_the_same_instant(driver) -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    value = dt.datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=tz)
    await driver.save_key(TABLE, "z", {"t": value})
    got = (await driver.load_key(TABLE, "z"))["t"]
    assert got == value and got.utcoffset() == dt.timedelta(0)


async def test_items_written_by_other_tools_decode_like_the_sdk(driver, v3io_emulator) -> None:
    c = v3io.aio.dataplane.Client(endpoint=v3io_emulator.url, access_key="k", logger_verbosity="ERROR")
    when = dt.datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    await c.kv.put("bigdata", "features", "other", {"ints": [1, 2], "floats": [0.5], "t": when, "n": 3})
    await c.close()
    assert await driver.load_key(TABLE, "other") == {"ints": [1, 2], "floats": [0.5], "t": when, "n": 3}
    assert await driver.load_key(TABLE, "other", ["n", "missing"]) == {"n": 3}
    assert await driver.load_key(TABLE, "absent") is None


# ---------------------------------------------------------------------------- conditional writes
async def test_writes_are_conditioned_on_the_last_verifier(driver, v3io_emulator) -> None:
    def verifier() -> str:
        return v3io_emulator.namespace.container("bigdata").get("features/c").verifier()

    await driver.save_key(TABLE, "c", {"a": 1})  # unknown item: no condition
    after_first = verifier()
    await driver.save_key(TABLE, "c", {"b": 2})  # conditioned on the answer to the first write
    after_second = verifier()
    assert await driver.load_key(TABLE, "c") == {"a": 1, "b": 2}  # a read refreshes the (same) verifier
    await driver.save_key(TABLE, "c", {"a": 3})
    updates = [r for r in v3io_emulator.requests if r.function == "UpdateItem"]
    assert [u.json().get("ConditionExpression") for u in updates] == [None, after_first, after_second]
    assert after_first.startswith("__mtime_secs==") and " and __mtime_nsecs==" in after_first
    assert all(u.status == 200 for u in updates)
    assert await driver.load_key(TABLE, "c") == {"a": 3, "b": 2}


async def test_conflict_rereads_warns_and_overwrites(driver, v3io_emulator, caplog) -> None:
    await driver.save_key(TABLE, "x", {"mine": 1, "shared": "a"})
    other = V3ioDriver(v3io_emulator.url, access_key="k")
    await other.save_key(TABLE, "x", {"theirs": 2, "shared": "b"})  # another writer changes the item
    await other.close()
    v3io_emulator.requests.clear()
    with caplog.at_level(logging.WARNING, logger="storey.drivers.v3io"):
        await driver.save_key(TABLE, "x", {"shared": "c"})
    assert functions(v3io_emulator) == [("UpdateItem", 400), ("GetItem", 200), ("UpdateItem", 200)]
    first, _, last = v3io_emulator.requests
    assert "ConditionExpression" in first.json()
    assert "ConditionExpression" not in last.json()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'/bigdata/features'" in warnings[0].getMessage() and "'x'" in warnings[0].getMessage()
    # last writer wins on the attributes it wrote; the other writer's attribute stays
    assert await driver.load_key(TABLE, "x") == {"mine": 1, "shared": "c", "theirs": 2}
    # and the driver now holds a fresh verifier: the next write goes through at once
    v3io_emulator.requests.clear()
    await driver.save_key(TABLE, "x", {"mine": 5})
    assert functions(v3io_emulator) == [("UpdateItem", 200)]


async def test_save_keys_writes_many_records(driver) -> None:
    records = [(f"k{i}", {"i": i, "sq": float(i * i)}) for i in range(40)]
    await driver.save_keys(TABLE, records)
    for key, attrs in records:
        assert await driver.load_key(TABLE, key) == attrs
    assert sorted(k for k, _ in await driver.scan(TABLE)) == sorted(k for k, _ in records)
    assert [k for k, _ in await driver.scan(TABLE, ["i"], filter_expression="i >= 38")] in (
        ["k38", "k39"],
        ["k39", "k38"],
    )
    await driver.delete_key(TABLE, "k0")
    await driver.delete_key(TABLE, "k0")  # absent is fine
    assert await driver.load_key(TABLE, "k0") is None


async def test_empty_save_is_a_no_op(driver, v3io_emulator) -> None:
    await driver.save_key(TABLE, "e", {})
    assert list(v3io_emulator.requests) == []


# ------------------------------------------------------------------------------------------ schemas
async def test_schema_object(driver, v3io_emulator) -> None:
    assert await driver.load_schema(TABLE) is None
    doc = {"storey_schema": 1, "aggregators": {"a": {"period_ns": 60_000_000_000}}}
    await driver.save_schema(TABLE, doc)
    assert json.loads(v3io_emulator.object_data(f"{TABLE}/.schema")) == doc
    assert await driver.load_schema(TABLE + "/") == doc
    assert await driver.load_schema("v3io://" + TABLE) == doc
    v3io_emulator.namespace.container("bigdata").get("features/.schema").data = bytearray(b"not json")
    with pytest.raises(V3ioError, match="not valid JSON"):
        await driver.load_schema(TABLE)


# ------------------------------------------------------------------------------- retries, failures
async def test_transient_5xx_is_retried_then_succeeds(driver, v3io_emulator) -> None:
    fault = v3io_emulator.inject_fault(503, times=3, function="UpdateItem")
    await driver.save_key(TABLE, "r", {"a": 1})
    assert fault.hits == 3
    assert functions(v3io_emulator) == [("UpdateItem", 503)] * 3 + [("UpdateItem", 200)]
    assert await driver.load_key(TABLE, "r") == {"a": 1}


async def test_dropped_connections_are_retried(driver, v3io_emulator) -> None:
    await driver.save_key(TABLE, "d", {"a": 1})
    fault = v3io_emulator.inject_fault(drop=True, times=4, function="GetItem")
    assert await driver.load_key(TABLE, "d") == {"a": 1}
    assert fault.hits == 4
    v3io_emulator.inject_fault(drop=True, times=1, function="UpdateItem")  # POST: never resent by aiohttp
    await driver.save_key(TABLE, "d", {"b": 2})
    assert await driver.load_key(TABLE, "d") == {"a": 1, "b": 2}


async def test_timeouts_are_retried(v3io_emulator) -> None:
    d = V3ioDriver(v3io_emulator.url, access_key="k", retry_backoff_secs=0.001, timeout_secs=0.2)
    v3io_emulator.inject_fault(delay=2.0, times=1, function="GetItem")
    assert await d.load_key(TABLE, "nothing") is None
    assert [r.function for r in v3io_emulator.requests] == ["GetItem", "GetItem"]
    await d.close()


async def test_exhausted_retries_raise_v3io_error_with_the_cause(v3io_emulator) -> None:
    d = V3ioDriver(v3io_emulator.url, access_key="k", retry_backoff_secs=0.001, max_retries=2)
    v3io_emulator.inject_fault(503, times=None, function="UpdateItem", message="overloaded")
    with pytest.raises(V3ioError, match="3 attempts") as info:
        await d.save_key(TABLE, "x", {"a": 1})
    assert isinstance(info.value.__cause__, HttpResponseError)
    assert info.value.__cause__.status_code == 503
    assert "overloaded" in str(info.value.__cause__)
    assert "'x'" in str(info.value)
    assert len(v3io_emulator.requests) == 3
    await d.close()


async def test_client_errors_are_not_retried(v3io_emulator) -> None:
    d = V3ioDriver(v3io_emulator.url, access_key="k", retry_backoff_secs=0.001)
    v3io_emulator.inject_fault(400, function="GetItem", error_code=-22, message="bad request")
    with pytest.raises(V3ioError) as info:
        await d.load_key(TABLE, "x")
    assert info.value.__cause__.status_code == 400
    assert len(v3io_emulator.requests) == 1
    await d.close()


async def test_wrong_access_key_is_a_v3io_error() -> None:
    async with V3ioEmulator(access_key="secret") as emu:
        d = V3ioDriver(emu.url, access_key="wrong", retry_backoff_secs=0.001)
        with pytest.raises(V3ioError) as info:
            await d.save_key(TABLE, "k", {"a": 1})
        assert info.value.__cause__.status_code == 401
        assert len(emu.requests) == 1
        await d.close()


async def test_server_down_at_start_is_a_v3io_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free, and nothing listens on it
    d = V3ioDriver(f"127.0.0.1:{port}", access_key="k", retry_backoff_secs=0.001, max_retries=2)
    with pytest.raises(V3ioError, match="3 attempts") as info:
        await d.load_key(TABLE, "k")
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError | ConnectionError)
    await d.close()


async def test_server_that_comes_back_during_the_retries() -> None:
    emu = V3ioEmulator()
    await emu.start_async()
    url = emu.url
    await emu.stop_async()
    d = V3ioDriver(url, access_key="k", retry_backoff_secs=0.05, max_retries=5)

    async def restart() -> None:
        await asyncio.sleep(0.1)
        await emu.start_async()

    task = asyncio.create_task(restart())
    await d.save_key(TABLE, "back", {"a": 1})
    await task
    assert emu.item(f"{TABLE}/back") == {"a": 1}
    await d.close()
    await emu.stop_async()


def test_one_driver_across_event_loops(v3io_emulator_thread) -> None:
    # What a Table does across two runs of a flow: use the driver, close it, use it again on a new loop.
    d = V3ioDriver(v3io_emulator_thread.url, access_key="k")

    async def run(attrs: dict) -> dict | None:
        await d.save_key(TABLE, "loop", attrs)
        try:
            return await d.load_key(TABLE, "loop")
        finally:
            await d.close()
            await d.close()  # idempotent

    assert asyncio.run(run({"a": 1})) == {"a": 1}
    assert asyncio.run(run({"b": 2})) == {"a": 1, "b": 2}


# ------------------------------------------------------------------------------------------ streams
async def test_stream_operations(driver, v3io_emulator) -> None:
    stream = "/bigdata/streams/s1"
    assert await driver.describe_stream(stream) is None
    assert await driver.create_stream(stream, 2, retention_hours=3) is True
    assert await driver.create_stream(stream, 2) is False  # 409: already there
    assert await driver.describe_stream(stream) == StreamInfo(2, 3)
    results = await driver.put_records(
        stream,
        [
            {"shard_id": 0, "data": b"a"},
            {"shard_id": 7, "data": b"bad"},
            {"shard_id": 1, "data": "b", "partition_key": "pk", "client_info": b"ci"},
        ],
    )
    assert results[0] == PutRecordResult(0, 1)
    assert not results[1].ok and results[1].error_code == -201326594
    assert results[2].ok and results[2].shard_id == 1
    location = await driver.seek_shard(stream, 1)
    records, after = await driver.get_records(stream, 1, location)
    assert [(r.data, r.partition_key, r.client_info, r.sequence_number) for r in records] == [
        (b"b", "pk", b"ci", 1)
    ]
    assert records[0].arrival_time_ns > 0
    assert (await driver.get_records(stream, 1, after))[0] == []
    arrival = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(
        microseconds=records[0].arrival_time_ns // 1000
    )
    since = await driver.seek_shard(stream, 1, "TIME", timestamp=arrival)
    assert [r.data for r in (await driver.get_records(stream, 1, since))[0]] == [b"b"]
    by_seq = await driver.seek_shard(stream, 0, "SEQUENCE", sequence_number=1)
    assert [r.data for r in (await driver.get_records(stream, 0, by_seq, limit=10))[0]] == [b"a"]
    assert await driver.put_records(stream, []) == []
    await driver.delete_stream(stream)
    await driver.delete_stream(stream)
    assert await driver.describe_stream(stream) is None


async def test_put_records_retries_transient_failures(driver, v3io_emulator) -> None:
    stream = "/bigdata/s2"
    await driver.create_stream(stream, 1)
    v3io_emulator.inject_fault(502, times=2, function="PutRecords")
    results = await driver.put_records(stream, [{"shard_id": 0, "data": b"x"}])
    assert [r.ok for r in results] == [True]
    assert v3io_emulator.stream_records(stream, 0) == [b"x"]
    v3io_emulator.inject_record_failures(stream, times=1)
    results = await driver.put_records(stream, [{"shard_id": 0, "data": b"y"}, {"shard_id": 0, "data": b"z"}])
    assert [r.ok for r in results] == [False, True]  # per-record failures are the caller's to re-send
    assert v3io_emulator.stream_records(stream, 0) == [b"x", b"z"]


async def test_typed_blob_marker_is_what_the_docs_say() -> None:
    from storey.drivers.v3io import value_literal

    literal = value_literal(None, name="a", where="t")
    assert base64.b64decode(literal[len("blob('") : -2]) == b"\x00storey:n:"
