"""`Table` (STEPS.md §9.1, AGGREGATIONS.md §7.2-7.3).

Cache, dirty tracking, ordered writes, close paths and the aggregation hooks.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from storey.drivers import Driver, NoopDriver
from storey.errors import StoreyError
from storey.event import Event
from storey.table import LAST_EVENT_ID, LAST_EVENT_TIME_NS, STATE_PREFIX, Table, encode_key


class Spy(Driver):
    """Wraps a driver: records every call, and can delay, gate or fail writes."""

    def __init__(self, inner: Driver | None = None) -> None:
        self.inner = inner or NoopDriver()
        self.error_class = self.inner.error_class
        self.calls: list[tuple[str, Any]] = []
        self.applied: list[Any] = []  # save arguments in the order they reached the inner driver
        self.fail_saves = 0  # fail this many save_key/save_keys calls
        self.delays: list[float] = []  # per save call, popped in call order
        self.gate: asyncio.Event | None = None  # saves wait on it when set
        self.load_gate: asyncio.Event | None = None

    def saves(self) -> list[Any]:
        return [args for name, args in self.calls if name in ("save_key", "save_keys")]

    def loads(self) -> list[Any]:
        return [args for name, args in self.calls if name == "load_key"]

    async def load_schema(self, table_path: str) -> dict[str, Any] | None:
        return await self.inner.load_schema(table_path)

    async def save_schema(self, table_path: str, schema: Mapping[str, Any]) -> None:
        await self.inner.save_schema(table_path, schema)

    async def load_key(self, table_path: str, key: str, attributes: Any = "*") -> dict[str, Any] | None:
        self.calls.append(("load_key", key))
        if self.load_gate is not None:
            await self.load_gate.wait()
        return await self.inner.load_key(table_path, key, attributes)

    async def _before_save(self, name: str, args: Any) -> None:
        self.calls.append((name, args))
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_saves:
            self.fail_saves -= 1
            raise self.error_class("injected failure")
        self.applied.append(args)

    async def save_key(self, table_path: str, key: str, attributes: Mapping[str, Any]) -> None:
        await self._before_save("save_key", (key, dict(attributes)))
        await self.inner.save_key(table_path, key, attributes)

    async def save_keys(self, table_path: str, records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        await self._before_save("save_keys", [(key, dict(attrs)) for key, attrs in records])
        await self.inner.save_keys(table_path, records)

    async def close(self) -> None:
        self.calls.append(("close", None))
        await self.inner.close()


class State:
    """A minimal live aggregation state: its encoding is its counter."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def encode(self) -> bytes:
        return b"STATE" + self.n.to_bytes(8, "little")


# -- keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("u1", "u1"),
        ("", ""),
        (0, "0"),
        (-15, "-15"),
        (np.int64(7), "7"),
        (np.uint8(255), "255"),
        (("a", 1), "a.1"),
        (["a", 1], "a.1"),
        (("a", ("b", [2, 3])), "a.b.2.3"),
        ((), ""),
    ],
)
def test_encode_key(key: Any, encoded: str) -> None:
    assert encode_key(key) == encoded


@pytest.mark.parametrize("key", [None, True, np.bool_(False), 1.5, b"k", ("a", None), ("a", 2.0), object()])
def test_encode_key_refuses_other_types(key: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode key"):
        encode_key(key)


async def test_keys_are_stored_under_their_encoding(driver_factory: Any) -> None:
    driver = driver_factory()
    path = driver_factory.table_path("keys")
    table = Table(path, driver)
    for key in ["s", 12, np.int64(13), ("a", 1, "b"), ["l", 2]]:
        await table.persist_key(key, {"v": str(key)})
    await table.close()
    for encoded in ["s", "12", "13", "a.1.b", "l.2"]:
        assert (await driver.load_key(path, encoded)) is not None
    fresh = Table(path, driver)
    assert await fresh.get_or_load_key(["a", 1, "b"]) == {"v": "('a', 1, 'b')"}
    assert await fresh.get_or_load_key(("l", 2)) == {"v": "['l', 2]"}
    await fresh.close()


async def test_unencodable_keys_fail_at_persist_and_flush_after_writing_the_others() -> None:
    spy = Spy()
    table = Table("t", spy)
    table.update_key(1.5, {"a": 1})  # cached: fine
    assert table[1.5] == {"a": 1}
    table.update_key("ok", {"a": 2})
    with pytest.raises(TypeError, match=r"table 't': cannot encode key 1\.5"):
        await table.persist_key(1.5)
    with pytest.raises(TypeError, match=r"cannot encode key 1\.5"):
        await table.flush()
    assert await spy.inner.load_key("t", "ok") == {"a": 2}
    assert table.dirty_keys() == [1.5]
    with pytest.raises(TypeError, match="cannot encode key"):
        await table.get_or_load_key(2.5)


async def test_none_key_lives_in_memory_only() -> None:
    spy = Spy()
    table = Table("t", spy)
    assert await table.get_or_load_key(None) == {}
    table[None] = {"a": 1}
    table.update_key(None, {"b": 2})
    table.set_state(None, "agg", State(3))
    table.mark_state_dirty(None, "agg", "e1", 5)
    assert table.dirty_keys() == []
    assert not table.is_dirty(None)
    assert await table.get_or_load_key(None) == {"a": 1, "b": 2}
    assert await table.load_record(None) == {}
    assert await table.last_applied(None) is None
    with pytest.raises(ValueError, match="None key cannot be persisted"):
        await table.persist_key(None, {"c": 3})
    await table.flush()
    assert spy.loads() == [] and spy.saves() == []


# -- static attributes and the cache ------------------------------------------------------------------------


async def test_get_or_load_key_loads_once_and_caches_unknown_keys(driver_factory: Any) -> None:
    spy = Spy(driver_factory())
    path = driver_factory.table_path("cache")
    await spy.inner.save_key(path, "known", {"a": 1, "b": "x", "_storey_a_agg": b"blob", LAST_EVENT_ID: "e"})
    table = Table(path, spy)
    with pytest.raises(KeyError):
        table["known"]
    assert await table.get_or_load_key("known") == {"a": 1, "b": "x"}  # _storey_ attributes never returned
    assert await table.get_or_load_key("known", ["b", "zz"]) == {"b": "x"}
    assert await table.get_or_load_key("known", "a") == {"a": 1}
    assert await table.get_or_load_key("unknown") == {}
    assert table["unknown"] == {}
    assert "unknown" in table and "other" not in table
    assert await table.get_or_load_key("unknown") == {}
    assert spy.loads() == ["known", "unknown"]
    returned = await table.get_or_load_key("known")
    returned["a"] = 99  # a copy: the cache is unaffected
    assert table["known"] == {"a": 1, "b": "x"}
    await table.close()


async def test_concurrent_loads_of_one_key_hit_the_driver_once() -> None:
    spy = Spy()
    spy.load_gate = asyncio.Event()
    table = Table("t", spy)
    waiting = [asyncio.ensure_future(table.get_or_load_key("k")) for _ in range(5)]
    await asyncio.sleep(0.01)
    spy.load_gate.set()
    assert await asyncio.gather(*waiting) == [{}] * 5
    assert spy.loads() == ["k"]


async def test_setitem_and_update_key_mark_dirty_and_flush_writes(driver_factory: Any) -> None:
    driver = driver_factory()
    path = driver_factory.table_path("dirty")
    table = Table(path, driver)
    table["b"] = {"x": 1}
    table.update_key("a", {"y": 2})
    table.update_key("b", {"z": 3})
    assert table.dirty_keys() == ["b", "a"]
    assert table["b"] == {"x": 1, "z": 3}
    await table.flush()
    assert table.dirty_keys() == []
    assert await driver.load_key(path, "b") == {"x": 1, "z": 3}
    assert await driver.load_key(path, "a") == {"y": 2}
    await table.close()


async def test_writes_before_the_first_load_merge_with_storage() -> None:
    driver = NoopDriver()
    await driver.save_key("t", "k", {"stored": 1, "both": "old"})
    table = Table("t", driver)
    table.update_key("k", {"both": "new", "local": True})
    assert table["k"] == {"both": "new", "local": True}  # not loaded yet
    assert await table.get_or_load_key("k") == {"stored": 1, "both": "new", "local": True}


async def test_setitem_replaces_even_before_the_first_load() -> None:
    driver = NoopDriver()
    await driver.save_key("t", "k", {"stored": 1})
    table = Table("t", driver)
    table["k"] = {"only": 2}
    assert await table.get_or_load_key("k") == {"only": 2}
    table["k"] = {"again": 3}
    await table.flush()
    assert table["k"] == {"again": 3}
    # there is no delete: attributes no longer cached stay in storage
    assert await driver.load_key("t", "k") == {"stored": 1, "again": 3}


@pytest.mark.parametrize("name", ["_storey_x", "_storey_a_agg", LAST_EVENT_ID])
async def test_reserved_attribute_names_are_refused(name: str) -> None:
    table = Table("t", NoopDriver())
    with pytest.raises(ValueError, match=f"attribute '{name}' is reserved"):
        table["k"] = {name: 1}
    with pytest.raises(ValueError, match="reserved"):
        table.update_key("k", {"ok": 1, name: 1})
    with pytest.raises(ValueError, match="reserved"):
        await table.persist_key("k", {name: 1})
    with pytest.raises(TypeError, match="attribute names must be str"):
        table.update_key("k", {1: 1})
    with pytest.raises(TypeError, match="must be a mapping"):
        table.update_key("k", [("a", 1)])  # type: ignore[arg-type]


async def test_persist_key_writes_static_state_and_last_event_in_one_call() -> None:
    spy = Spy()
    table = Table("t", spy)
    table.update_key("k", {"static": "s"})
    table.set_state("k", "agg", State(4))
    table.mark_state_dirty("k", "agg", "event-9", 123)
    await table.persist_key("k", {"col": 1.5})
    assert spy.saves() == [
        (
            "k",
            {
                "static": "s",
                "col": 1.5,
                STATE_PREFIX + "agg": State(4).encode(),
                LAST_EVENT_ID: "event-9",
                LAST_EVENT_TIME_NS: 123,
            },
        )
    ]
    assert table.dirty_keys() == []
    await table.persist_key("k")  # nothing dirty: no driver call
    assert len(spy.saves()) == 1
    await table.persist_key("k", {"col": 2.5})  # only what changed is written
    assert spy.saves()[-1] == ("k", {"col": 2.5})


async def test_persist_key_does_not_write_other_keys() -> None:
    spy = Spy()
    table = Table("t", spy)
    table.update_key("other", {"a": 1})
    await table.persist_key("k", {"b": 2})
    assert spy.saves() == [("k", {"b": 2})]
    assert table.dirty_keys() == ["other"]


# -- ordering, coalescing and failures -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_writes_of_one_key_are_applied_in_order(seed: int) -> None:
    rng = random.Random(seed)
    spy = Spy()
    spy.delays = [rng.uniform(0, 0.004) for _ in range(200)]  # an unordered writer would reorder these
    table = Table("t", spy)
    writers = []
    for i in range(60):  # writes overlap in flight, each with its own random latency
        writers.append(asyncio.ensure_future(table.persist_key(f"k{i % 3}", {"v": i})))
        await asyncio.sleep(rng.uniform(0, 0.001))
    await asyncio.gather(*writers)
    assert len(spy.saves()) > 10
    for key in range(3):
        written = [attrs["v"] for call in spy.applied for k, attrs in _records(call) if k == f"k{key}"]
        assert written == sorted(written)
        assert (await spy.inner.load_key("t", f"k{key}"))["v"] == max(i for i in range(60) if i % 3 == key)


def _records(call: Any) -> list[tuple[str, dict[str, Any]]]:
    return call if isinstance(call, list) else [call]


async def test_pending_writes_of_one_key_coalesce() -> None:
    spy = Spy()
    spy.gate = asyncio.Event()
    table = Table("t", spy)
    first = asyncio.ensure_future(table.persist_key("k", {"v": 0}))
    await asyncio.sleep(0.01)  # the first write is in flight, held by the gate
    rest = [asyncio.ensure_future(table.persist_key("k", {"v": i, f"c{i}": i})) for i in range(1, 20)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in rest)
    spy.gate.set()
    await asyncio.gather(first, *rest)
    assert len(spy.saves()) == 2  # the 19 pending writes became one
    expected = {"v": 19, **{f"c{i}": i for i in range(1, 20)}}
    assert await spy.inner.load_key("t", "k") == expected


async def test_a_failed_write_leaves_the_key_dirty_for_the_next_flush() -> None:
    spy = Spy()
    spy.fail_saves = 1
    table = Table("t", spy)
    table.set_state("k", "agg", State(1))
    table.mark_state_dirty("k", "agg", "e1", 1)
    with pytest.raises(StoreyError, match="injected failure"):
        await table.persist_key("k", {"a": 1})
    assert table.dirty_keys() == ["k"]
    await table.flush()
    assert await spy.inner.load_key("t", "k") == {
        "a": 1,
        STATE_PREFIX + "agg": State(1).encode(),
        LAST_EVENT_ID: "e1",
        LAST_EVENT_TIME_NS: 1,
    }


async def test_a_coalesced_persist_retries_when_the_write_that_took_its_data_fails() -> None:
    spy = Spy()
    spy.gate = asyncio.Event()
    spy.fail_saves = 1
    table = Table("t", spy)
    first = asyncio.ensure_future(table.persist_key("k", {"v": 1}))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(table.persist_key("k", {"v": 2}))
    await asyncio.sleep(0.01)
    spy.gate.set()
    with pytest.raises(StoreyError, match="injected"):
        await first
    await second  # its own write retried everything the failed write had taken
    assert await spy.inner.load_key("t", "k") == {"v": 2}
    assert table.dirty_keys() == []


async def test_flush_batches_many_keys_and_raises_driver_errors() -> None:
    spy = Spy()
    table = Table("t", spy)
    for i in range(1100):
        table.update_key(f"k{i}", {"i": i})
    await table.flush()
    batches = spy.saves()
    assert [len(batch) for batch in batches] == [512, 512, 76]
    assert await spy.inner.load_key("t", "k1099") == {"i": 1099}
    table.update_key("x", {"a": 1})
    spy.fail_saves = 1
    with pytest.raises(StoreyError, match="injected"):
        await table.flush()
    assert table.dirty_keys() == ["x"]


# -- close --------------------------------------------------------------------------------------------------


async def test_close_flushes_is_idempotent_and_the_table_reopens(driver_factory: Any) -> None:
    driver = driver_factory()
    path = driver_factory.table_path("close")
    table = Table(path, driver)
    table.update_key("k", {"a": 1})
    await table.close()
    await table.close()
    assert await driver.load_key(path, "k") == {"a": 1}
    await table.persist_key("k", {"b": 2})  # the driver reopens lazily
    assert await table.get_or_load_key("k") == {"a": 1, "b": 2}
    await table.close()
    if driver_factory.persistent:
        other = Table(path, driver_factory())
        assert await other.get_or_load_key("k") == {"a": 1, "b": 2}
        await other.close()


async def test_close_waits_for_writes_in_flight() -> None:
    spy = Spy()
    spy.delays = [0.05]
    table = Table("t", spy)
    writer = asyncio.ensure_future(table.persist_key("k", {"a": 1}))
    await asyncio.sleep(0)
    await table.close()
    assert await spy.inner.load_key("t", "k") == {"a": 1}
    assert spy.calls[-1] == ("close", None)
    await writer


async def test_discarding_close_keeps_submitted_writes_and_drops_the_rest() -> None:
    spy = Spy()
    await spy.inner.save_key("t", "k", {"v": 0})
    spy.gate = asyncio.Event()
    table = Table("t", spy)
    submitted = asyncio.ensure_future(table.persist_key("k", {"v": 1}))
    await asyncio.sleep(0.01)  # in flight in the driver
    queued = asyncio.ensure_future(table.persist_key("k", {"v": 2}))  # waits behind it: never submitted
    table.update_key("other", {"w": 1})  # dirty, never submitted
    table.set_state("k", "agg", State(7))
    table.mark_state_dirty("k", "agg", "e7", 7)
    closing = asyncio.ensure_future(table.close(discard=True))
    await asyncio.sleep(0.01)
    assert not closing.done()  # waiting for the submitted write
    spy.gate.set()
    await closing
    await submitted
    with pytest.raises(StoreyError, match="discarded because the flow failed"):
        await queued
    assert await spy.inner.load_key("t", "k") == {"v": 1}
    assert await spy.inner.load_key("t", "other") is None
    assert spy.calls[-1] == ("close", None)
    # the cache was dropped: the next run sees the persisted prefix only
    assert table.dirty_keys() == [] and "k" not in table
    assert table.get_state("k", "agg") is None
    assert await table.get_or_load_key("k") == {"v": 1}
    assert await table.last_applied("k") is None


async def test_discarding_close_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenClose(Spy):
        async def close(self) -> None:
            raise StoreyError("close broke")

    spy = BrokenClose()
    spy.gate = asyncio.Event()
    spy.fail_saves = 1
    table = Table("t", spy)
    writer = asyncio.ensure_future(table.persist_key("k", {"v": 1}))
    await asyncio.sleep(0.01)
    spy.gate.set()
    await table.close(discard=True)
    with pytest.raises(StoreyError, match="injected"):
        await writer
    assert "close broke" in caplog.text


# -- background flush ---------------------------------------------------------------------------------------


async def test_background_flush_writes_dirty_keys_periodically() -> None:
    spy = Spy()
    table = Table("t", spy, flush_interval_secs=0.02)
    table.start_background_flush()
    table.start_background_flush()  # idempotent
    table.update_key("k", {"a": 1})
    for _ in range(100):
        if not table.dirty_keys():
            break
        await asyncio.sleep(0.01)
    assert await spy.inner.load_key("t", "k") == {"a": 1}
    await table.close()
    assert table._background is None


async def test_background_flush_reports_failures() -> None:
    spy = Spy()
    spy.fail_saves = 1
    errors: list[BaseException] = []
    table = Table("t", spy, flush_interval_secs=0.01)
    table.start_background_flush(on_error=errors.append)
    table.update_key("k", {"a": 1})
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert [str(e) for e in errors] == ["injected failure"]
    assert table.dirty_keys() == ["k"]
    await table.close()  # retries the key
    assert await spy.inner.load_key("t", "k") == {"a": 1}


async def test_background_flush_starts_by_itself_inside_a_loop() -> None:
    spy = Spy()
    table = Table("t", spy, flush_interval_secs=0.01)
    assert table._background is None
    table.update_key("k", {"a": 1})  # the first dirty key starts it
    assert table._background is not None
    for _ in range(100):
        if not table.dirty_keys():
            break
        await asyncio.sleep(0.01)
    assert await spy.inner.load_key("t", "k") == {"a": 1}
    await table._close_after_run(discard=False)  # the runtime's hook
    assert table._background is None
    assert spy.calls[-1] == ("close", None)


def test_background_flush_needs_a_loop_to_start_by_itself() -> None:
    table = Table("t", NoopDriver(), flush_interval_secs=0.01)
    table.update_key("k", {"a": 1})
    assert table._background is None
    asyncio.run(table.close())
    assert table.dirty_keys() == []


async def test_without_interval_there_is_no_background_flush() -> None:
    table = Table("t", NoopDriver())
    table.start_background_flush()
    assert table._background is None


@pytest.mark.parametrize("interval", [0, -1, True, "1"])
def test_invalid_flush_interval(interval: Any) -> None:
    with pytest.raises(ValueError, match="flush_interval_secs"):
        Table("t", NoopDriver(), flush_interval_secs=interval)


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="table_path"):
        Table("", NoopDriver())
    with pytest.raises(TypeError, match=r"storage must be a storey\.drivers\.Driver"):
        Table("t", {})  # type: ignore[arg-type]
    table = Table("t", NoopDriver(), partitioned_by_key=False)
    assert table.partitioned_by_key is False
    assert "Table('t'" in repr(table)


# -- aggregation hooks --------------------------------------------------------------------------------------


async def test_state_hooks_round_trip_through_the_driver(driver_factory: Any) -> None:
    driver = driver_factory()
    path = driver_factory.table_path("agg")
    table = Table(path, driver)
    assert table.get_state("k", "agg") is None
    record = await table.load_record("k")
    assert record == {}
    state = State(0)
    table.set_state("k", "agg", state)
    assert not table.is_dirty("k")
    for i in range(1, 4):
        state.n += i
        table.mark_state_dirty("k", "agg", f"e{i}", i * 1000)
    table.set_state("k", "other", State(100))
    assert table.is_dirty("k")
    assert await table.last_applied("k") == ("e3", 3000)
    assert [key for key, _ in table.states("agg")] == ["k"]
    await table.close()
    # only the dirty state was written, with the last event, in the same record
    stored = await driver.load_key(path, "k")
    assert stored == {STATE_PREFIX + "agg": State(6).encode(), LAST_EVENT_ID: "e3", LAST_EVENT_TIME_NS: 3000}
    # the cached record follows this Table's own writes
    assert table.cached_record("k") == stored
    fresh = Table(path, driver)
    assert fresh.cached_record("k") is None
    assert await fresh.last_applied("k") == ("e3", 3000)
    assert (await fresh.load_record("k"))[STATE_PREFIX + "agg"] == State(6).encode()
    assert await fresh.get_or_load_key("k") == {}
    await fresh.close()


async def test_load_record_is_read_only_cached_and_refreshable() -> None:
    spy = Spy()
    await spy.inner.save_key("t", "k", {"a": 1, STATE_PREFIX + "agg": b"v1"})
    table = Table("t", spy)
    record = await table.load_record("k")
    with pytest.raises(TypeError):
        record["a"] = 2  # type: ignore[index]
    await table.load_record("k")
    assert len(spy.loads()) == 1
    await spy.inner.save_key("t", "k", {"a": 5, STATE_PREFIX + "agg": b"v2"})  # another process writes
    table.update_key("k", {"local": 1})
    assert (await table.load_record("k"))[STATE_PREFIX + "agg"] == b"v1"
    refreshed = await table.load_record("k", refresh=True)
    assert refreshed[STATE_PREFIX + "agg"] == b"v2"
    assert await table.get_or_load_key("k") == {"a": 5, "local": 1}  # dirty local attributes are kept
    assert len(spy.loads()) == 2


async def test_mark_state_dirty_needs_a_live_state() -> None:
    table = Table("t", NoopDriver())
    with pytest.raises(KeyError, match="call set_state first"):
        table.mark_state_dirty("k", "agg")
    table.set_state(["k", 1], "agg", State())
    table.mark_state_dirty(("k", 1), "agg")  # list keys are cached as tuples
    assert table.get_state(["k", 1], "agg") is table.get_state(("k", 1), "agg")
    assert table.dirty_keys() == [("k", 1)]
    assert await table.last_applied(("k", 1)) is None  # no event recorded


async def test_schema_goes_through_the_driver() -> None:
    driver = NoopDriver()
    table = Table("t", driver)
    assert await table.load_schema() is None
    await table.save_schema({"storey_schema": 1})
    assert await driver.load_schema("t") == {"storey_schema": 1}
    assert await Table("t", driver).load_schema() == {"storey_schema": 1}


async def test_tables_sharing_a_driver_share_data() -> None:
    driver = NoopDriver()
    one, two = Table("t", driver), Table("t", driver)
    await one.persist_key("k", {"a": 1})
    assert await two.get_or_load_key("k") == {"a": 1}
    await one.close()
    await two.persist_key("k", {"b": 2})  # driver closed by `one`, reopened lazily
    assert await driver.load_key("t", "k") == {"a": 1, "b": 2}


async def test_mark_states_dirty_stays_o1_and_marks_again_after_each_write() -> None:
    """Repeated marks of the same names only record the event; after a write (or a failed write) the next
    mark makes the key dirty again with every state and the latest event."""
    spy = Spy()
    table = Table("t", spy)
    names = ("a", "b")
    states = {name: State(0) for name in names}
    for name, state in states.items():
        table.set_state("k", name, state)

    def Ev(i: int) -> Event:
        return Event({}, id=f"e{i}")

    for i in range(3):
        states["a"].n += 1
        table.mark_states_dirty("k", names, Ev(i), i)
    assert table.dirty_keys() == ["k"] and await table.last_applied("k") == ("e2", 2)
    await table.flush()
    assert not table.is_dirty("k")
    table.mark_states_dirty("k", names, Ev(3), 3)
    assert table.dirty_keys() == ["k"]
    spy.fail_saves = 1
    with pytest.raises(StoreyError):
        await table.flush()
    assert table.is_dirty("k")
    table.mark_states_dirty("k", names, Ev(4), 4)
    await table.flush()
    written = [record for _, record in _records(spy.saves()[-1])]
    want = {STATE_PREFIX + "a": State(3).encode(), STATE_PREFIX + "b": State(0).encode()}
    assert written == [{**want, LAST_EVENT_ID: "e4", LAST_EVENT_TIME_NS: 4}]
    assert [record for _, record in _records(spy.saves()[0])] == [
        {**want, LAST_EVENT_ID: "e2", LAST_EVENT_TIME_NS: 2}
    ]
    table.mark_states_dirty(None, names, Ev(5), 5)  # the None key: never dirty
    assert not table.is_dirty(None)


async def test_load_records_equal_load_record_of_each_key(driver_factory: Any) -> None:
    """`Table.load_records` (one `Driver.load_keys` call) gives what `load_record` gives key by key, over every
    driver: stored, missing, repeated, list and None keys; the records are then cached."""
    driver = driver_factory()
    path = driver_factory.table_path("many")
    stored = {"a": {"x": 1, STATE_PREFIX + "agg": b"\x00\x01"}, ("t", 2): {"y": None}, 7: {"z": 2.5}}
    for key, attrs in stored.items():
        await driver.save_key(path, encode_key(key), attrs)
    keys = ["a", "missing", ["t", 2], None, "a", 7, ("t", 2)]
    got = await Table(path, driver).load_records(keys)
    one_by_one = Table(path, driver)
    assert [dict(r) for r in got] == [dict(await one_by_one.load_record(k)) for k in keys]  # type: ignore[arg-type]
    assert dict(got[0]) == stored["a"] and dict(got[1]) == {} and dict(got[3]) == {}
    spy = Spy(driver)
    table = Table(path, spy)
    await table.load_records(keys)
    assert sorted(spy.loads()) == sorted(["a", "missing", "t.2", "7"])  # each key read once
    assert [dict(r) for r in await table.load_records(keys[::-1])] == [dict(r) for r in got[::-1]]
    assert len(spy.loads()) == 4  # cached
    await one_by_one.close()
    await table.close()


class _FailOn(Spy):
    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    async def load_key(self, table_path: str, key: str, attributes: Any = "*") -> dict[str, Any] | None:
        if key == self.bad:
            self.calls.append(("load_key", key))
            raise self.error_class(f"cannot load {key}")
        return await super().load_key(table_path, key, attributes)


async def test_load_records_give_each_failing_key_its_error_and_load_the_others() -> None:
    spy = _FailOn("bad")
    await spy.inner.save_key("t", "ok", {"a": 1})
    table = Table("t", spy)
    ok, bad, unencodable = await table.load_records(["ok", "bad", 1.5])
    assert dict(ok) == {"a": 1}  # type: ignore[arg-type]
    assert isinstance(bad, StoreyError) and "cannot load bad" in str(bad)
    assert isinstance(unencodable, TypeError) and "1.5" in str(unencodable)
    assert table.cached_record("bad") is None  # not cached: a later load tries again
    with pytest.raises(StoreyError, match="cannot load bad"):
        await table.load_record("bad")
    assert spy.loads().count("bad") == 2


async def test_load_records_wait_for_a_load_in_flight_instead_of_reading_again() -> None:
    spy = Spy()
    await spy.inner.save_key("t", "k", {"a": 1})
    spy.load_gate = asyncio.Event()
    table = Table("t", spy)
    single = asyncio.ensure_future(table.load_record("k"))
    await asyncio.sleep(0)
    many = asyncio.ensure_future(table.load_records(["k", "other"]))
    await asyncio.sleep(0)
    assert not many.done()
    spy.load_gate.set()
    assert dict(await single) == {"a": 1}
    k, other = await many
    assert dict(k) == {"a": 1} and dict(other) == {}  # type: ignore[arg-type]
    assert sorted(spy.loads()) == ["k", "other"]


class _St:
    def __init__(self, v: int) -> None:
        self.v = v

    def encode(self) -> bytes:
        return str(self.v).encode()


async def test_mark_board_ids_from_a_source_are_drawn_once_when_first_needed() -> None:
    """A board row whose id comes from a source (a batch's row metadata) asks the source for it only when the
    table needs it (a write or `last_applied`), once; the id then stays and the source is let go."""
    from storey.table import MarkBoard

    class Source:
        def __init__(self) -> None:
            self.asked: list[int] = []

        def row_id(self, r: int, fresh: Any) -> str:
            self.asked.append(r)
            return f"{next(fresh)[:4]}-row{r}"

    spy = Spy()
    table = Table("t", spy)
    board = MarkBoard(["agg"])
    source = Source()
    for key in ("a", "b"):
        table.set_state(key, "agg", _St(1))
        board.add_row()
    board.sources[:2] = [source, source]
    board.at[:2] = [7, 9]
    board.times[:2] = [70, 90]
    table.mark_board(board, ["a", "b"], [0, 1])
    assert source.asked == []
    got = await table.last_applied("b")
    assert got is not None and got[0].endswith("-row9") and got[1] == 90 and source.asked == [9]
    assert await table.last_applied("b") == got and source.asked == [9]  # drawn once
    await table.flush()
    assert source.asked == [9, 7] and board.sources[0] is None and board.sources[1] is None
    stored = await Table("t", spy.inner).load_records(["a", "b"])
    assert [r[LAST_EVENT_ID] for r in stored] == [board.ids[0], got[0]]  # type: ignore[index]


async def test_mark_board_rows_are_the_keys_last_events_until_another_mark_replaces_them() -> None:
    """`MarkBoard` (the batch lane's column-wise marks): attached keys become dirty in the given order and
    persist the board's current id/time; a write clears ``fresh`` (the writer marks again); a per-event mark
    detaches the key, and the board no longer speaks for it."""
    from storey.table import MarkBoard

    spy = Spy()
    table = Table("t", spy)
    board = MarkBoard(["agg"])
    for key in ("a", "b", "c"):
        table.set_state(key, "agg", _St(1))
        assert board.add_row() == board.rows - 1
    board.ids[:3] = ["ia", "ib", "ic"]
    board.times[:3] = [10, 20, 30]
    table.mark_board(board, ["c", "a"], [2, 0])
    assert table.dirty_keys() == ["c", "a"] and board.fresh[:3].tolist() == [True, False, True]
    board.ids[0], board.times[0] = "ia2", 11  # the writer's cheap path: only the columns change
    assert await table.last_applied("a") == ("ia2", 11)
    await table.flush()
    stored = Table("t", spy.inner)
    a, b, c = await stored.load_records(["a", "b", "c"])
    assert (a[LAST_EVENT_ID], a[LAST_EVENT_TIME_NS], c[LAST_EVENT_ID]) == ("ia2", 11, "ic")  # type: ignore[index]
    assert dict(b) == {}  # type: ignore[arg-type]
    assert not board.fresh[:3].any() and table.dirty_keys() == []
    assert await table.last_applied("c") == ("ic", 30)  # still the board's after the write
    table.mark_board(board, ["a"], [0])
    assert table.dirty_keys() == ["a"] and board.fresh[0]
    table.mark_states_dirty("a", ["agg"], Event({"x": 1}, id="ev"), 99)  # the per-event path
    assert not board.fresh[0]
    board.ids[0] = "ignored"
    assert await table.last_applied("a") == ("ev", 99)
    await table.flush()
    assert (await Table("t", spy.inner).load_record("a"))[LAST_EVENT_ID] == "ev"
    n = 300  # rows beyond the first arrays
    for i in range(n):
        board.add_row()
    assert board.rows == 3 + n and min(len(board.ids), len(board.times), len(board.fresh)) >= 3 + n
    assert board.ids[:3].tolist() == ["ignored", "ib", "ic"] and board.times[:3].tolist() == [11, 20, 30]


def test_board_ids_are_drawn_from_an_endless_stream_of_distinct_uuid4s() -> None:
    import uuid

    from storey.table import _FreshIds

    stream = _FreshIds()
    ids = [next(stream) for _ in range(700)]  # more than one draw of 256
    assert len(set(ids)) == 700
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).hex == i for i in ids)
