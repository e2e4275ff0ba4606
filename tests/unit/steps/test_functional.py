"""Map, Filter, FlatMap, Extend, MapWithState, MapClass (spec STEPS.md §2.1, §6)."""

from __future__ import annotations

import asyncio

import pytest

from storey import (
    Complete,
    Extend,
    FlatMap,
    FlowError,
    Map,
    MapClass,
    MapWithState,
    Reduce,
    Source,
    build_flow,
)
from storey.event import Event


def _run(steps, items):
    c = build_flow([Source(), *steps, Reduce([], lambda a, x: [*a, x])]).run()
    for x in items:
        c.emit(x)
    return c.terminate(wait=True)


def test_map_output_is_a_copy_with_the_same_metadata():
    c = build_flow([Source(), Map(lambda x: x + 1), Complete(full_event=True)]).run()
    src = Event(1, key="k", id="e1", headers={"h": 1})
    out = c.emit(src).await_result(timeout=5)
    assert out is not src and src.body == 1
    assert (out.body, out.key, out.id, out.headers, out.time) == (2, "k", "e1", {"h": 1}, src.time)
    c.terminate(wait=True)


def test_sync_function_returning_awaitable_is_awaited():
    async def later(x):
        await asyncio.sleep(0)
        return x * 2

    assert _run([Map(lambda x: later(x))], [1, 2]) == [2, 4]


def test_flatmap_keeps_id_key_time_and_rejects_non_iterables():
    c = build_flow(
        [Source(), FlatMap(lambda x: (x, x + 1)), Reduce([], lambda a, e: [*a, e], full_event=True)]
    ).run()
    c.emit(Event(1, key="k", id="x"))
    out = c.terminate(wait=True)
    assert [e.body for e in out] == [1, 2] and {e.id for e in out} == {"x"} and {e.key for e in out} == {"k"}
    c = build_flow([Source(), FlatMap(lambda x: 5, name="fm"), Reduce(0, lambda a, x: a)]).run()
    c.emit(1)
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert isinstance(info.value.__cause__, TypeError) and info.value.step == "fm"


def test_extend_builds_a_new_dict_and_checks_types():
    body = {"a": 1}
    assert _run([Extend(lambda b: {"b": b["a"] + 1})], [body]) == [{"a": 1, "b": 2}]
    assert body == {"a": 1}
    for bad_steps, item in (([Extend(lambda b: {"x": 1})], 5), ([Extend(lambda b: 5)], {"a": 1})):
        with pytest.raises(FlowError) as info:
            _run(bad_steps, [item])
        assert isinstance(info.value.__cause__, TypeError)


def test_fan_out_copies_isolate_branches():
    def rekey(e):
        e.key = "changed"
        return e

    c = build_flow(
        [
            Source(),
            [Map(rekey, full_event=True), Reduce([], lambda a, e: [*a, e.key], full_event=True)],
            [Reduce([], lambda a, e: [*a, e.key], full_event=True)],
        ],
    )
    ctl = c.run()
    ctl.emit(1, key="orig")
    assert ctl.terminate(wait=True) == ["changed"]
    # the second branch saw the original key: check by running it alone with its own fold
    seen = []
    ctl = build_flow(
        [
            Source(),
            [Map(rekey, full_event=True), Reduce(0, lambda a, e: a)],
            [Map(lambda e: seen.append(e.key), full_event=True)],
        ]
    ).run()
    ctl.emit(1, key="orig")
    with pytest.raises(FlowError):  # the second Map returns None with full_event=True
        ctl.await_termination()
    assert seen == ["orig"]


def test_map_with_state_threads_one_state_and_is_fresh_per_run():
    head = build_flow(
        [Source(), MapWithState(0, lambda x, s: (s + x, s + x)), Reduce([], lambda a, x: [*a, x])]
    )
    for _ in range(2):
        c = head.run()
        for i in (1, 2, 3):
            c.emit(i)
        assert c.terminate(wait=True) == [1, 3, 6]


def test_map_with_state_grouped_by_key_with_dict_state():
    state = {"a": 0, "b": 100}

    def fn(x, s):
        return s + x, s + x

    c = build_flow(
        [Source(), MapWithState(state, fn, group_by_key=True), Reduce([], lambda a, x: [*a, x])]
    ).run()
    for key, x in (("a", 1), ("b", 1), ("a", 2)):
        c.emit(x, key=key)
    assert c.terminate(wait=True) == [1, 101, 3]
    assert state == {"a": 3, "b": 101}
    c = build_flow(
        [Source(), MapWithState({}, fn, group_by_key=True, name="mws"), Reduce(0, lambda a, x: a)]
    ).run()
    c.emit(1, key="zz")
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert "'zz'" in str(info.value.__cause__) and info.value.step == "mws"


def test_map_class_filter_and_async_do():
    class Keep(MapClass):
        def __init__(self, limit, **kw):
            super().__init__(**kw)
            self.limit = limit

        async def do(self, x):
            await asyncio.sleep(0)
            if x > self.limit:
                self.filter()
            return x * 10

    assert _run([Keep(2)], [1, 2, 3, 0]) == [10, 20, 0]
