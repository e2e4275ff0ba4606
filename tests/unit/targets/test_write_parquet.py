"""WriteToParquet (spec STEPS.md §8.2) and its round trip through ReadParquet."""

from __future__ import annotations

import datetime as dt
import math
import os
import re

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import FlowError, Map, ParquetTarget, ReadParquet, Reduce, Source, WriteToParquet, build_flow

UTC = dt.UTC
PART = re.compile(r"^part-(\d{5})-[0-9a-f]{32}\.parquet$")


def run(writer, bodies, *, keys=None, times=None, before=None, after=None):
    steps = [Source()]
    if before is not None:
        steps.append(before)
    steps.append(writer)
    if after is not None:
        steps.append(after)
    c = build_flow(steps).run()
    for i, body in enumerate(bodies):
        c.emit(body, key=None if keys is None else keys[i], event_time=None if times is None else times[i])
    return c.terminate(wait=True)


def read_back(path, **kw):
    return (
        build_flow([ReadParquet(path, **kw), Reduce([], lambda acc, b: [*acc, b])]).run().await_termination()
    )


def test_alias():
    assert ParquetTarget is WriteToParquet


def test_single_file_appends_every_batch_in_order(tmp_path):
    path = str(tmp_path / "sub" / "out.parquet")
    run(WriteToParquet(path, max_events=3), [{"i": i, "s": str(i)} for i in range(10)])
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 4  # 3 + 3 + 3 + 1, all in one file
    assert pf.read().to_pylist() == [{"i": i, "s": str(i)} for i in range(10)]
    assert os.listdir(tmp_path / "sub") == ["out.parquet"]


def test_everything_is_written_at_termination_by_default(tmp_path):
    path = str(tmp_path / "out.parquet")
    run(WriteToParquet(path), [{"i": i} for i in range(5)])
    assert pq.ParquetFile(path).metadata.num_row_groups == 1


def test_directory_target_one_part_file_per_batch(tmp_path):
    root = tmp_path / "dir"
    run(WriteToParquet(str(root), max_events=2), [{"i": i} for i in range(5)])
    names = sorted(os.listdir(root))
    assert [PART.match(n).group(1) for n in names] == ["00000", "00001", "00002"]
    assert sorted(r["i"] for r in read_back(str(root))) == list(range(5))


def test_hive_partitions(tmp_path):
    root = str(tmp_path / "hive")
    bodies = [
        {"country": c, "year": y, "v": i}
        for i, (c, y) in enumerate([("fr", 2023), ("us", 2024), ("fr", 2023)])
    ]
    run(WriteToParquet(root, partition_cols=["country", "year"]), bodies)
    assert sorted(os.listdir(root)) == ["country=fr", "country=us"]
    assert os.listdir(os.path.join(root, "country=fr")) == ["year=2023"]
    file = os.listdir(os.path.join(root, "country=fr", "year=2023"))[0]
    assert PART.match(file)
    assert pq.read_schema(os.path.join(root, "country=fr", "year=2023", file)).names == ["v"]
    back = read_back(root)
    assert back == [
        {"v": 0, "country": "fr", "year": 2023},
        {"v": 2, "country": "fr", "year": 2023},
        {"v": 1, "country": "us", "year": 2024},
    ]
    oracle = ds.dataset(root, partitioning="hive").to_table().to_pylist()
    assert sorted(map(str, oracle)) == sorted(map(str, back))


def test_partition_on_event_attribute_and_dot_parquet_with_partitions_is_a_directory(tmp_path):
    root = str(tmp_path / "by_key.parquet")
    run(WriteToParquet(root, columns=["v"], partition_cols=["$key"]), [{"v": 1}, {"v": 2}], keys=["a", "b"])
    assert sorted(os.listdir(root)) == ["key=a", "key=b"]
    assert sorted((r["key"], r["v"]) for r in read_back(root)) == [("a", 1), ("b", 2)]


def test_time_column_is_timestamp_ns_utc(tmp_path):
    path = str(tmp_path / "t.parquet")
    times = [dt.datetime(2024, 1, 1, tzinfo=UTC), pd.Timestamp("2024-01-01T00:00:00.000000001", tz="UTC")]
    run(WriteToParquet(path, columns=["$time", "v"]), [{"v": 1}, {"v": 2}], times=times)
    table = pq.read_table(path)
    assert table.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert table.column("time").cast(pa.int64()).to_pylist() == [1704067200 * 10**9, 1704067200 * 10**9 + 1]


def test_index_columns_are_the_pandas_index(tmp_path):
    path = str(tmp_path / "i.parquet")
    run(WriteToParquet(path, index_cols=["k"], columns=["v"]), [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    df = pd.read_parquet(path)
    assert list(df.index.names) == ["k"]
    assert df.to_dict("index") == {"a": {"v": 1}, "b": {"v": 2}}


def test_list_bodies_with_index_cols_are_aligned(tmp_path):
    path = str(tmp_path / "l.parquet")
    run(
        WriteToParquet(path, index_cols=["k"], columns=["a", "$key", "b"]),
        [["i0", 1, 2], ["i1", 3, 4]],
        keys=["x", "y"],
    )
    df = pd.read_parquet(path)
    assert df.reset_index().to_dict("records") == [
        {"k": "i0", "a": 1, "key": "x", "b": 2},
        {"k": "i1", "a": 3, "key": "y", "b": 4},
    ]


def test_list_bodies_without_columns_fail(tmp_path):
    with pytest.raises(FlowError) as info:
        run(WriteToParquet(str(tmp_path / "x.parquet")), [[1, 2]])
    assert isinstance(info.value.__cause__, ValueError)


def test_schema_fixed_by_first_batch(tmp_path):
    path = str(tmp_path / "s.parquet")
    # a later int batch is cast to the first batch's double
    run(WriteToParquet(path, max_events=1), [{"v": 1.5}, {"v": 2}])
    assert pq.read_table(path).column("v").to_pylist() == [1.5, 2.0]
    # an impossible cast names the column; the first batch stays readable
    path = str(tmp_path / "s2.parquet")
    with pytest.raises(FlowError) as info:
        run(WriteToParquet(path, max_events=1), [{"v": 1, "w": 7}, {"v": 1, "w": "x"}])
    assert isinstance(info.value.__cause__, TypeError)
    assert "'w'" in str(info.value.__cause__)
    assert pq.read_table(path).to_pylist() == [{"v": 1, "w": 7}]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("target", ["file.parquet", "dir"])
def test_nothing_accepted_is_lost_when_a_later_event_fails(tmp_path, where, target):
    path = str(tmp_path / target)
    k = 4

    def boom(body):
        if body["i"] == k:
            raise RuntimeError("boom")
        return body

    with pytest.raises(FlowError):
        run(WriteToParquet(path), [{"i": i} for i in range(10)], **{where: Map(boom)})
    written = sorted(r["i"] for r in read_back(path))
    assert written == list(range(k if where == "before" else k + 1))


def test_timeout_secs_synonym_writes_while_running(tmp_path):
    import time

    root = tmp_path / "t"
    c = build_flow([Source(), WriteToParquet(str(root), flush_after_seconds=0.1)]).run()
    c.emit({"v": 1})
    deadline = time.monotonic() + 5
    while not (root.exists() and os.listdir(root)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(os.listdir(root)) == 1
    c.terminate(wait=True)
    with pytest.raises(TypeError, match="synonym"):
        WriteToParquet("x", timeout_secs=1, flush_after_seconds=2)


def test_events_forwarded_unchanged(tmp_path):
    got = run(
        WriteToParquet(str(tmp_path / "f.parquet")),
        [{"a": 1}],
        keys=["k"],
        after=Reduce([], lambda acc, e: [*acc, (e.key, e.body)], full_event=True),
    )
    assert got == [("k", {"a": 1})]


def test_memory_urls():
    fs = fsspec.filesystem("memory")
    try:
        run(WriteToParquet("memory://storey-wpq/one.parquet", max_events=1), [{"v": 1}, {"v": 2}])
        run(WriteToParquet("memory://storey-wpq/dir", partition_cols=["p"]), [{"p": 1, "v": 3}])
        assert [r["v"] for r in read_back("memory://storey-wpq/one.parquet")] == [1, 2]
        assert read_back("memory://storey-wpq/dir") == [{"v": 3, "p": 1}]
    finally:
        fs.rm("/storey-wpq", recursive=True)


_values = {
    "i": st.integers(-(2**63), 2**63 - 1),
    "f": st.floats(allow_nan=True),
    "s": st.text(max_size=5),
    "b": st.booleans(),
    "t": st.datetimes(
        min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.fixed_dictionaries({k: st.one_of(st.none(), v) for k, v in _values.items()}),
        min_size=1,
        max_size=15,
    ),
    batch=st.integers(1, 20),
)
def test_round_trip_through_read_parquet(tmp_path, rows, batch):
    path = str(tmp_path / "rt.parquet")
    for v in _values:  # the first batch fixes the schema: give every column a value in the first row
        if rows[0][v] is None:
            rows[0][v] = {"i": 0, "f": 0.0, "s": "", "b": False, "t": dt.datetime(2000, 1, 1, tzinfo=UTC)}[v]
    run(WriteToParquet(path, max_events=batch), rows)
    back = read_back(path)
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert set(got) == set(want)
        for name, b in want.items():
            a = got[name]
            if isinstance(b, float) and math.isnan(b):
                assert math.isnan(a)
            else:
                assert a == b and type(a) is type(b)
