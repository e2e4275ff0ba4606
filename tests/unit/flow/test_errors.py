"""The single error rule: every failure surfaces as FlowError with __cause__ (spec STEPS.md §3.4)."""

from __future__ import annotations

import asyncio

import pytest

from storey import AsyncSource, Complete, FlowError, Map, Reduce, Source, build_flow
from storey.event import Event
from storey.flow.concurrent import ConcurrentStep


def _boom_on(value):
    def fn(x):
        if x == value:
            raise ValueError(f"bad {x}")
        return x

    return fn


def test_main_chain_error_names_step_and_event_and_chains_cause():
    c = build_flow([Source(), Map(_boom_on(3), name="checker"), Reduce(0, lambda a, x: a + x)]).run()
    ev = Event(3, id="ev-3")
    for x in (1, 2):
        c.emit(x)
    c.emit(ev)
    with pytest.raises(FlowError) as info:
        c.await_termination()
    err = info.value
    assert isinstance(err.__cause__, ValueError)
    assert err.step == "checker"
    assert err.event_id == "ev-3"
    assert "'checker'" in str(err) and "'ev-3'" in str(err)
    with pytest.raises(FlowError) as again:
        c.emit(4)
    assert again.value is err


def test_error_in_a_branch_fails_the_whole_flow():
    c = build_flow(
        [
            Source(),
            [Map(_boom_on(2), name="branch"), Reduce(0, lambda a, x: a + x)],
            [Reduce(0, lambda a, x: a + x)],
        ]
    ).run()
    c.emit(1)
    c.emit(2)
    c.terminate()
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert info.value.step == "branch"


def test_error_in_async_user_function():
    async def fn(x):
        await asyncio.sleep(0)
        if x == 2:
            raise KeyError("nope")
        return x

    c = build_flow([Source(), Map(fn, name="async-map"), Complete()]).run()
    assert c.emit(1).await_result() == 1
    res = c.emit(2)
    with pytest.raises(FlowError) as info:
        res.await_result(timeout=5)
    assert info.value.step == "async-map"
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(FlowError):
        c.await_termination()


class FailingWorker(ConcurrentStep):
    async def _process(self, event):
        await asyncio.sleep(0.001)
        if event.body == 3:
            raise RuntimeError("worker broke")
        return event


def test_error_in_concurrent_worker_is_a_flow_error_and_reaches_pending_results():
    c = build_flow([Source(), FailingWorker(name="worker", max_in_flight=4), Complete()]).run()
    results = [c.emit(i) for i in range(6)]
    assert results[0].await_result(timeout=5) == 0
    with pytest.raises(FlowError) as info:
        results[3].await_result(timeout=5)
    assert info.value.step == "worker"
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(FlowError):
        c.await_termination()


def test_error_during_termination_has_no_event_id():
    class BadFlush(Map):
        async def _flush(self):
            raise OSError("disk full")

    c = build_flow([Source(), BadFlush(lambda x: x, name="flusher"), Reduce(0, lambda a, x: a + x)]).run()
    c.emit(1)
    c.terminate()
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert info.value.step == "flusher"
    assert info.value.event_id is None
    assert isinstance(info.value.__cause__, OSError)


def test_nested_flow_error_is_not_wrapped_twice():
    c = build_flow([Source(), Map(lambda x: x), Map(lambda x: x), Map(_boom_on(1), name="deep")]).run()
    c.emit(1)
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert info.value.step == "deep"
    assert not isinstance(info.value.__cause__, FlowError)


async def test_async_controller_error_surfaces_from_emit_and_termination():
    c = await build_flow([AsyncSource(), Map(_boom_on(2), name="m"), Complete()]).run()
    assert await c.emit(1, await_result=True) == 1
    with pytest.raises(FlowError) as info:
        await c.emit(2, await_result=True)
    assert info.value.step == "m"
    with pytest.raises(FlowError):
        await c.await_termination()
    with pytest.raises(FlowError):
        await c.emit(3)


def test_full_event_map_must_return_event():
    c = build_flow([Source(), Map(lambda e: e.body, full_event=True, name="fe"), Complete()]).run()
    with pytest.raises(FlowError) as info:
        c.emit(1).await_result(timeout=5)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(FlowError):
        c.await_termination()
