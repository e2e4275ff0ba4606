"""Graph building and validation (spec STEPS.md §2)."""

from __future__ import annotations

import pytest

from storey import Batch, Choice, Filter, Flow, Map, Reduce, Source, build_flow


def _collect():
    return Reduce([], lambda acc, x: [*acc, x])


def test_nested_lists_fan_out_from_the_current_step():
    src, a, b, c, d, e = (
        Source(),
        Map(lambda x: x),
        Map(lambda x: x),
        Map(lambda x: x),
        Map(lambda x: x),
        _collect(),
    )
    head = build_flow([src, a, [b, c], [d], e])
    assert head is src
    assert src._outlets == [a]
    assert a._outlets == [b, d, e]
    assert b._outlets == [c]


def test_to_chains_and_returns_the_outlet():
    a, b, c = Source(), Map(lambda x: x), _collect()
    assert a.to(b).to(c) is c
    assert a._outlets == [b] and b._outlets == [c]


@pytest.mark.parametrize("steps", [[], [Source(), []]])
def test_empty_lists_raise(steps):
    with pytest.raises(ValueError, match="non-empty"):
        build_flow(steps)


def test_source_must_be_head():
    with pytest.raises(ValueError, match="must be the head"):
        build_flow([Source(), Map(lambda x: x), Source()]).run()


def test_cycle_is_rejected_at_run():
    src, a, b = Source(), Map(lambda x: x), Map(lambda x: x)
    src.to(a).to(b).to(a)
    with pytest.raises(ValueError, match="cycle"):
        src.run()


def test_terminal_step_rejects_outlets():
    with pytest.raises(ValueError, match="terminal step"):
        _collect().to(Map(lambda x: x))


def test_subflow_cannot_run():
    sub = build_flow([Map(lambda x: x), _collect()])
    assert not hasattr(sub, "run")


def test_running_twice_concurrently_is_an_error_and_rerun_is_fresh():
    head = build_flow([Source(), Batch(3), _collect()])
    c = head.run()
    with pytest.raises(RuntimeError, match="already running"):
        head.run()
    for i in range(4):
        c.emit(i)
    assert c.terminate(wait=True) == [[0, 1, 2], [3]]
    c = head.run()
    c.emit(9)
    assert c.terminate(wait=True) == [[9]]


def test_diamond_receives_each_event_once_per_path_and_terminates_once():
    closes = []

    class Leaf(Reduce):
        async def _flush(self):
            closes.append(self.name)

    src, a, b = Source(), Map(lambda x: x * 10), Map(lambda x: x * 100)
    leaf = Leaf([], lambda acc, x: [*acc, x], name="leaf")
    src.to(a).to(leaf)
    src.to(b).to(leaf)
    c = src.run()
    c.emit(1)
    c.emit(2)
    assert sorted(c.terminate(wait=True)) == [10, 20, 100, 200]
    assert closes == ["leaf"]


def test_unknown_keyword_argument_suggests_a_close_match():
    with pytest.raises(TypeError, match="did you mean 'full_event'"):
        Map(lambda x: x, full_evnt=True)
    with pytest.raises(TypeError, match="did you mean 'max_events'"):
        Batch(max_event=3)


def test_choice_targets_are_its_outlets():
    t1, t2, other = _collect(), _collect(), Map(lambda x: x)
    ch = Choice([(t1, lambda x: x > 0)], default=t2)
    assert ch._outlets == [t1, t2]
    assert ch.to(t1) is t1
    with pytest.raises(ValueError, match="routes only to its targets"):
        ch.to(other)


def test_filter_is_a_flow_subclass():
    assert isinstance(Filter(bool), Flow)
