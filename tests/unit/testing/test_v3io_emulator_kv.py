"""KV operations of the V3IO emulator, driven by the unmodified v3io aio and sync SDK clients."""

from __future__ import annotations

import array
import asyncio
import datetime as dt
import json
import zlib
from collections.abc import AsyncIterator

import pytest
import v3io.aio.dataplane
import v3io.dataplane

from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

NEVER = v3io.aio.dataplane.RaiseForStatus.never
C = "bigdata"
TABLE = "some_dir/tbl"


@pytest.fixture
async def client(v3io_emulator: V3ioEmulator) -> AsyncIterator[v3io.aio.dataplane.Client]:
    c = v3io.aio.dataplane.Client(endpoint=v3io_emulator.url, access_key="k", logger_verbosity="ERROR")
    yield c
    await c.close()


def verifier_numbers(response) -> tuple[int, int]:
    text = response.headers["X-v3io-transaction-verifier"]
    secs, nsecs = (part.split("==")[1] for part in text.split(" and "))
    return int(secs), int(nsecs)


async def test_typed_values_round_trip_with_their_types(client) -> None:
    # The v3io-py client test "test_kv_values": every type comes back with the same Python type.
    now = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    item = {
        "age": 42,
        "pi": 3.14,
        "whole": 3.0,
        "feature_str": "mustache",
        "unicode": "\u05e9\u05dc\u05d5\u05dd ✓",
        "numeric_str": "1",
        "male": True,
        "happy": False,
        "blob": b"+AFymWFzAL/LUOiU2huiADbugMH0AARATEO1\x00\xff",
        "list_with_ints": [1, 2, 3],
        "list_with_floats": [10.5, 20.5, 30.5],
        "array_with_ints": array.array("l", range(10)),
        "array_with_floats": array.array("d", [float(v) for v in range(10)]),
        "now": now,
    }
    await client.kv.put(C, TABLE, "bob", item)
    got = (await client.kv.get(C, TABLE, "bob")).output.item
    assert set(got) == set(item)
    for name, value in item.items():
        expected = list(value) if isinstance(value, array.array) else value
        assert got[name] == expected, name
        assert type(got[name]) is type(expected), name


async def test_put_replaces_and_update_with_attributes_merges(client, v3io_emulator) -> None:
    await client.kv.put(C, TABLE, "louise", {"age": 9, "feature": "bunny ears"})
    await client.kv.update(C, TABLE, "louise", attributes={"height": 130, "quip": "i can smell fear on you"})
    resp = await client.kv.get(C, TABLE, "louise", attribute_names=["__size", "age", "quip", "height"])
    assert resp.output.item == {"__size": 0, "age": 9, "quip": "i can smell fear on you", "height": 130}
    await client.kv.put(C, TABLE, "louise", {"only": 1})
    assert v3io_emulator.item(f"/{C}/{TABLE}/louise") == {"only": 1}
    # the merge arrived as PutItem with an UpdateMode, the replace without one (pitfall §1.3.3)
    puts = [r.json() for r in v3io_emulator.requests if r.function == "PutItem"]
    assert [("UpdateMode" in p) for p in puts] == [False, True, False]


async def test_update_expressions_on_numbers_and_arrays(client) -> None:
    await client.kv.put(C, TABLE, "k", {"age": 9, "ints": [1, 2, 3], "floats": [10.25, 20.25, 30.25]})
    await client.kv.update(C, TABLE, "k", expression="age = age + 1")
    for name in ("ints", "floats"):
        await client.kv.update(C, TABLE, "k", expression=f"{name}[1]={name}[1]*2")
    got = (await client.kv.get(C, TABLE, "k")).output.item
    assert got == {"age": 10, "ints": [1, 4, 3], "floats": [10.25, 40.5, 30.25]}


async def test_update_creates_missing_items(client, v3io_emulator) -> None:
    await client.kv.update(C, "new/table", "x", expression="SET ctr = if_not_exists(ctr, 0) + 1")
    await client.kv.update(C, "new/table", "x", expression="SET ctr = if_not_exists(ctr, 0) + 1")
    assert v3io_emulator.item(f"/{C}/new/table/x") == {"ctr": 2}


async def test_false_condition_is_400_16777244_and_changes_nothing(client, v3io_emulator) -> None:
    await client.kv.put(C, TABLE, "c", {"n": 1})
    resp = await client.kv.update(
        C, TABLE, "c", expression="n = 100", condition="n == 2", raise_for_status=NEVER
    )
    assert resp.status_code == 400
    assert json.loads(resp.body)["ErrorCode"] == 16777244
    assert b"16777244" in resp.body  # what storey's driver looks for
    assert v3io_emulator.item(f"/{C}/{TABLE}/c") == {"n": 1}
    ok = await client.kv.update(C, TABLE, "c", expression="n = 100", condition="n == 1")
    assert ok.status_code == 200
    assert v3io_emulator.item(f"/{C}/{TABLE}/c") == {"n": 100}
    # a false condition on a missing item is false too
    resp = await client.kv.update(
        C, TABLE, "nope", expression="n = 1", condition="n == 1", raise_for_status=NEVER
    )
    assert resp.status_code == 400
    assert v3io_emulator.item(f"/{C}/{TABLE}/nope") is None


async def test_alternate_expression_runs_when_the_condition_is_false(client, v3io_emulator) -> None:
    await client.kv.put(C, TABLE, "alt", {"n": 5})
    for _ in range(3):
        await client.kv.update(
            C, TABLE, "alt", expression="n = n + 1", condition="n < 6", alternate_expression="m = 1"
        )
    assert v3io_emulator.item(f"/{C}/{TABLE}/alt") == {"n": 6, "m": 1}


async def test_put_item_condition(client, v3io_emulator) -> None:
    await client.kv.put(C, TABLE, "p", {"v": 1})
    resp = await client.kv.put(C, TABLE, "p", {"v": 2}, condition="v == 7", raise_for_status=NEVER)
    assert resp.status_code == 400
    assert b"16777244" in resp.body
    await client.kv.put(C, TABLE, "p", {"v": 3}, condition="v == 1")
    assert v3io_emulator.item(f"/{C}/{TABLE}/p") == {"v": 3}


async def test_transaction_verifier_is_strictly_increasing_and_works_as_a_condition(client) -> None:
    seen = []
    for i in range(20):
        resp = await client.kv.update(C, TABLE, "v", expression=f"i = {i}")
        seen.append(verifier_numbers(resp))
    assert seen == sorted(set(seen))  # strictly increasing, no repeats
    get = await client.kv.get(C, TABLE, "v", attribute_names=["__mtime_secs", "__mtime_nsecs", "i"])
    assert verifier_numbers(get) == seen[-1]
    assert (get.output.item["__mtime_secs"], get.output.item["__mtime_nsecs"]) == seen[-1]
    fresh = get.headers["X-v3io-transaction-verifier"]
    # the verifier, sent back verbatim, is a true condition until someone else writes
    await client.kv.update(C, TABLE, "v", expression="mine = 1", condition=fresh)
    stale = await client.kv.update(
        C, TABLE, "v", expression="mine = 2", condition=fresh, raise_for_status=NEVER
    )
    assert stale.status_code == 400
    assert b"16777244" in stale.body


async def test_get_missing_item_is_404_no_such_file(client) -> None:
    resp = await client.kv.get(C, TABLE, "ghost", raise_for_status=NEVER)
    assert resp.status_code == 404
    assert json.loads(resp.body) == {
        "ErrorCode": -2,
        "ErrorMessage": f"No such file or directory: {TABLE}/ghost",
    }


async def test_star_star_returns_system_attributes(client) -> None:
    await client.kv.put(C, TABLE, "sys", {"a": 1})
    item = (await client.kv.get(C, TABLE, "sys", attribute_names=["**"])).output.item
    assert item["a"] == 1
    assert item["__name"] == "sys"
    assert {"__mtime_secs", "__mtime_nsecs", "__size", "__ctime_secs"} <= set(item)
    assert set((await client.kv.get(C, TABLE, "sys")).output.item) == {"a"}


async def test_keys_with_special_characters(client, v3io_emulator) -> None:
    await client.kv.put(C, TABLE, "k 1", {"a": 1})  # sent as k%201 behind a double slash
    await client.kv.put(C, TABLE, "dir/deeper", {"a": 2})  # a '/' in a key is a deeper path
    assert (await client.kv.get(C, TABLE, "k 1")).output.item == {"a": 1}
    assert v3io_emulator.item(f"/{C}/{TABLE}/dir/deeper") == {"a": 2}
    raw = [r for r in v3io_emulator.requests if r.function == "PutItem"]
    assert [r.path for r in raw] == [f"/{C}/{TABLE}/k 1", f"/{C}/{TABLE}/dir/deeper"]


# ------------------------------------------------------------------------------------------ GetItems
async def fill(client, n: int, table: str = TABLE) -> None:
    await asyncio.gather(
        *(client.kv.put(C, table, f"key-{i}", {"attr": i, "even": i % 2 == 0}) for i in range(n))
    )


async def test_cursor_pages_through_every_item_once() -> None:
    async with V3ioEmulator(page_size=7) as emu:
        c = v3io.aio.dataplane.Client(endpoint=emu.url, access_key="k", logger_verbosity="ERROR")
        await fill(c, 50)
        items = await c.kv.new_cursor(C, TABLE, attribute_names=["attr"]).all()
        assert sorted(i["attr"] for i in items) == list(range(50))
        pages = [r.json() for r in emu.requests if r.function == "GetItems"]
        assert len(pages) == 8  # ceil(50 / 7)
        assert all("Marker" in p for p in pages[1:])
        await c.close()


async def test_limit_filter_and_attribute_selection(client) -> None:
    await fill(client, 100)
    assert len(await client.kv.new_cursor(C, TABLE, limit=30).all()) == 30
    matched = await client.kv.new_cursor(
        C, TABLE, attribute_names=["attr"], filter_expression="attr > 89"
    ).all()
    assert sorted(i["attr"] for i in matched) == list(range(90, 100))
    assert all(set(i) == {"attr"} for i in matched)
    scan = await client.kv.scan(C, TABLE, filter_expression="even == true and attr < 10")
    assert sorted(i["attr"] for i in scan.output.items) == [0, 2, 4, 6, 8]
    assert scan.output.last


async def test_segments_partition_the_table() -> None:
    async with V3ioEmulator(page_size=5) as emu:
        c = v3io.aio.dataplane.Client(endpoint=emu.url, access_key="k", logger_verbosity="ERROR")
        await fill(c, 60)
        parts = [
            sorted(i["attr"] for i in await c.kv.new_cursor(C, TABLE, segment=s, total_segments=4).all())
            for s in range(4)
        ]
        assert sorted(v for p in parts for v in p) == list(range(60))
        for s, part in enumerate(parts):  # the oracle: the documented-as-assumed crc32 split
            assert part == sorted(i for i in range(60) if zlib.crc32(f"key-{i}".encode()) % 4 == s)
        await c.close()


async def test_sharding_key_range_scan(client) -> None:
    for user in ("u1", "u2"):
        for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
            await client.kv.put(C, "events", f"{user}.{day}", {"d": day})
    items = await client.kv.new_cursor(
        C, "events", sharding_key="u1", sort_key_range_start="2024-01-02", sort_key_range_end="2024-01-03"
    ).all()
    assert items == [{"d": "2024-01-02"}]


async def test_get_items_on_missing_table_is_404(client) -> None:
    resp = await client.kv.scan(C, "no/such/table", raise_for_status=NEVER)
    assert resp.status_code == 404


# --------------------------------------------------------------------------------------- sync client
def test_sync_client_kv(v3io_emulator_thread: V3ioEmulator) -> None:
    c = v3io.dataplane.Client(endpoint=v3io_emulator_thread.url, access_key="k", logger_verbosity="ERROR")
    try:
        items = {"bob": {"age": 42, "feature": "mustache"}, "linda": {"age": 41, "feature": "singing"}}
        for key, attrs in items.items():
            c.kv.put(container=C, table_path=TABLE, key=key, attributes=attrs)
        c.kv.update(container=C, table_path=TABLE, key="bob", expression="age = age + 1")
        assert c.kv.get(container=C, table_path=TABLE, key="bob").output.item == {
            "age": 43,
            "feature": "mustache",
        }
        scan = c.kv.scan(container=C, table_path=TABLE, filter_expression="feature == 'singing'")
        assert scan.output.items == [{"age": 41, "feature": "singing"}]
        assert len(c.kv.new_cursor(container=C, table_path=TABLE, attribute_names=["*"]).all()) == 2
        # the batch API spreads requests over the pooled connections
        for key in items:
            c.batch.kv.get(container=C, table_path=TABLE, key=key, attribute_names=["__size", "age"])
        assert [r.status_code for r in c.batch.wait()] == [200, 200]
        # legacy methods
        c.put_item(C, f"{TABLE}/tina", {"age": 14})
        assert c.get_item(C, f"{TABLE}/tina").output.item == {"age": 14}
        bad = c.kv.update(
            container=C,
            table_path=TABLE,
            key="bob",
            expression="age = 0",
            condition="age == 1",
            raise_for_status="never",
        )
        assert bad.status_code == 400
    finally:
        c.close()
