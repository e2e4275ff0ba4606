"""DataframeSource (spec STEPS.md §5.5)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from storey import DataframeSource, FlowError, Reduce, build_flow
from storey._time import to_ns
from storey.errors import MissingFieldError

UTC = dt.UTC


def collect(source):
    return (
        build_flow([source, Reduce([], lambda acc, e: [*acc, e], full_event=True)]).run().await_termination()
    )


def test_labels_are_kept_exactly_and_range_index_is_dropped():
    df = pd.DataFrame({"user id": ["a", "b"], "2x": [1, 2], 3: [0.5, np.nan]})
    events = collect(DataframeSource(df))
    assert [list(e.body) for e in events] == [["user id", "2x", 3]] * 2
    assert events[0].body == {"user id": "a", "2x": 1, 3: 0.5}
    assert math.isnan(events[1].body[3])
    assert [e.origin for e in events] == [(None, 0), (None, 1)]


def test_named_index_levels_are_added_first_unnamed_dropped():
    df = pd.DataFrame({"k": ["a", "b"], "d": [1, 2], "v": [3, 4]}).set_index(["k", "d"])
    assert [e.body for e in collect(DataframeSource(df))] == [
        {"k": "a", "d": 1, "v": 3},
        {"k": "b", "d": 2, "v": 4},
    ]
    df = pd.DataFrame({"v": [1]}, index=pd.Index(["x"]))
    assert [e.body for e in collect(DataframeSource(df))] == [{"v": 1}]


def test_index_name_colliding_with_a_column_raises():
    df = pd.DataFrame({"v": [1]}, index=pd.Index(["x"], name="v"))
    with pytest.raises(ValueError, match="same name"):
        DataframeSource(df)


def test_key_time_id_columns_and_synonyms():
    times = pd.to_datetime(
        ["2024-01-01T00:00:00.000000001", "2024-01-02T00:00:00"], utc=True, format="ISO8601"
    )
    df = pd.DataFrame({"k": ["a", "b"], "t": times, "i": ["e1", "e2"]})
    for source in (
        DataframeSource(df, key_column="k", time_column="t", id_column="i"),
        DataframeSource(df, key_field="k", time_field="t", id_field="i"),
    ):
        events = collect(source)
        assert [e.key for e in events] == ["a", "b"]
        assert [e.id for e in events] == ["e1", "e2"]
        assert [e.time_ns for e in events] == [to_ns(t) for t in times]
        assert isinstance(events[0].body["t"], pd.Timestamp)  # values keep their pandas types
    with pytest.raises(TypeError, match="synonym"):
        DataframeSource(df, key_column="k", key_field="k")


def test_naive_datetime_column_is_utc():
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])})
    [event] = collect(DataframeSource(df, time_column="t"))
    assert event.time == dt.datetime(2024, 1, 1, tzinfo=UTC)


def test_nat_time_fails_with_missing_field_after_earlier_rows():
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-01", None, "2024-01-03"]), "v": [1, 2, 3]})
    seen = []
    flow = build_flow([DataframeSource(df, time_column="t"), Reduce(None, lambda a, b: seen.append(b["v"]))])
    with pytest.raises(FlowError) as info:
        flow.run().await_termination()
    assert isinstance(info.value.__cause__, MissingFieldError)
    assert "row 1" in str(info.value.__cause__)
    assert seen == [1]


def test_several_dataframes_in_order_and_missing_key_column():
    a = pd.DataFrame({"v": [1, 2]})
    b = pd.DataFrame({"v": [3]})
    events = collect(DataframeSource([a, b]))
    assert [(e.body["v"], e.origin) for e in events] == [(1, (None, 0)), (2, (None, 1)), (3, (None, 0))]
    with pytest.raises(FlowError) as info:
        collect(DataframeSource(a, key_column="k"))
    assert isinstance(info.value.__cause__, MissingFieldError)


def test_list_key_and_many_rows():
    n = 10_000
    df = pd.DataFrame({"a": np.arange(n) % 3, "b": np.arange(n)})
    events = collect(DataframeSource(df, key_column=["a", "b"]))
    assert len(events) == n
    assert events[-1].key == [(n - 1) % 3, n - 1]
    assert events[-1].origin == (None, n - 1)


async def test_run_async():
    df = pd.DataFrame({"v": [1, 2, 3]})
    assert await build_flow([DataframeSource(df), Reduce(0, lambda a, b: a + b["v"])]).run_async() == 6
