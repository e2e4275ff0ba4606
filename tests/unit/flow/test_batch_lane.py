"""The batch lane (storey.flow.batch): reader sources through Map/Filter/FlatMap/Reduce chains give exactly
what the per-event path gives, and what plain Python computes: outputs, keys, times, origins, shared ids,
errors (step, event, origin) and the rows accepted before a failure."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import (
    DataframeSource,
    Filter,
    FlatMap,
    FlowError,
    Map,
    ReadCSV,
    ReadParquet,
    Reduce,
    Source,
    build_flow,
)
from storey.flow.batch import EventBatch

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
T0_NS = int(T0.timestamp()) * 10**9


class Bad(Exception):
    pass


def make_rows(n, seed):
    rng = np.random.default_rng(seed)
    return [
        (f"k{int(k)}", int(v)) for k, v in zip(rng.integers(0, 5, n), rng.integers(0, 12, n), strict=True)
    ]


def write_source(kind, rows, tmp_path, name):
    keys = [k for k, _ in rows]
    values = [v for _, v in rows]
    times = [T0 + dt.timedelta(seconds=i) for i in range(len(rows))]
    if kind == "csv":
        path = str(tmp_path / f"{name}.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write("k,v,t\n")
            for (k, v), t in zip(rows, times, strict=True):
                f.write(f"{k},{v},{t.isoformat()}\n")
        return (lambda: ReadCSV(path, header=True, build_dict=True, key_field="k", time_field="t")), (
            lambda i: (path, i + 2)
        )
    if kind == "parquet":
        path = str(tmp_path / f"{name}.parquet")
        table = pa.table(
            {"k": keys, "v": pa.array(values, pa.int64()), "t": pa.array(times, pa.timestamp("ns", "UTC"))}
        )
        pq.write_table(table, path, row_group_size=97)
        return (lambda: ReadParquet(path, key_field="k", time_field="t")), (lambda i: (path, i))
    df = pd.DataFrame({"k": keys, "v": values, "t": pd.to_datetime(times, utc=True)})
    return (lambda: DataframeSource(df, key_field="k", time_field="t")), (lambda i: (None, i))


# --------------------------------------------------------------------------------- chains and the oracle
def body_of(row, i):
    k, v = row
    return {"k": k, "v": v, "t": T0 + dt.timedelta(seconds=i)}


def step_fn(kind, arg):
    if kind == "map":
        return lambda b: {**b, "v": b["v"] + arg}
    if kind == "filter":
        return lambda b: b["v"] % arg != 0
    if kind == "flat":
        return lambda b: [{**b, "v": b["v"] + j} for j in range(b["v"] % arg)]

    def fail(b):
        if b["v"] == arg:
            raise Bad(f"value {arg}")
        return b

    return fail


def make_steps(chain, asynchronous=()):
    steps = []
    for n, (kind, arg) in enumerate(chain):
        fn = step_fn(kind, arg)
        name = f"s{n}"
        if n in asynchronous:
            fn = _async(fn)
        cls = {"map": Map, "fail": Map, "filter": Filter, "flat": FlatMap}[kind]
        steps.append(cls(fn, name=name))
    return steps


def _async(fn):
    async def wrapper(b):
        await asyncio.sleep(0)
        return fn(b)

    return wrapper


class Failed(Exception):
    def __init__(self, step, row):
        self.step = step
        self.row = row


def oracle(rows, chain):
    """Plain Python, one row through every step before the next: (outputs as (body, row)), failure."""
    out = []

    def push(body, i, n):
        if n == len(chain):
            out.append((body, i))
            return
        kind, arg = chain[n]
        if kind == "map":
            push({**body, "v": body["v"] + arg}, i, n + 1)
        elif kind == "filter":
            if body["v"] % arg != 0:
                push(body, i, n + 1)
        elif kind == "flat":
            for j in range(body["v"] % arg):
                push({**body, "v": body["v"] + j}, i, n + 1)
        else:
            if body["v"] == arg:
                raise Failed(f"s{n}", i)
            push(body, i, n + 1)

    try:
        for i, row in enumerate(rows):
            push(body_of(row, i), i, 0)
    except Failed as f:
        return out, f
    return out, None


def run_flow(source, steps, end, per_event):
    """Run; return (records, error). `end` is 'sink' (a full-event step records events) or 'reduce'."""
    sink = []
    if end == "sink":
        tail = [
            Map(lambda e: (sink.append((e.body, e.key, e.time_ns, e.origin, e.id)), e)[1], full_event=True),
            Reduce(0, lambda a, _: a + 1),
        ]
    else:
        tail = [Reduce([], lambda a, b: (a.append(b), a)[1], name="collect")]
    graph = [source, *steps, *tail]
    if per_event:  # a fan-out at the head sends every row down the per-event path
        graph = [source, [Reduce(None, lambda a, _: None)], *steps, *tail]
    error = None
    try:
        result = build_flow(graph).run().await_termination()
    except FlowError as exc:
        error = exc
        result = None
    if end == "sink":
        assert error is not None or result == len(sink)
        return sink, error
    reduce = tail[0]
    return [(b, None, None, None, None) for b in (reduce._acc if error else result)], error


def check_ids(records):
    """Records of one source row share one id; different rows have different ids."""
    by_origin = {}
    for _, _, _, origin, i in records:
        by_origin.setdefault(origin, set()).add(i)
    assert all(len(ids) == 1 for ids in by_origin.values())
    firsts = [next(iter(ids)) for ids in by_origin.values()]
    assert len(set(firsts)) == len(firsts)


op = st.one_of(
    st.tuples(st.just("map"), st.integers(-3, 3)),
    st.tuples(st.just("filter"), st.integers(2, 4)),
    st.tuples(st.just("flat"), st.integers(1, 3)),
    st.tuples(st.just("fail"), st.integers(0, 14)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["csv", "parquet", "df"]),
    n=st.integers(0, 700),
    seed=st.integers(0, 10**6),
    chain=st.lists(op, max_size=4),
    end=st.sampled_from(["sink", "reduce"]),
)
def test_lane_equals_per_event_and_plain_python(tmp_path_factory, kind, n, seed, chain, end):
    rows = make_rows(n, seed)
    tmp = tmp_path_factory.mktemp("lane")
    make_source, origin = write_source(kind, rows, tmp, "data")
    expected, failure = oracle(rows, chain)
    for per_event in (False, True):
        records, error = run_flow(make_source(), make_steps(chain), end, per_event)
        assert [r[0] for r in records] == [b for b, _ in expected]
        if end == "sink":
            assert [(r[1], r[2], r[3]) for r in records] == [
                (rows[i][0], T0_NS + i * 10**9, origin(i)) for _, i in expected
            ]
            check_ids(records)
        if failure is None:
            assert error is None
            continue
        assert error is not None and error.step == failure.step
        path, where = origin(failure.row)
        assert f"step {failure.step!r} failed on event " in str(error)
        if path is not None:
            assert f"(file {path!r}, line/row {where})" in str(error)
        assert isinstance(error.__cause__, Bad)
        if end == "sink":  # the failing row's id is the id its earlier copies carried to the sink
            ids = {r[4] for r in records if r[3] == origin(failure.row)}
            assert ids <= {error.event_id}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["csv", "parquet", "df"]),
    n=st.integers(0, 400),
    seed=st.integers(0, 10**6),
    chain=st.lists(op, min_size=1, max_size=3),
    data=st.data(),
)
def test_async_functions_fall_back_to_the_per_event_path(tmp_path_factory, kind, n, seed, chain, data):
    rows = make_rows(n, seed)
    make_source, _ = write_source(kind, rows, tmp_path_factory.mktemp("lane"), "data")
    asynchronous = data.draw(st.sets(st.integers(0, len(chain) - 1), min_size=1))
    expected, failure = oracle(rows, chain)
    records, error = run_flow(make_source(), make_steps(chain, asynchronous), "sink", False)
    assert [r[0] for r in records] == [b for b, _ in expected]
    check_ids(records)
    assert (error is None) == (failure is None)
    if failure is not None:
        assert error.step == failure.step


def test_reduce_error_keeps_the_accumulator_of_the_accepted_rows(tmp_path):
    rows = [("a", v) for v in range(600)]
    make_source, origin = write_source("parquet", rows, tmp_path, "data")

    def add(acc, b):
        if b["v"] == 300:
            raise Bad("300")
        return acc + b["v"]

    reduce = Reduce(0, add, name="sum")
    with pytest.raises(FlowError, match=re.escape(f"(file {origin(300)[0]!r}, line/row 300)")) as info:
        build_flow([make_source(), reduce]).run().await_termination()
    assert info.value.step == "sum"
    assert reduce._acc == sum(range(300))


def test_fan_out_after_a_lane_step_goes_per_event(tmp_path):
    rows = make_rows(300, 1)
    make_source, _ = write_source("df", rows, tmp_path, "data")
    left, right = [], []
    flow = build_flow(
        [
            make_source(),
            Map(lambda b: b["v"]),
            [Map(lambda x: left.append(("l", x)) or x), Reduce(0, lambda a, _: a + 1)],
            [Map(lambda x: left.append(("r", x)) or x), Reduce(0, lambda a, _: a + 1)],
        ]
    )
    assert flow.run().await_termination() == 300
    assert left == [(side, v) for _, v in rows for side in ("l", "r")]  # each row through both branches
    assert right == []


def test_event_batch_builds_the_events_of_make_events():
    from storey.sources._reading import make_events

    bodies = [{"x": i} for i in range(5)]
    batch = EventBatch.of(
        bodies,
        ["a", "b", "c", "d", "e"],
        [1, 2, 3, 4, 5],
        "p",
        [10, 11, 12, 13, 14],
        ids=[None, "i1", None, None, "i4"],
    )
    expected = make_events(
        bodies,
        ["a", "b", "c", "d", "e"],
        [1, 2, 3, 4, 5],
        "p",
        [10, 11, 12, 13, 14],
        [None, "i1", None, None, "i4"],
    )
    got = batch.events()
    for e, x in zip(got, expected, strict=True):
        assert (e.body, e.key, e.time_ns, e.origin) == (x.body, x.key, x.time_ns, x.origin)
    assert [got[1].id, got[4].id] == ["i1", "i4"]
    derived = batch.derive(["z", "y"], [4, 4])
    batch.meta.share_ids()
    assert derived.event(0).id == derived.event(1).id == "i4"
    d2 = batch.derive(["u", "w"], [0, 0])
    assert d2.event(0).id == d2.event(1).id != batch.derive(["q"], [2]).event(0).id


@pytest.mark.parametrize("per_event", [False, True])
def test_flatmap_iterator_failing_half_way_delivers_its_first_items(tmp_path, per_event):
    rows = [("a", v) for v in range(300)]
    make_source, origin = write_source("parquet", rows, tmp_path, "data")

    def expand(b):
        yield b["v"]
        if b["v"] == 270:
            raise Bad("270")
        yield -b["v"]

    sink = []
    graph = [
        make_source(),
        FlatMap(expand, name="expand"),
        Map(lambda e: sink.append((e.body, e.id)) or e, full_event=True),
    ]
    if per_event:
        graph.insert(1, [Reduce(None, lambda a, _: None)])
    with pytest.raises(FlowError) as info:
        build_flow(graph).run().await_termination()
    assert info.value.step == "expand"
    assert f"line/row {origin(270)[1]})" in str(info.value)
    assert [b for b, _ in sink] == [x for v in range(270) for x in (v, -v)] + [270]
    assert sink[-1][1] == info.value.event_id  # the failing row's first item carried the row's id


@pytest.mark.parametrize("where", ["map", "reduce"])
@pytest.mark.parametrize("per_event", [False, True])
def test_a_flow_error_raised_by_a_function_goes_on_unchanged(tmp_path, where, per_event):
    rows = make_rows(50, 3)
    make_source, _ = write_source("df", rows, tmp_path, "data")
    raised = FlowError("mine", step="user", event_id=None)

    def fn(*args):
        if args[-1]["v"] == rows[20][1]:
            raise raised
        return args[0] if where == "reduce" else args[-1]

    steps = [Map(fn), Reduce(0, lambda a, _: a + 1)] if where == "map" else [Reduce(0, fn)]
    graph = [make_source(), *steps]
    if per_event:
        graph.insert(1, [Reduce(None, lambda a, _: None)])
    with pytest.raises(FlowError) as info:
        build_flow(graph).run().await_termination()
    assert info.value is raised
    assert raised.__cause__ is None


@pytest.mark.parametrize("where", ["step", "outlets"])
def test_a_chunk_whose_every_event_waits_does_not_nest_coroutines(where):
    """A chunk of thousands of events that each return an awaitable (first keys loading, async functions) is
    awaited event after event, not as a chain of coroutines one deeper per event (that overflowed Python's
    recursion limit)."""
    from storey.flow.runtime import TERMINATE, Run, execute
    from storey.flow.step import Flow

    class Waits(Flow):
        def _do(self, event):
            async def later():
                await asyncio.sleep(0)
                await self._emit(event)

            return later()

    steps = [Waits()] if where == "step" else [Waits(), Waits()]  # two outlets: the fan-out goes per event
    head = build_flow([Source(), *steps[:1], Reduce(0, lambda acc, _: acc + 1)])
    if where == "outlets":
        head = Source()
        head.to(steps[0]).to(Reduce(0, lambda acc, _: acc + 1))
        head.to(steps[1])
    run = Run(head)

    async def feed():
        yield EventBatch.of(list(range(5000)))
        yield TERMINATE

    assert asyncio.run(execute(run, feed())) == 5000


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_fresh_ids_are_distinct_uuid4_hex(n):
    import uuid

    from storey.event import fresh_ids

    ids = fresh_ids(n)
    assert len(ids) == n == len(set(ids))
    for i in ids:
        u = uuid.UUID(i)
        assert (u.hex, u.version, u.variant) == (i, 4, uuid.RFC_4122)


@given(st.lists(st.integers(0, 9), max_size=15), st.lists(st.integers(0, 9), max_size=15))
def test_row_ids_of_emitted_bodies_are_the_ids_their_events_carry(first, then):
    """Ids drawn through the row metadata for rows without one (twice for a row named twice, in one pass or
    two) are the ids the rows' events then carry, whichever batch over the rows builds them."""
    from storey.event import fresh_ids

    batch = EventBatch.of_bodies([{"i": i} for i in range(10)], [T0_NS] * 10)
    meta, at = batch.row_refs(np.array(first, np.int64))
    ids = [meta.row_id(r, iter(fresh_ids(1))) for r in at.tolist()]
    ids += [meta.row_id(r, iter(fresh_ids(1))) for r in then]
    drawn = dict(zip(first + then, ids, strict=True))
    assert len(set(drawn.values())) == len(drawn)  # one id per row
    assert all(drawn[j] == i for j, i in zip(first + then, ids, strict=True))
    derived = batch.derive([{"k": i} for i in range(10)], None)
    for j, i in drawn.items():
        assert batch.event(j).id == derived.event(j).id == i
    others = [batch.event(j).id for j in range(10) if j not in drawn]
    assert len(set(others) | set(ids)) == len(others) + len(drawn)


@given(
    st.lists(st.integers(0, 9), max_size=15),
    st.lists(st.integers(0, 9), max_size=5),
    st.lists(st.integers(0, 9), max_size=5),
    st.booleans(),
)
def test_row_refs_give_the_ids_the_rows_events_carry(rows, drawn_before, events_first, derived):
    """`row_refs` names rows without drawing ids: ``meta.row_id(at[i], ...)`` is the id the row's events carry,
    whether ids were drawn for some rows before, or events of some rows were built (and drew their ids)
    before the id is asked for, on the batch or on a batch derived from it."""
    from storey.event import fresh_ids

    batch = EventBatch.of_bodies([{"i": i} for i in range(10)], [T0_NS] * 10)
    meta, at = batch.row_refs(np.array(rows, np.int64))
    before = [meta.row_id(r, iter(fresh_ids(1))) for r in drawn_before]
    assert at.tolist() == rows
    later = batch.derive([{"k": i} for i in range(10)], None) if derived else batch
    early = [later.event(j).id for j in events_first]  # events built (ids drawn) before the marks ask
    ids = [meta.row_id(r, iter(fresh_ids(1))) for r in at.tolist()]
    assert ids == [batch.event(j).id for j in rows] == [later.event(j).id for j in rows]
    assert before == [batch.event(j).id for j in drawn_before]
    assert early == [batch.event(j).id for j in events_first]
    assert len({batch.event(j).id for j in range(10)}) == 10


def test_row_refs_of_a_derived_batch_name_its_source_rows():
    """The rows of a batch derived from some rows of another are those rows."""
    from storey.event import fresh_ids

    batch = EventBatch.of_bodies([{"i": i} for i in range(10)], [T0_NS] * 10)
    derived = batch.derive([{"k": 1}, {"k": 2}], [7, 3])
    meta, at = derived.row_refs(np.array([1, 0], np.int64))
    assert at.tolist() == [3, 7]
    assert [meta.row_id(r, iter(fresh_ids(1))) for r in at.tolist()] == [batch.event(3).id, batch.event(7).id]
