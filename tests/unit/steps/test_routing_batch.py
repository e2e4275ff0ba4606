"""Choice, Batch, Complete and Reduce (spec STEPS.md §6, §8.2)."""

from __future__ import annotations

import time

import pytest

from storey import Batch, Choice, Complete, Map, Reduce, Source, build_flow


def _collect(name=None):
    return Reduce([], lambda a, x: [*a, x], name=name)


def test_choice_routes_to_first_match_then_default_without_copies():
    small, big, rest = _collect("small"), _collect("big"), _collect("rest")
    folded = []

    def fold(acc, nxt):
        folded.append(nxt)
        return acc

    ch = Choice([(small, lambda x: x < 3), (big, lambda x: x > 7), (small, lambda x: x == 5)], default=rest)
    c = build_flow([Source(), Map(lambda x: x, termination_result_fn=fold), ch]).run()
    for i in range(10):
        c.emit(i)
    c.terminate(wait=True)
    assert small._acc == [0, 1, 2, 5] and big._acc == [8, 9] and rest._acc == [3, 4, 6, 7]


def test_choice_without_default_drops_and_settles_none():
    c = build_flow([Source(), Choice([(Complete(), lambda x: x > 0)])]).run()
    assert c.emit(-1, return_awaitable_result=True).await_result(timeout=5) is None
    assert c.emit(1).await_result(timeout=5) == 1
    c.terminate(wait=True)


def test_batch_by_count_and_remainder_with_first_entry_time():
    c = build_flow(
        [Source(), Batch(3), Reduce([], lambda a, e: [*a, (e.body, e.time)], full_event=True)]
    ).run()
    for i in range(7):
        c.emit(i, event_time=1000 * (i + 1))
    out = c.terminate(wait=True)
    assert [b for b, _ in out] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [t.timestamp() for _, t in out] == [1.0, 4.0, 7.0]


def test_batch_wall_clock_timeout():
    c = build_flow([Source(), Batch(4, 0.2), _collect()]).run()
    for i in range(3):
        c.emit(i)
    time.sleep(0.6)
    for i in range(3, 10):
        c.emit(i)
    assert c.terminate(wait=True) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]


def test_batch_without_limits_is_one_batch_and_full_event_entries():
    c = build_flow(
        [Source(), Batch(full_event=True), Reduce([], lambda a, b: [*a, [e.body for e in b]])]
    ).run()
    for i in range(5):
        c.emit(i)
    assert c.terminate(wait=True) == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("kwargs", [{"max_events": 0}, {"timeout_secs": 0}, {"timeout_secs": -1}])
def test_batch_validation(kwargs):
    with pytest.raises(ValueError):
        Batch(**kwargs)


def test_batch_flush_after_seconds_synonym():
    assert Batch(flush_after_seconds=2)._timeout_secs == 2
    with pytest.raises(TypeError, match="synonym"):
        Batch(timeout_secs=1, flush_after_seconds=2)


def test_reduce_async_fn_and_deepcopy_of_initial_value():
    async def add(acc, x):
        acc.append(x)
        return acc

    init = []
    head = build_flow([Source(), Reduce(init, add)])
    for _ in range(2):
        c = head.run()
        c.emit(1)
        assert c.terminate(wait=True) == [1]
    assert init == []
