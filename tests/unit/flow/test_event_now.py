"""An event without a time is stamped now: kept as int ns, read as the aware datetime `datetime.now` gives."""

from __future__ import annotations

import datetime as dt

from storey import Reduce, Source, build_flow
from storey.event import Event


def test_time_now_is_a_whole_microsecond_aware_datetime():
    before = dt.datetime.now(dt.UTC)
    event = Event({"x": 1})
    after = dt.datetime.now(dt.UTC)
    assert event.time_ns % 1000 == 0
    t = event.time
    assert type(t) is dt.datetime and t.tzinfo is dt.UTC
    assert before <= t <= after
    assert (
        event.time_ns == (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000
    )


def test_emitted_bodies_get_now_times():
    before = dt.datetime.now(dt.UTC)
    c = build_flow([Source(), Reduce([], lambda a, e: [*a, e.time], full_event=True)]).run()
    for i in range(3):
        c.emit(i)
    times = c.terminate(wait=True)
    after = dt.datetime.now(dt.UTC)
    assert all(type(t) is dt.datetime and before <= t <= after for t in times)
    assert times == sorted(times)
