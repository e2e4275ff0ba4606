"""Streams of the V3IO emulator, through the real v3io SDK clients (the v3io-py client tests' scenarios)."""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import AsyncIterator

import pytest
import v3io.aio.dataplane
import v3io.dataplane

from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

NEVER = v3io.aio.dataplane.RaiseForStatus.never
C = "bigdata"
S = "v3io-py-test-stream"


@pytest.fixture
async def client(v3io_emulator: V3ioEmulator) -> AsyncIterator[v3io.aio.dataplane.Client]:
    c = v3io.aio.dataplane.Client(endpoint=v3io_emulator.url, access_key="k", logger_verbosity="ERROR")
    yield c
    await c.close()


async def exists(client) -> bool:
    return (await client.stream.describe(C, S, raise_for_status=NEVER)).status_code == 200


async def test_create_describe_and_conflict(client) -> None:
    assert not await exists(client)
    created = await client.stream.create(C, S, shard_count=3, retention_period_hours=5)
    assert created.status_code == 204
    desc = await client.stream.describe(C, S)
    assert (desc.output.shard_count, desc.output.retention_period_hours) == (3, 5)
    again = await client.stream.create(C, S, shard_count=3, raise_for_status=NEVER)
    assert again.status_code == 409
    default = await client.stream.create(C, S + "2", shard_count=1)
    assert default.status_code == 204
    assert (await client.stream.describe(C, S + "2")).output.retention_period_hours == 24


async def test_partial_failure_seek_get_update_and_delete(client) -> None:
    # v3io-py's test_stream, step by step
    await client.stream.create(C, S, shard_count=8)
    records = [
        {"shard_id": 1, "data": "first shard record #1"},
        {"shard_id": 1, "data": "first shard record #2", "client_info": bytearray(b"some info")},
        {"shard_id": 10, "data": "invalid shard record #1"},
        {"shard_id": 2, "data": "second shard record #1"},
        {"data": "some shard record #1"},
    ]
    resp = await client.stream.put_records(C, S, records)
    assert resp.status_code == 200
    assert resp.output.failed_record_count == 1
    assert [r.error_code is not None for r in resp.output.records] == [False, False, True, False, False]
    assert resp.output.records[2].error_message == "ShardIDOutOfRangeException"
    assert [(r.shard_id, r.sequence_number) for r in resp.output.records if r.error_code is None] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (0, 1),  # no shard id, no partition key: round-robin from shard 0
    ]
    location = (await client.stream.seek(C, S, 1, "EARLIEST")).output.location
    assert location
    got = await client.stream.get_records(C, S, 1, location)
    assert [r.data.decode() for r in got.output.records] == [records[0]["data"], records[1]["data"]]
    assert got.output.records[1].client_info == records[1]["client_info"]
    assert got.output.records[0].client_info is None
    assert got.output.records_behind_latest == 0
    await client.stream.update(C, S, shard_count=16)
    assert (
        await client.stream.put_records(C, S, [{"shard_id": 10, "data": "ok"}])
    ).output.failed_record_count == 0
    # consumer-group state objects live beside the shards; stream.delete removes everything
    for cg in range(3):
        await client.object.put(C, f"{S}/cg{cg}-state.json")
    assert await exists(client)
    await client.stream.delete(C, S)
    assert not await exists(client)


async def test_get_records_pages_with_next_location(client) -> None:
    await client.stream.create(C, S, shard_count=1)
    await client.stream.put_records(C, S, [{"shard_id": 0, "data": f"r{i}"} for i in range(10)])
    location = (await client.stream.seek(C, S, 0, "EARLIEST")).output.location
    seen = []
    for _ in range(5):
        page = await client.stream.get_records(C, S, 0, location, limit=4)
        seen += [r.data.decode() for r in page.output.records]
        location = page.output.next_location
        if not page.output.records:
            break
    assert seen == [f"r{i}" for i in range(10)]
    # reading past the end returns nothing and keeps the position
    empty = await client.stream.get_records(C, S, 0, location)
    assert empty.output.records == []
    await client.stream.put_records(C, S, [{"shard_id": 0, "data": "later"}])
    assert [r.data for r in (await client.stream.get_records(C, S, 0, location)).output.records] == [b"later"]


async def test_seek_types(client) -> None:
    await client.stream.create(C, S, shard_count=2)
    await client.stream.put_records(C, S, [{"shard_id": 1, "data": f"old{i}"} for i in range(3)])
    latest = (await client.stream.seek(C, S, 1, "LATEST")).output.location
    await client.stream.put_records(C, S, [{"shard_id": 1, "data": "new"}])
    assert [r.data for r in (await client.stream.get_records(C, S, 1, latest)).output.records] == [b"new"]
    seq = (await client.stream.seek(C, S, 1, "SEQUENCE", starting_sequence_number=3)).output.location
    assert [r.sequence_number for r in (await client.stream.get_records(C, S, 1, seq)).output.records] == [
        3,
        4,
    ]
    everything = (
        await client.stream.get_records(
            C, S, 1, (await client.stream.seek(C, S, 1, "EARLIEST")).output.location
        )
    ).output.records
    cut = everything[2]
    at = (
        await client.stream.seek(
            C, S, 1, "TIME", timestamp_sec=cut.arrival_time_sec, timestamp_nsec=cut.arrival_time_nsec
        )
    ).output.location
    assert [r.sequence_number for r in (await client.stream.get_records(C, S, 1, at)).output.records] == [
        3,
        4,
    ]
    future = int(dt.datetime(2200, 1, 1, tzinfo=dt.UTC).timestamp())
    at_end = (
        await client.stream.seek(C, S, 1, "TIME", timestamp_sec=future, timestamp_nsec=0)
    ).output.location
    assert (await client.stream.get_records(C, S, 1, at_end)).output.records == []
    bad = await client.stream.seek(C, S, 5, "EARLIEST", raise_for_status=NEVER)
    assert bad.status_code == 400
    assert b"ShardIDOutOfRangeException" in bad.body
    missing = await client.stream.seek(C, "nostream", 0, "EARLIEST", raise_for_status=NEVER)
    assert missing.status_code == 404


async def test_partition_keys_place_records_consistently(client) -> None:
    await client.stream.create(C, S, shard_count=4)
    keys = [f"user{i}" for i in range(20)]
    resp = await client.stream.put_records(C, S, [{"partition_key": k, "data": k} for k in keys])
    placed = {k: r.shard_id for k, r in zip(keys, resp.output.records, strict=True)}
    assert placed == {k: zlib.crc32(k.encode()) % 4 for k in keys}
    location = (await client.stream.seek(C, S, placed["user3"], "EARLIEST")).output.location
    records = (await client.stream.get_records(C, S, placed["user3"], location)).output.records
    assert "user3" in [r.partition_key for r in records]


async def test_injected_record_failures(client, v3io_emulator) -> None:
    await client.stream.create(C, S, shard_count=2)
    failures = v3io_emulator.inject_record_failures(f"/{C}/{S}", times=2, shard_id=1)
    resp = await client.stream.put_records(C, S, [{"shard_id": i % 2, "data": str(i)} for i in range(6)])
    assert [r.error_code is not None for r in resp.output.records] == [False, True, False, True, False, False]
    assert resp.output.failed_record_count == 2
    assert failures.hits == 2
    assert v3io_emulator.stream_records(f"/{C}/{S}", 1) == [b"5"]


def test_sync_client_streams(v3io_emulator_thread: V3ioEmulator) -> None:
    c = v3io.dataplane.Client(endpoint=v3io_emulator_thread.url, access_key="k", logger_verbosity="ERROR")
    try:
        c.create_stream(C, S, shard_count=2)
        out = c.put_records(C, S, [{"shard_id": 1, "data": "a"}, {"shard_id": 9, "data": "b"}]).output
        assert out.failed_record_count == 1
        location = c.seek_shard(C, f"{S}/1", "EARLIEST").output.location
        assert [r.data for r in c.get_records(C, f"{S}/1", location).output.records] == [b"a"]
        assert c.describe_stream(C, S).output.shard_count == 2
        c.stream.delete(container=C, stream_path=S)
        assert c.stream.describe(container=C, stream_path=S, raise_for_status="never").status_code == 404
    finally:
        c.close()
