"""`prefetched`: a background producer, items and its error in order, stopped and settled on close."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.sources._reading import prefetched


class Boom(Exception):
    pass


def produce(items, fail_at, log):
    try:
        for i, item in enumerate(items):
            if i == fail_at:
                raise Boom(i)
            log.append(threading.current_thread().name)
            yield item
    finally:
        log.append("closed")


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.integers()), fail_at=st.none() | st.integers(0, 20), depth=st.integers(1, 3))
def test_items_then_error_in_order(items, fail_at, depth):
    log = []
    got = []
    if fail_at is not None and fail_at < len(items):
        with pytest.raises(Boom) as info:
            for x in prefetched(produce(items, fail_at, log), depth):
                got.append(x)
        assert info.value.args == (fail_at,)
        assert got == items[:fail_at]
    else:
        got = list(prefetched(produce(items, fail_at, log), depth))
        assert got == items
    assert log[-1] == "closed"  # the producer is settled once the consumer is done
    assert set(log[:-1]) <= {"storey-prefetch"}


def test_closing_early_stops_the_producer():
    log = []
    gen = prefetched(produce(range(10**9), None, log), 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert log[-1] == "closed"
    assert len(log) <= 3 + 2 + 2  # taken, queued, and at most one in hand
