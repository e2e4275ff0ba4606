"""ReadParquet (spec STEPS.md §5.4)."""

from __future__ import annotations

import datetime as dt
import os

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from storey import FlowError, ParquetSource, ReadParquet, Reduce, build_flow
from storey._time import to_ns
from storey.errors import MissingFieldError

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def collect(source):
    return (
        build_flow([source, Reduce([], lambda acc, e: [*acc, e], full_event=True)]).run().await_termination()
    )


def write(path, table, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


def test_alias():
    assert ParquetSource is ReadParquet


def test_rows_become_dict_bodies_with_key_time_id_and_origin(tmp_path):
    times = [T0 + dt.timedelta(seconds=i) for i in range(3)]
    path = write(
        str(tmp_path / "a.parquet"),
        pa.table({"id": ["e0", "e1", "e2"], "user": ["a", "b", None], "time": times, "v": [1.5, None, 3.0]}),
    )
    events = collect(ReadParquet(path, key_field="user", time_field="time", id_field="id"))
    assert [e.body for e in events] == [
        {"id": "e0", "user": "a", "time": times[0], "v": 1.5},
        {"id": "e1", "user": "b", "time": times[1], "v": None},
        {"id": "e2", "user": None, "time": times[2], "v": 3.0},
    ]
    assert all(e.body["time"].tzinfo is UTC for e in events)
    assert [e.key for e in events] == ["a", "b", None]
    assert [e.id for e in events] == ["e0", "e1", "e2"]
    assert [e.time for e in events] == times
    assert [e.origin for e in events] == [(path, 0), (path, 1), (path, 2)]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York"])
def test_time_column_of_any_unit_and_zone(tmp_path, unit, tz):
    raw = [0, 1, 1_700_000_000]
    col = pa.array(raw, pa.timestamp(unit, tz=tz))
    path = write(str(tmp_path / "t.parquet"), pa.table({"t": col}))
    events = collect(ReadParquet(path, time_field="t"))
    factor = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    assert [e.time_ns for e in events] == [v * factor for v in raw]
    assert [to_ns(e.body["t"]) for e in events] == [v * factor for v in raw]
    assert all(e.body["t"].utcoffset() == dt.timedelta(0) for e in events)


def test_sub_microsecond_values_are_pandas_timestamps(tmp_path):
    path = write(
        str(tmp_path / "t.parquet"), pa.table({"t": pa.array([1_000, 1_001], pa.timestamp("ns", "UTC"))})
    )
    events = collect(ReadParquet(path, time_field="t"))
    assert type(events[0].body["t"]) is dt.datetime
    assert events[1].body["t"] == pd.Timestamp(1_001, unit="ns", tz="UTC")
    assert events[1].time_ns == 1_001


def test_null_time_fails_after_the_rows_before_it(tmp_path):
    times = pa.array([T0, None, T0], pa.timestamp("us", "UTC"))
    path = write(str(tmp_path / "n.parquet"), pa.table({"t": times, "v": [1, 2, 3]}))
    seen = []
    flow = build_flow([ReadParquet(path, time_field="t"), Reduce(None, lambda a, b: seen.append(b["v"]))])
    with pytest.raises(FlowError) as info:
        flow.run().await_termination()
    assert isinstance(info.value.__cause__, MissingFieldError)
    assert "row 1" in str(info.value.__cause__) and path in str(info.value.__cause__)
    assert seen == [1]


def test_columns_restrict_and_needed_fields_are_added(tmp_path):
    path = write(str(tmp_path / "c.parquet"), pa.table({"a": [1], "b": [2], "k": ["x"], "t": [T0]}))
    [event] = collect(ReadParquet(path, columns=["b"], key_field="k", time_field="t"))
    assert event.body == {"b": 2, "k": "x", "t": T0}


def test_missing_key_column_is_missing_field(tmp_path):
    path = write(str(tmp_path / "c.parquet"), pa.table({"a": [1]}))
    with pytest.raises(FlowError) as info:
        collect(ReadParquet(path, key_field="k"))
    assert isinstance(info.value.__cause__, MissingFieldError)


def test_filters_on_time_field_and_on_another_column(tmp_path):
    times = [T0 + dt.timedelta(hours=i) for i in range(5)]
    other = [None, T0, T0 + dt.timedelta(hours=9), T0, T0]
    path = write(
        str(tmp_path / "f.parquet"), pa.table({"t": times, "o": pa.array(other, pa.timestamp("us", "UTC"))})
    )
    naive_start = dt.datetime(2024, 1, 1, 1)  # naive means UTC
    events = collect(ReadParquet(path, time_field="t", start_filter=naive_start, end_filter=times[3]))
    assert [e.origin[1] for e in events] == [1, 2]
    events = collect(
        ReadParquet(path, time_field="t", filter_column="o", end_filter=T0 + dt.timedelta(hours=1))
    )
    assert [e.origin[1] for e in events] == [1, 3, 4]  # null filter values are excluded
    with pytest.raises(ValueError, match="filter_column"):
        ReadParquet(path, start_filter=T0)


def test_directory_order_hive_partitions_and_batches(tmp_path):
    root = tmp_path / "ds"
    write(str(root / "day=2" / "k=b" / "p.parquet"), pa.table({"v": [3, 4]}))
    write(str(root / "day=10" / "k=a" / "p.parquet"), pa.table({"v": [1, 2]}))
    write(str(root / "day=2" / "_tmp" / "p.parquet"), pa.table({"v": [99]}))
    events = collect(ReadParquet(str(root), batch_size=1))
    assert [e.body for e in events] == [
        {"v": 1, "day": 10, "k": "a"},
        {"v": 2, "day": 10, "k": "a"},
        {"v": 3, "day": 2, "k": "b"},
        {"v": 4, "day": 2, "k": "b"},
    ]
    assert [e.origin[1] for e in events] == [0, 1, 0, 1]
    oracle = ds.dataset(str(root), partitioning="hive").to_table()
    assert sorted(map(str, oracle.to_pylist())) == sorted(str(e.body) for e in events)


def test_memory_url_and_list_of_paths(tmp_path):
    fs = fsspec.filesystem("memory")
    for name, values in [("b.parquet", [2]), ("a.parquet", [1])]:
        with fs.open(f"/storey-pq/{name}", "wb") as f:
            pq.write_table(pa.table({"v": values}), f)
    try:
        events = collect(ReadParquet(["memory://storey-pq/b.parquet", "memory://storey-pq/a.parquet"]))
        assert [e.body["v"] for e in events] == [1, 2]
        assert events[0].origin == ("memory://storey-pq/a.parquet", 0)
    finally:
        fs.rm("/storey-pq", recursive=True)


def test_not_parquet_and_missing_path(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(FlowError) as info:
        collect(ReadParquet(str(bad)))
    assert isinstance(info.value.__cause__, ValueError) and str(bad) in str(info.value.__cause__)
    with pytest.raises(FlowError) as info:
        collect(ReadParquet(str(tmp_path / "nope")))
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_list_key_and_arrow_python_conversion(tmp_path):
    table = pa.table(
        {
            "a": ["x", "y"],
            "b": [1, 2],
            "l": [[1, 2], None],
            "d": pa.array([dt.date(2024, 1, 1), None], pa.date32()),
            "f": np.array([np.nan, 1.0]),
        }
    )
    path = write(str(tmp_path / "k.parquet"), table)
    events = collect(ReadParquet(path, key_field=["a", "b"]))
    assert [e.key for e in events] == [["x", 1], ["y", 2]]
    assert events[0].body["l"] == [1, 2] and events[1].body["l"] is None
    assert events[0].body["d"] == dt.date(2024, 1, 1)
    assert np.isnan(events[0].body["f"])


def test_nullable_timestamp_column_keeps_exact_microseconds(tmp_path):
    # regression: a null made Arrow give float64 ints, which rounded 946684800000001000 ns to ...1024
    values = [dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), None]
    path = write(str(tmp_path / "n.parquet"), pa.table({"t": pa.array(values, pa.timestamp("us", "UTC"))}))
    events = collect(ReadParquet(path))
    assert [e.body["t"] for e in events] == values
    assert type(events[0].body["t"]) is dt.datetime
