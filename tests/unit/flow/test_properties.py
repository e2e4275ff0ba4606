"""Property test: random Map/Filter/FlatMap/Batch chains equal the same computation in plain Python."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from storey import AsyncSource, Batch, Filter, FlatMap, Map, Reduce, Source, build_flow

MAPS = [lambda x: x + 1, lambda x: x * 2, lambda x: -x, lambda x: x // 3]
PREDS = [lambda x: x % 2 == 0, lambda x: x > 0, lambda x: x % 3 != 1]
FLATS = [lambda x: [x, x], lambda x: range(x % 3), lambda x: []]

op = st.one_of(
    st.tuples(st.just("map"), st.sampled_from(range(len(MAPS)))),
    st.tuples(st.just("filter"), st.sampled_from(range(len(PREDS)))),
    st.tuples(st.just("flat"), st.sampled_from(range(len(FLATS)))),
    st.tuples(st.just("batch"), st.integers(1, 5)),
    st.tuples(st.just("amap"), st.sampled_from(range(len(MAPS)))),
)


def _oracle(ops, items):
    data = list(items)
    for kind, arg in ops:
        if kind in ("map", "amap"):
            data = [MAPS[arg](x) for x in data]
        elif kind == "filter":
            data = [x for x in data if PREDS[arg](x)]
        elif kind == "flat":
            data = [y for x in data for y in FLATS[arg](x)]
        else:  # a batch, then the sum of each batch: sensitive to every batch boundary
            data = [sum(data[i : i + arg]) for i in range(0, len(data), arg)]
    return data


def _steps(ops):
    steps = []
    for kind, arg in ops:
        if kind == "map":
            steps.append(Map(MAPS[arg]))
        elif kind == "amap":
            fn = MAPS[arg]

            async def afn(x, fn=fn):
                await asyncio.sleep(0)
                return fn(x)

            steps.append(Map(afn))
        elif kind == "filter":
            steps.append(Filter(PREDS[arg]))
        elif kind == "flat":
            steps.append(FlatMap(FLATS[arg]))
        else:
            steps.extend([Batch(arg), Map(sum)])
    return steps


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=6), items=st.lists(st.integers(-50, 50), max_size=40))
def test_random_chain_equals_plain_python(ops, items):
    c = build_flow([Source(), *_steps(ops), Reduce([], lambda a, x: [*a, x])]).run()
    for x in items:
        c.emit(x)
    assert c.terminate(wait=True) == _oracle(ops, items)


@settings(max_examples=30, deadline=None)
@given(ops=st.lists(op, max_size=5), items=st.lists(st.integers(-50, 50), max_size=30))
def test_random_chain_async_controller(ops, items):
    async def main():
        c = await build_flow([AsyncSource(), *_steps(ops), Reduce([], lambda a, x: [*a, x])]).run()
        for x in items:
            await c.emit(x)
        await c.terminate()
        return await c.await_termination()

    assert asyncio.run(main()) == _oracle(ops, items)
