"""The same flows on every driver: same outputs, same persisted state; restart and crash recovery
(STEPS.md §9, AGGREGATIONS.md §7.3)."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from storey import (
    AggregateByKey,
    FieldAggregator,
    FlowError,
    Map,
    NoopDriver,
    RedisDriver,
    RedisError,
    Reduce,
    SlidingWindows,
    Source,
    Table,
    WriteToTable,
    build_flow,
)

S = 1_000_000_000


def _events(seed=0, n=240, keys=5):
    rnd = random.Random(seed)
    t = 1_700_000_000 * S
    out = []
    for i in range(n):
        t += rnd.randint(0, 240) * S
        tt = t - rnd.randint(0, 7200) * S if rnd.random() < 0.1 else t
        out.append((f"u{rnd.randrange(keys)}", tt, {"i": i, "v": rnd.choice([None, rnd.uniform(-5, 5)])}))
    return out


def _aggs():
    return [
        FieldAggregator(
            "a",
            "v",
            ["sum", "avg", "stddev", "min", "max", "first", "last"],
            SlidingWindows(["1h", "3h"], "10m"),
        ),
        FieldAggregator("n", "v", ["count"], SlidingWindows(["2h"], "30m"), max_value=4),
    ]


def _flow(table, extra=()):
    return build_flow(
        [
            Source(),
            *extra,
            AggregateByKey(_aggs(), table),
            WriteToTable(table, columns=["i", "v"]),
            Reduce([], lambda acc, e: [*acc, e], full_event=True),
        ]
    )


def _run(table, events, extra=()):
    c = _flow(table, extra).run()
    for key, t, body in events:
        c.emit(body, key=key, event_time=t / 1e6)
    return c.terminate(wait=True)


def _same(x, y):
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    return x == y


def _assert_outputs_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a.key, a.time_ns) == (b.key, b.time_ns)
        assert a.body.keys() == b.body.keys()
        assert all(_same(a.body[k], b.body[k]) for k in a.body), (a.body, b.body)


def _records(driver, table_path, keys):
    async def go():
        out = {k: await driver.load_key(table_path, k) for k in keys}
        await driver.close()
        return out

    return asyncio.run(go())


def _reference(events):
    driver = NoopDriver()
    out = _run(Table("t", driver), events)
    return out, _records(driver, "t", sorted({k for k, _, _ in events}))


def test_same_flow_same_outputs_and_state_on_every_driver(driver_factory):
    events = _events()
    want_out, want_records = _reference(events)
    path = driver_factory.table_path("features")
    got = _run(Table(path, driver_factory()), events)
    _assert_outputs_equal(got, want_out)
    records = _records(driver_factory(), path, sorted(want_records)) if driver_factory.persistent else None
    if records is not None:
        for key, want in want_records.items():
            got_rec = records[key]
            state = {k: v for k, v in got_rec.items() if k.startswith("_storey_a_")}
            assert state == {k: v for k, v in want.items() if k.startswith("_storey_a_")}
            assert (
                got_rec["i"] == want["i"]
                and got_rec["_storey_last_event_time_ns"] == want["_storey_last_event_time_ns"]
            )


def test_restart_continues_exactly(driver_factory):
    """A new flow on a new Table continues exactly; persistent backends get a new driver object too (the
    in-memory ones share data through the same driver object)."""
    events = _events(seed=3)
    want_out, want_records = _reference(events)
    path = driver_factory.table_path("resume")
    half = len(events) // 2
    shared = driver_factory()

    def driver():
        return driver_factory() if driver_factory.persistent else shared

    first = _run(Table(path, driver()), events[:half])
    second = _run(Table(path, driver()), events[half:])
    _assert_outputs_equal(first + second, want_out)
    records = _records(driver(), path, sorted(want_records))
    for key, want in want_records.items():
        assert {k: v for k, v in records[key].items() if k.startswith("_storey_a_")} == {
            k: v for k, v in want.items() if k.startswith("_storey_a_")
        }


@pytest.mark.redis
def test_redis_crash_mid_stream_then_replay_after_last_applied(redis_server_factory, tmp_path):
    """Kill redis-server in the middle of a flow: the flow fails with a RedisError; after a restart (AOF),
    replaying each key's events after its persisted `last_applied` gives the uninterrupted result."""
    server = redis_server_factory("--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path))
    events = _events(seed=5)
    _, want_records = _reference(events)
    kill_at = len(events) // 2

    def crash(event):  # full_event: rows go one by one, as the crash must fall between writes
        if event.body["i"] == kill_at:
            server.stop()
        return event

    driver = RedisDriver(server.url, retry_backoff_secs=0.01, max_retries=2)
    with pytest.raises(FlowError) as info:
        _run(Table("t", driver), events, extra=[Map(crash, full_event=True)])
    assert isinstance(info.value.__cause__, RedisError)
    server.start()  # same port, same AOF directory: every acknowledged write is back
    replay = _replay_after_last_applied(lambda: Table("t", RedisDriver(server.url)), events)
    assert 0 < len(replay) < len(events)
    _run(Table("t", RedisDriver(server.url)), replay)
    records = _records(RedisDriver(server.url), "t", sorted(want_records))
    for key, want in want_records.items():
        assert {k: v for k, v in records[key].items() if k.startswith("_storey_a_")} == {
            k: v for k, v in want.items() if k.startswith("_storey_a_")
        }


def _replay_after_last_applied(table_factory, events):
    """The events each key still needs after a crash: those after its persisted last applied event."""
    table = table_factory()

    async def marks():
        out = {k: await table.last_applied(k) for k in {k for k, _, _ in events}}
        await table.close()
        return out

    applied = asyncio.run(marks())
    replay = []
    for key, t, body in events:
        mark = applied.get(key)
        if mark is not None:
            last_i = max(b["i"] for k, tt, b in events if k == key and tt == mark[1])
            if body["i"] <= last_i:
                continue
        replay.append((key, t, body))
    return replay


@pytest.mark.v3io
def test_v3io_server_down_mid_stream_then_replay_after_last_applied():
    """Stop the V3IO server in the middle of a flow: FlowError(V3ioError); after it is back, replaying each
    key's events after its persisted `last_applied` gives the uninterrupted result."""
    from storey import V3ioDriver, V3ioError
    from storey.testing.v3io_emulator import V3ioEmulator

    emulator = V3ioEmulator().start()
    try:
        events = _events(seed=9)
        _, want_records = _reference(events)
        kill_at = len(events) // 2

        def crash(event):  # full_event: rows go one by one, as the crash must fall between writes
            if event.body["i"] == kill_at:
                emulator.stop()
            return event

        def driver(**kw):
            return V3ioDriver(emulator.url, access_key="k", **kw)

        with pytest.raises(FlowError) as info:
            _run(
                Table("/bigdata/feat", driver(retry_backoff_secs=0.01, max_retries=2)),
                events,
                extra=[Map(crash, full_event=True)],
            )
        assert isinstance(info.value.__cause__, V3ioError)
        emulator.start()  # same port and the in-memory data: every acknowledged write is still there
        replay = _replay_after_last_applied(lambda: Table("/bigdata/feat", driver()), events)
        assert 0 < len(replay) < len(events)
        _run(Table("/bigdata/feat", driver()), replay)
        records = _records(driver(), "/bigdata/feat", sorted(want_records))
        for key, want in want_records.items():
            assert {k: v for k, v in records[key].items() if k.startswith("_storey_a_")} == {
                k: v for k, v in want.items() if k.startswith("_storey_a_")
            }
    finally:
        emulator.stop()
