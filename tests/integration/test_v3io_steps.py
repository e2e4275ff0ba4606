"""`WriteToV3IOStream` and `JoinWithV3IOTable` in flows, against the V3IO emulator."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections import Counter
from typing import Any

import pytest
import v3io.dataplane

from storey import FlowError, Reduce, Source, build_flow
from storey.drivers.v3io import V3ioDriver
from storey.errors import V3ioError
from storey.event import Event
from storey.steps.join_v3io import JoinWithV3IOTable
from storey.targets.streams import StreamTarget, WriteToV3IOStream
from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

STREAM = "/bigdata/events"
TABLE = "/bigdata/users"


def driver(emu: V3ioEmulator, **kwargs: Any) -> V3ioDriver:
    return V3ioDriver(emu.url, access_key="k", retry_backoff_secs=0.001, **kwargs)


def run(steps: list, events: list[tuple[Any, Any]]) -> Any:
    """Emit ``(body, key)`` pairs through ``[Source(), *steps]`` and return the termination result."""
    c = build_flow([Source(), *steps]).run()
    for body, key in events:
        c.emit(body, key=key)
    return c.terminate(wait=True)


def collect() -> Reduce:
    return Reduce([], lambda acc, x: [*acc, x])


def records(emu: V3ioEmulator, shards: int, path: str = STREAM) -> list[list[Any]]:
    return [[json.loads(r) for r in emu.stream_records(path, s)] for s in range(shards)]


# ---------------------------------------------------------------------------------- WriteToV3IOStream
def test_stream_is_created_and_records_are_sharded_by_key(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    events = [({"user": f"u{i % 5}", "n": i}, f"u{i % 5}") for i in range(30)]
    out = run(
        [WriteToV3IOStream(driver(emu), STREAM, shards=3, retention_in_hours=6, batch_size=4), collect()],
        events,
    )
    assert out == [body for body, _ in events]  # forwarded unchanged
    create = [r.json() for r in emu.requests if r.function == "CreateStream"]
    assert create == [{"ShardCount": 3, "RetentionPeriodHours": 6}]
    got = records(emu, 3)
    for shard in range(3):
        expected = [b for b, k in events if zlib.crc32(k.encode()) % 3 == shard]
        assert got[shard] == expected  # per-shard order kept
    batches = [r.json()["Records"] for r in emu.requests if r.function == "PutRecords"]
    assert all(1 <= len(b) <= 4 for b in batches)
    assert all(len({rec["ShardId"] for rec in b}) == 1 for b in batches)
    per_shard = Counter(b[0]["ShardId"] for b in batches)
    for shard in range(3):
        n = len(got[shard])
        assert per_shard[shard] == -(-n // 4)  # full batches while running, the rest at termination


def test_existing_stream_is_described_not_created(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_create(emu, STREAM, 2))
    run([WriteToV3IOStream(driver(emu), STREAM, shards=5)], [({"a": 1}, "k")])
    assert [r.function for r in emu.requests if r.function in ("CreateStream", "DescribeStream")] == [
        "CreateStream",  # ours, above
        "DescribeStream",
    ]
    assert sum(len(x) for x in records(emu, 2)) == 1


async def _create(emu: V3ioEmulator, path: str, shards: int) -> None:
    d = driver(emu)
    await d.create_stream(path, shards)
    await d.close()


def test_concurrent_creation_409_is_not_an_error(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_create(emu, STREAM, 2))
    emu.inject_fault(404, function="DescribeStream", error_code=-2, message="No such file or directory")
    run([WriteToV3IOStream(driver(emu), STREAM, shards=4)], [({"a": 1}, None), ({"a": 2}, None)])
    statuses = [(r.function, r.status) for r in emu.requests if r.function != "PutRecords"]
    assert statuses[1:] == [("DescribeStream", 404), ("CreateStream", 409), ("DescribeStream", 200)]
    assert [len(x) for x in records(emu, 2)] == [1, 1]  # the real shard count (2) is used, round-robin


def test_missing_stream_without_shards_fails(v3io_emulator_thread) -> None:
    with pytest.raises(FlowError) as info:
        run([WriteToV3IOStream(driver(v3io_emulator_thread), STREAM)], [({"a": 1}, "k")])
    assert isinstance(info.value.__cause__, V3ioError)
    assert "does not exist" in str(info.value.__cause__)


def test_payload_kinds_and_columns(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    run([WriteToV3IOStream(driver(emu), STREAM, shards=1)], [("text ✓", None), (b"\x00raw", None)])
    assert emu.stream_records(STREAM, 0) == ["text ✓".encode(), b"\x00raw"]
    path = "/bigdata/cols"
    target = WriteToV3IOStream(driver(emu), path, shards=1, columns=["who=$key", "amount"])
    run([target], [({"amount": 3, "other": 1}, "u1"), ([4], "u2")])
    assert records(emu, 1, path) == [[{"who": "u1", "amount": 3}, {"who": "u2", "amount": 4}]]
    with pytest.raises(FlowError) as info:
        run([WriteToV3IOStream(driver(emu), "/bigdata/bad", shards=1)], [(42, None)])
    assert isinstance(info.value.__cause__, TypeError)


def test_sharding_func_and_round_robin(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    target = WriteToV3IOStream(
        driver(emu), STREAM, shards=3, sharding_func=lambda e: e.body["s"], batch_size=2
    )
    run([target], [({"s": s}, None) for s in (2, 2, 0, 2)])
    assert records(emu, 3) == [[{"s": 0}], [], [{"s": 2}] * 3]
    path = "/bigdata/rr"
    run([WriteToV3IOStream(driver(emu), path, shards=3)], [({"i": i}, None) for i in range(7)])
    assert [len(x) for x in records(emu, 3, path)] == [3, 2, 2]
    with pytest.raises(FlowError) as info:
        run([WriteToV3IOStream(driver(emu), STREAM, sharding_func=lambda e: 9)], [({"a": 1}, None)])
    assert isinstance(info.value.__cause__, ValueError)
    assert "[0, 3)" in str(info.value.__cause__)


def test_failed_records_are_re_sent_alone(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_create(emu, STREAM, 1))
    failures = emu.inject_record_failures(STREAM, times=2)  # the first two records sent fail, once each
    run([WriteToV3IOStream(driver(emu), STREAM, batch_size=4)], [({"i": i}, None) for i in range(4)])
    assert failures.hits == 2
    sent = [
        [json.loads(base64_decode(r["Data"]))["i"] for r in req.json()["Records"]]
        for req in emu.requests
        if req.function == "PutRecords"
    ]
    assert sent == [[0, 1, 2, 3], [0, 1]]
    # a re-sent record may land after later records of its shard (spec §8.2)
    assert records(emu, 1) == [[{"i": 2}, {"i": 3}, {"i": 0}, {"i": 1}]]


def base64_decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def test_records_failing_after_the_retries_fail_the_flow(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_create(emu, STREAM, 2))
    emu.inject_record_failures(STREAM, times=None, shard_id=1, error_code=-11, message="busy")
    target = WriteToV3IOStream(driver(emu, max_retries=2), STREAM, sharding_func=lambda e: e.body["s"])
    with pytest.raises(FlowError) as info:
        run([target], [({"s": 0}, None), ({"s": 1}, None)])
    cause = info.value.__cause__
    assert isinstance(cause, V3ioError)
    assert "shard 1" in str(cause) and "error code -11" in str(cause) and "3 attempts" in str(cause)
    assert emu.stream_records(STREAM, 0) == [b'{"s": 0}']


def test_transient_put_failures_are_retried_by_the_driver(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(503, times=2, function="PutRecords")
    run([WriteToV3IOStream(driver(emu), STREAM, shards=1)], [({"a": 1}, None)])
    assert emu.stream_records(STREAM, 0) == [b'{"a": 1}']


def test_stream_target_alias_and_validation(v3io_emulator_thread) -> None:
    assert StreamTarget is WriteToV3IOStream
    d = driver(v3io_emulator_thread)
    with pytest.raises(ValueError, match="batch_size"):
        WriteToV3IOStream(d, STREAM, batch_size=0)
    with pytest.raises(ValueError, match="shards"):
        WriteToV3IOStream(d, STREAM, shards=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        WriteToV3IOStream(d, STREAM, shard=2)


def test_records_read_back_with_the_sdk(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    run([WriteToV3IOStream(driver(emu), STREAM, shards=1)], [({"n": i}, "k") for i in range(3)])
    c = v3io.dataplane.Client(endpoint=emu.url, access_key="k", logger_verbosity="ERROR")
    location = c.stream.seek("bigdata", "events", 0, "EARLIEST").output.location
    got = c.stream.get_records("bigdata", "events", 0, location).output.records
    c.close()
    assert [json.loads(r.data) for r in got] == [{"n": i} for i in range(3)]


# ---------------------------------------------------------------------------------- JoinWithV3IOTable
async def _seed(emu: V3ioEmulator, items: dict[str, dict[str, Any]]) -> None:
    d = driver(emu)
    for key, attrs in items.items():
        await d.save_key(TABLE, key, attrs)
    await d.close()


def test_join_found_items_and_drop_the_rest(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_seed(emu, {str(i): {"age": i, "name": f"n{i}"} for i in range(0, 20, 2)}))
    join = JoinWithV3IOTable(
        driver(emu), "uid", lambda body, item: {**body, **item}, TABLE, attributes=["age"], max_in_flight=4
    )
    out = run([join, collect()], [({"uid": i}, None) for i in range(20)])
    assert out == [{"uid": i, "age": i} for i in range(0, 20, 2)]  # input order, int keys as str


def test_join_function_can_drop_and_see_the_full_event(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    asyncio.run(_seed(emu, {"a": {"v": 1}, "b": {"v": 2}}))

    def join(event: Event, item: dict[str, Any]) -> Event | None:
        if item["v"] == 2:
            return None
        event.body = {"key": event.key, **item}
        return event

    steps = [JoinWithV3IOTable(driver(emu), lambda e: e.key, join, TABLE, full_event=True), collect()]
    assert run(steps, [({}, "a"), ({}, "b"), ({}, "zzz")]) == [{"key": "a", "v": 1}]


def test_join_failure_is_a_flow_error(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(400, function="GetItem", message="bad")
    join = JoinWithV3IOTable(driver(emu), "uid", lambda b, i: b, TABLE)
    with pytest.raises(FlowError) as info:
        run([join], [({"uid": "x"}, None)])
    assert isinstance(info.value.__cause__, V3ioError)


def test_join_missing_key_field(v3io_emulator_thread) -> None:
    join = JoinWithV3IOTable(driver(v3io_emulator_thread), "uid", lambda b, i: b, TABLE)
    with pytest.raises(FlowError) as info:
        run([join], [({"other": 1}, None)])
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match="max_in_flight"):
        JoinWithV3IOTable(driver(v3io_emulator_thread), "uid", lambda b, i: b, TABLE, max_in_flight=0)
