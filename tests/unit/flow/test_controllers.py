"""Controllers and awaitable results (spec STEPS.md §4)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from storey import (
    AsyncSource,
    Batch,
    Complete,
    Filter,
    FlowError,
    Map,
    MissingFieldError,
    Reduce,
    Source,
    build_flow,
)
from storey.event import Event


def test_awaitable_returned_only_with_complete_or_on_request():
    c = build_flow([Source(), Reduce(0, lambda a, x: a + x)]).run()
    assert c.emit(1) is None
    res = c.emit(2, return_awaitable_result=True)
    assert res.await_result(timeout=5) is None  # no Complete: settles to None when the event finished
    assert c.terminate(wait=True) == 3


def test_result_settles_to_none_when_filtered_or_batched():
    c = build_flow(
        [Source(), Filter(lambda x: x > 0), [Complete()], [Batch(10), Reduce(0, lambda a, x: a)]]
    ).run()
    assert c.emit(-1).await_result(timeout=5) is None
    assert c.emit(5).await_result(timeout=5) == 5
    c.terminate(wait=True)


def test_first_complete_wins():
    c = build_flow([Source(), [Map(lambda x: x + 1), Complete()], [Map(lambda x: x + 2), Complete()]]).run()
    assert c.emit(1).await_result(timeout=5) == 2
    c.terminate(wait=True)


def test_emitting_an_event_keeps_its_time_unless_given():
    t0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    c = build_flow([Source(), Map(lambda e: e, full_event=True), Complete(full_event=True)]).run()
    out = c.emit(Event({"a": 1}, key="k", time=t0)).await_result(timeout=5)
    assert out.time == t0 and out.key == "k"
    out = c.emit(Event({"a": 1}, time=t0), key="k2", event_time=0).await_result(timeout=5)
    assert out.key == "k2" and out.time == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    c.terminate(wait=True)


def test_key_and_time_fields_of_the_source():
    c = build_flow(
        [Source(key_field="user", time_field="ts"), Map(lambda e: (e.key, e.time), full_event=False)]
    )
    ctl = build_flow([Source(key_field="user", time_field="ts"), Complete(full_event=True)]).run()
    ev = ctl.emit({"user": "u1", "ts": "2021-05-01T00:00:00Z"}).await_result(timeout=5)
    assert ev.key == "u1" and ev.time == dt.datetime(2021, 5, 1, tzinfo=dt.UTC)
    ctl.emit({"ts": 0})  # no user field
    with pytest.raises(FlowError) as info:
        ctl.await_termination()
    assert isinstance(info.value.__cause__, MissingFieldError)
    assert c is not None


def test_emit_from_several_threads_keeps_per_thread_order():
    c = build_flow([Source(buffer_size=8), Reduce([], lambda a, x: [*a, x])]).run()

    def produce(tag):
        for i in range(300):
            c.emit((tag, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = c.terminate(wait=True)
    assert len(out) == 1200
    for tag in range(4):
        assert [i for t, i in out if t == tag] == list(range(300))


def test_await_result_timeout():
    import asyncio

    async def slow(x):
        await asyncio.sleep(0.5)
        return x

    c = build_flow([Source(), Map(slow), Complete()]).run()
    with pytest.raises(TimeoutError):
        c.emit(1).await_result(timeout=0.01)
    c.terminate(wait=True)


def test_buffer_size_must_be_positive():
    with pytest.raises(ValueError, match="buffer_size"):
        Source(buffer_size=0)


async def test_async_source_is_awaitable_and_returns_results():
    c = await build_flow([AsyncSource(), Map(lambda x: x * 3), Complete()]).run()
    assert [await c.emit(i, await_result=True) for i in range(3)] == [0, 3, 6]
    await c.terminate()
    assert await c.await_termination() is None
    with pytest.raises(RuntimeError):
        await c.emit(1)
