"""Termination protocol, flush order and termination results (spec STEPS.md §3.3)."""

from __future__ import annotations

from storey import Batch, Complete, Map, Reduce, Source, build_flow
from storey.flow.step import Flow


def test_default_fold_keeps_first_non_none():
    c = build_flow([Source(), Map(lambda x: x + 1), [Complete()], [Reduce(0, lambda a, x: a + x)]]).run()
    assert c.emit(1).await_result() == 2
    c.emit(5)
    assert c.terminate(wait=True) == 8


def test_custom_termination_result_fn_folds_in_outlet_order():
    seen = []

    def fold(acc, nxt):
        seen.append((acc, nxt))
        return acc + nxt

    c = build_flow(
        [
            Source(termination_result_fn=fold),
            [Reduce(1, lambda a, x: a)],
            [Reduce(10, lambda a, x: a)],
            [Reduce(100, lambda a, x: a)],
        ]
    ).run()
    assert c.terminate(wait=True) == 111
    assert seen == [(1, 10), (11, 100)]


def test_flush_happens_before_marker_is_passed_on():
    order = []

    class Recorder(Flow):
        async def _flush(self):
            order.append(("flush", self.name))

    c = build_flow(
        [Source(), Recorder(name="a"), Batch(10), Recorder(name="b"), Reduce([], lambda a, x: [*a, x])]
    ).run()
    for i in range(3):
        c.emit(i)
    assert c.terminate(wait=True) == [[0, 1, 2]]
    assert order == [("flush", "a"), ("flush", "b")]


def test_closeables_closed_once_in_walk_order():
    closed = []

    class Res:
        def __init__(self, name):
            self.name = name

        async def close(self):
            closed.append(self.name)

    class UsesRes(Flow):
        def __init__(self, res, **kw):
            super().__init__(**kw)
            self.res = res

        def _init_run(self, run):
            super()._init_run(run)
            run.add_closeable(self.res)

    r1, r2 = Res("r1"), Res("r2")
    c = build_flow([Source(), UsesRes(r1), [UsesRes(r2)], [UsesRes(r1)]]).run()
    c.terminate(wait=True)
    assert closed == ["r1", "r2"]


def test_terminate_is_idempotent_and_emit_after_terminate_raises():
    c = build_flow([Source(), Reduce(0, lambda a, x: a + x)]).run()
    c.emit(1)
    c.terminate()
    c.terminate()
    try:
        c.emit(2)
    except RuntimeError as exc:
        assert "after terminate" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("emit after terminate must raise")
    assert c.await_termination() == 1
