"""Emitted events on the batch lane (storey.flow.runtime.execute, storey.flow.batch._Emitted) and the
lock-free `ThreadInbox`: the same outputs, keys, times, ids, results and errors as the per-event path and
plain Python; exactly-once, per-thread-ordered delivery from several emitting threads; the bounded buffer."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey import (
    AsyncSource,
    Choice,
    Complete,
    Event,
    Filter,
    FlatMap,
    FlowError,
    Map,
    MissingFieldError,
    Reduce,
    Source,
    build_flow,
)
from storey.flow.batch import EventBatch
from storey.flow.runtime import TERMINATE, Run, ThreadInbox, execute

T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


class Bad(Exception):
    pass


# ------------------------------------------------------------------------------------ chains and oracle
def step_fn(kind, arg):
    if kind == "map":
        return lambda b: b + arg
    if kind == "filter":
        return lambda b: b % arg != 0
    if kind == "flat":
        return lambda b: [b + j for j in range(b % arg)]

    def fail(b):
        if b == arg:
            raise Bad(f"value {arg}")
        return b

    return fail


def make_steps(chain):
    cls = {"map": Map, "fail": Map, "filter": Filter, "flat": FlatMap}
    return [cls[kind](step_fn(kind, arg), name=f"s{n}") for n, (kind, arg) in enumerate(chain)]


class Failed(Exception):
    pass


def oracle(values, chain):
    """Plain Python, one event through every step before the next: outputs as (value, row), failure."""
    out = []

    def push(v, i, n):
        if n == len(chain):
            out.append((v, i))
            return
        kind, arg = chain[n]
        if kind == "map":
            push(v + arg, i, n + 1)
        elif kind == "filter":
            if v % arg != 0:
                push(v, i, n + 1)
        elif kind == "flat":
            for j in range(v % arg):
                push(v + j, i, n + 1)
        else:
            if v == arg:
                raise Failed(f"s{n}", i)
            push(v, i, n + 1)

    try:
        for i, v in enumerate(values):
            push(v, i, 0)
    except Failed as f:
        return out, f.args
    return out, None


def make_events(values):
    return [Event(v, key=f"k{v % 3}", time=T0_MS + i, id=f"id{i}") for i, v in enumerate(values)]


def run_feed(steps, events, per_event, source=None):
    """Run one feed batch of `events` then TERMINATE through ``source → steps → sink``.

    Returns (records, error); a record is (body, key, time_ns, id) seen by a full-event sink step.
    `per_event` forces the per-event path (as when results are requested)."""
    sink = []
    tail = [
        Map(lambda e: (sink.append((e.body, e.key, e.time_ns, e.id)), e)[1], full_event=True, name="sink"),
        Reduce(0, lambda a, _: a + 1),
    ]
    head = build_flow([source or Source(), *steps, *tail])
    run = Run(head)
    run.results = per_event

    async def feed():
        yield list(events)
        yield TERMINATE

    try:
        result = asyncio.run(execute(run, feed()))
    except FlowError as exc:
        return sink, exc
    assert result == len(sink)
    return sink, None


op = st.one_of(
    st.tuples(st.just("map"), st.integers(-3, 3)),
    st.tuples(st.just("filter"), st.integers(2, 4)),
    st.tuples(st.just("flat"), st.integers(1, 3)),
    st.tuples(st.just("fail"), st.integers(0, 14)),
)


@settings(max_examples=120, deadline=None)
@given(values=st.lists(st.integers(0, 12), max_size=300), chain=st.lists(op, max_size=4))
def test_lane_equals_per_event_path_and_plain_python(values, chain):
    expected, failure = oracle(values, chain)
    events = make_events(values)
    for per_event in (False, True):
        records, error = run_feed(make_steps(chain), make_events(values), per_event)
        assert [(b, k, t, i) for b, k, t, i in records] == [
            (v, events[i].key, events[i].time_ns, f"id{i}") for v, i in expected
        ]
        if failure is None:
            assert error is None
        else:
            step, row = failure
            assert error is not None and error.step == step and error.event_id == f"id{row}"
            assert str(error).startswith(f"step {step!r} failed on event 'id{row}': Bad(")
            assert isinstance(error.__cause__, Bad)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(0, 12), max_size=200), chain=st.lists(op, max_size=3))
def test_copies_share_the_lazily_drawn_id_of_their_emitted_event(values, chain):
    chain = [c for c in chain if c[0] != "fail"]
    expected, _ = oracle(values, chain)
    records, error = run_feed(make_steps(chain), [Event(v) for v in values], per_event=False)
    assert error is None
    by_row = {}
    for (_, row), (_, _, _, i) in zip(expected, records, strict=True):
        by_row.setdefault(row, set()).add(i)
    assert all(len(ids) == 1 for ids in by_row.values())
    firsts = [next(iter(ids)) for ids in by_row.values()]
    assert len(set(firsts)) == len(firsts)


def test_lane_is_taken_steps_see_the_whole_batch_in_turn():
    log = []
    steps = [Map(lambda b: (log.append(("m", b)), b)[1]), Filter(lambda b: (log.append(("f", b)), True)[1])]
    run_feed(steps, make_events([1, 2, 3]), per_event=False)
    assert log == [("m", 1), ("m", 2), ("m", 3), ("f", 1), ("f", 2), ("f", 3)]
    log.clear()
    steps = [Map(lambda b: (log.append(("m", b)), b)[1]), Filter(lambda b: (log.append(("f", b)), True)[1])]
    run_feed(steps, make_events([1, 2, 3]), per_event=True)
    assert log == [("m", 1), ("f", 1), ("m", 2), ("f", 2), ("m", 3), ("f", 3)]


def test_untouched_batch_hands_on_the_emitted_events_and_derived_ones_are_copies():
    events = make_events([5, 6, 7])
    batch = EventBatch.of_events(events)
    assert batch.events() == events and all(a is b for a, b in zip(batch.events(), events, strict=True))
    assert batch.event(1) is events[1]
    assert batch.keys() == ["k2", "k0", "k1"]
    assert batch.times_ns() == [e.time_ns for e in events]
    assert (batch.meta.key(2), batch.meta.time_ns(2)) == ("k1", events[2].time_ns)
    derived = batch.derive([60, 61, 70], [1, 1, 2])
    out = derived.events()
    assert [(e.body, e.key, e.time_ns, e.id) for e in out] == [
        (60, "k0", events[1].time_ns, "id1"),
        (61, "k0", events[1].time_ns, "id1"),
        (70, "k1", events[2].time_ns, "id2"),
    ]
    assert all(e is not f for e in out for f in events)
    assert derived.keys() == ["k0", "k0", "k1"] and derived.times_ns() == [e.time_ns for e in out]
    assert [e.body for e in events] == [5, 6, 7]  # the emitted events are not changed
    prefix = batch.derive([50], None)  # a step's accepted rows before a failure
    assert [(e.body, e.id) for e in prefix.events()] == [(50, "id0")] and prefix.keys() == ["k2"]


def test_choice_complete_and_fan_out_after_the_lane():
    evens, odds, both = [], [], []
    flow = build_flow(
        [
            Source(),
            Map(lambda b: b * 10),
            Choice(
                [
                    (Reduce([], lambda a, b: (evens.append(b), a)[1]), lambda b: b % 20 == 0),
                    (Reduce([], lambda a, b: (odds.append(b), a)[1]), lambda b: b % 20 != 0),
                ]
            ),
        ]
    )
    c = flow.run()
    for i in range(50):
        c.emit(i)
    c.terminate(wait=True)
    assert evens == [i * 10 for i in range(50) if i % 2 == 0]
    assert odds == [i * 10 for i in range(50) if i % 2 == 1]
    c = build_flow(
        [Source(), Map(lambda b: b + 1), [Reduce(0, lambda a, b: a + b)], [Map(both.append), Complete()]]
    ).run()
    for i in range(100):
        assert c.emit(i, return_awaitable_result=False) is None
    assert c.terminate(wait=True) == sum(range(1, 101))
    assert both == list(range(1, 101))


# ----------------------------------------------------------------------------------------------- results
@settings(max_examples=40, deadline=None)
@given(wants=st.lists(st.booleans(), min_size=1, max_size=300))
def test_results_mixed_with_events_without_results(wants):
    c = build_flow(
        [
            Source(),
            Map(lambda b: b * 2),
            Filter(lambda b: b % 3 != 0),
            [Complete()],
            [Reduce(0, lambda a, b: a + b)],
        ]
    ).run()
    results = [c.emit(i, return_awaitable_result=w) for i, w in enumerate(wants)]
    assert c.terminate(wait=True) == sum(i * 2 for i in range(len(wants)) if (i * 2) % 3 != 0)
    for i, (w, r) in enumerate(zip(wants, results, strict=True)):
        if not w:
            assert r is None
        else:
            assert r.await_result(5) == (i * 2 if (i * 2) % 3 != 0 else None)


def test_complete_by_default_and_after_a_lane_phase():
    c = build_flow([Source(), Map(lambda b: b + 1), Complete()]).run()
    assert [c.emit(i).await_result(5) for i in range(20)] == list(range(1, 21))
    c.terminate(wait=True)
    c = build_flow([Source(), Map(lambda b: b + 1), Complete(), Reduce(0, lambda a, b: a + b)]).run()
    for i in range(500):
        c.emit(i, return_awaitable_result=False)
    assert c.emit(1000, return_awaitable_result=True).await_result(5) == 1001
    results = [c.emit(i, return_awaitable_result=i % 2 == 0) for i in range(100)]
    assert c.terminate(wait=True) == sum(range(1, 501)) + 1001 + sum(range(1, 101))
    assert [r.await_result(5) for r in results if r is not None] == [i + 1 for i in range(0, 100, 2)]


async def test_async_source_lane_and_results():
    c = await build_flow(
        [AsyncSource(), Map(lambda b: b * 3), [Complete()], [Reduce(0, lambda a, b: a + b)]]
    ).run()
    for i in range(200):
        await c.emit(i)
    assert await c.emit(7, await_result=True) == 21
    await c.terminate()
    await c.terminate()
    assert await c.await_termination() == 3 * sum(range(200)) + 21


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("j", [0, 1, 37, 99])
def test_failure_on_event_j_fails_the_run_after_the_rows_before_it(j):
    got = []

    def fn(b):
        if b == j:
            raise Bad("boom")
        return b

    c = build_flow([Source(), Map(fn, name="boom"), Map(got.append), Reduce(0, lambda a, b: a + 1)]).run()
    events = [Event(i, id=f"e{i}") for i in range(100)]
    for ev in events:
        try:
            c.emit(ev)
        except FlowError:
            break
    with pytest.raises(FlowError) as info:
        c.terminate(wait=True)
    err = info.value
    assert err.step == "boom" and err.event_id == f"e{j}" and isinstance(err.__cause__, Bad)
    assert str(err) == f"step 'boom' failed on event 'e{j}': Bad('boom')"
    assert got == list(range(j))
    with pytest.raises(FlowError):
        c.emit(1)


@pytest.mark.parametrize("per_event", [False, True])
def test_failure_in_the_feed_batch_settles_pending_results_and_names_the_event(per_event):
    events = make_events(list(range(10)))
    records, error = run_feed([Map(step_fn("fail", 4), name="f")], events, per_event)
    assert [r[0] for r in records] == [0, 1, 2, 3]
    assert str(error) == "step 'f' failed on event 'id4': Bad('value 4')"
    c = build_flow([Source(), Map(step_fn("fail", 4), name="f"), Complete()]).run()
    results = [c.emit(i) for i in range(10)]
    with pytest.raises(FlowError) as info:
        c.terminate(wait=True)
    assert [r.await_result(5) for r in results[:4]] == [0, 1, 2, 3]
    for r in results[4:]:
        with pytest.raises(FlowError) as again:
            r.await_result(5)
        assert again.value is info.value


@pytest.mark.parametrize("per_event", [False, True])
def test_key_and_time_fields_on_the_lane_and_a_missing_field(per_event):
    bodies = [{"k": f"u{i % 4}", "t": T0_MS + i, "v": i} for i in range(30)]
    records, error = run_feed(
        [],
        [Event(b, id=f"id{i}") for i, b in enumerate(bodies)],
        per_event,
        source=Source(key_field="k", time_field="t"),
    )
    assert error is None
    assert [(r[1], r[2]) for r in records] == [(b["k"], (T0_MS + i) * 10**6) for i, b in enumerate(bodies)]
    broken = [*bodies[:12], {"t": T0_MS, "v": -1}, *bodies[12:]]
    events = [Event(b, id=f"id{i}") for i, b in enumerate(broken)]
    records, error = run_feed([], events, per_event, source=Source(key_field="k", time_field="t", name="src"))
    assert [r[0] for r in records] == bodies[:12]
    assert error.step == "src" and error.event_id == "id12" and isinstance(error.__cause__, MissingFieldError)


# --------------------------------------------------------------------------------- threads and the buffer
@pytest.mark.parametrize("buffer_size", [1, 2, 3, 4, 1024])
def test_several_emitting_threads_exactly_once_in_per_thread_order(buffer_size):
    n_threads, n = 4, 3000
    c = build_flow([Source(buffer_size=buffer_size), Reduce([], lambda a, b: (a.append(b), a)[1])]).run()
    start = threading.Barrier(n_threads)

    def produce(t):
        start.wait()
        for i in range(n):
            c.emit((t, i))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = c.terminate(wait=True)
    assert len(got) == n_threads * n
    for t in range(n_threads):
        assert [i for tt, i in got if tt == t] == list(range(n))


def test_thread_inbox_stress_exactly_once_with_a_slow_consumer():
    inbox = ThreadInbox(3)
    n_threads, n = 5, 2000
    got = []

    async def consume():
        run = Run(build_flow([Source(), Reduce(0, lambda a, b: a)]))
        try:
            async for batch in inbox.batches(run):
                if batch is TERMINATE:
                    return
                got.extend(batch)
                if len(got) % 7 == 0:
                    await asyncio.sleep(0.0005)  # let producers block on the full queue
        finally:
            run.head._active_run = None

    def produce(t):
        for i in range(n):
            inbox.put((t, i))

    consumer = threading.Thread(target=asyncio.run, args=(consume(),))
    consumer.start()
    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    inbox.put_terminate()
    consumer.join(30)
    assert not consumer.is_alive()
    assert sorted(got) == sorted((t, i) for t in range(n_threads) for i in range(n))
    for t in range(n_threads):
        assert [i for tt, i in got if tt == t] == list(range(n))


@pytest.mark.parametrize("buffer_size", [1, 2, 3, 4])
def test_emit_blocks_while_the_buffer_is_full(buffer_size):
    gate = threading.Event()
    entered = threading.Event()

    def hold(b):
        entered.set()
        gate.wait(10)
        return b

    c = build_flow([Source(buffer_size=buffer_size), Map(hold), Reduce(0, lambda a, b: a + 1)]).run()
    done = []

    def produce():
        for i in range(50):
            c.emit(i)
            done.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    assert entered.wait(10)
    time.sleep(0.2)
    # the flow holds one drained batch (at most buffer_size events), the queue at most buffer_size more
    assert producer.is_alive()
    assert buffer_size <= len(done) <= 2 * buffer_size
    gate.set()
    producer.join(10)
    assert not producer.is_alive() and len(done) == 50
    assert c.terminate(wait=True) == 50


def test_terminate_is_idempotent_and_emit_after_terminate_raises():
    c = build_flow([Source(), Reduce(0, lambda a, b: a + b)]).run()
    for i in range(10):
        c.emit(i)
    c.terminate()
    c.terminate()
    with pytest.raises(RuntimeError, match="after terminate"):
        c.emit(1)
    assert c.terminate(wait=True) == 45
    assert c.await_termination() == 45


def test_an_idle_flow_still_delivers_single_events_promptly():
    seen = threading.Event()
    c = build_flow([Source(), Map(lambda b: seen.set()), Reduce(0, lambda a, b: a + 1)]).run()
    time.sleep(0.05)  # the loop is asleep on its waiter
    c.emit(1)
    assert seen.wait(5)
    assert c.terminate(wait=True) == 1
