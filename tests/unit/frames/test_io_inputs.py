"""`storey.frames.io.iter_batches`: every input kind gives the rows of the equivalent stream source (§8.1, §8.2)."""

from __future__ import annotations

import datetime as dt
import os

import fsspec
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey import DataframeSource, ReadCSV, ReadParquet
from storey._time import to_ns
from storey.frames.io import InputBatch, iter_batches, times_ns
from tests.unit.frames._io_oracle import assert_same_rows, frames_rows, stream_bodies

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def sample_table(n: int = 10, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ns = 1_704_067_200_000_000_000 + np.sort(rng.integers(0, 10**12, n))
    ns[::3] += 7  # sub-microsecond digits: pandas Timestamps in bodies
    amount = rng.normal(size=n)
    return pa.table(
        {
            "key": pa.array([f"k{i % 3}" for i in range(n)]),
            "time": pa.array(ns, pa.timestamp("ns", tz="UTC")),
            "amount": pa.array(amount, mask=rng.random(n) < 0.2),
            "count": pa.array(rng.integers(-5, 5, n)),
            "flag": pa.array(rng.random(n) < 0.5),
            "day": pa.array([dt.date(2024, 1, 1 + i % 28) for i in range(n)]),
        }
    )


def write_parquet(path, table, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, **kw)
    return str(path)


# ------------------------------------------------------------------------------------------- Parquet files
@pytest.mark.parametrize("batch_size", [1, 4, 65536])
def test_parquet_file_rows_equal_read_parquet(tmp_path, batch_size):
    path = write_parquet(str(tmp_path / "a.parquet"), sample_table(25), row_group_size=7)
    want = stream_bodies(ReadParquet(path, time_field="time"))
    assert_same_rows(frames_rows(path, batch_size=batch_size, time_field="time"), want)


def test_parquet_batches_carry_source_offsets_and_checked_times(tmp_path):
    table = sample_table(10)
    path = write_parquet(str(tmp_path / "a.parquet"), table, row_group_size=4)
    batches = list(iter_batches(path, batch_size=3, time_field="time"))
    assert all(b.source == path and b.lines is None and b.skipped_rows == 0 for b in batches)
    assert [b.row_offset for b in batches] == list(np.cumsum([0] + [b.num_rows for b in batches[:-1]]))
    assert max(b.num_rows for b in batches) <= 3
    got = np.concatenate([times_ns(b, "time") for b in batches])
    assert got.tolist() == table.column("time").cast(pa.int64()).to_pylist()


def test_directory_and_lists_use_read_parquet_order_and_hive_columns(tmp_path):
    root = tmp_path / "events"
    table = sample_table(30)
    ds.write_dataset(
        table.append_column("part", pa.array([i % 4 for i in range(30)], pa.int64())),
        str(root),
        format="parquet",
        partitioning=["part"],
        partitioning_flavor="hive",
    )
    write_parquet(str(root / "_SUCCESS" / "x.parquet"), table)  # ignored, as by pyarrow.dataset
    (root / ".hidden.parquet").write_bytes(b"junk")
    want = stream_bodies(ReadParquet(str(root), time_field="time"))
    got = frames_rows(str(root), time_field="time", batch_size=4)
    assert_same_rows(got, want)
    assert [r["part"] for r in got] == sorted(r["part"] for r in got)  # lexicographic 'part=0' < 'part=1'
    expected = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    assert pa.schema([(f.name, f.type) for f in got_schema(str(root))]) == pa.schema(
        [(f.name, f.type) for f in expected.schema]
    )
    # a list of paths is expanded as one ReadParquet expands it: one sorted set of files
    paths = [
        str(root / "part=3"),
        str(root / "part=0"),
        str(root / "part=1" / os.listdir(root / "part=1")[0]),
    ]
    assert_same_rows(
        frames_rows(paths, time_field="time"), stream_bodies(ReadParquet(paths, time_field="time"))
    )


def got_schema(path, **kw):
    return next(iter_batches(path, **kw)).batch.schema


def test_hive_values_that_are_not_all_int32_are_strings_and_nulls(tmp_path):
    for part in ("x=1", "x=abc", "x=__HIVE_DEFAULT_PARTITION__"):
        write_parquet(str(tmp_path / part / "f.parquet"), pa.table({"v": [1, 2]}))
    want = stream_bodies(ReadParquet(str(tmp_path)))
    got = frames_rows(str(tmp_path))
    assert_same_rows(got, want)
    assert got_schema(str(tmp_path)).field("x").type == pa.string()
    assert [r["x"] for r in got] == ["1", "1", None, None, "abc", "abc"]  # "x=_..." < "x=a..."


def test_columns_projection_adds_needed_fields_in_read_parquet_order(tmp_path):
    path = write_parquet(str(tmp_path / "a.parquet"), sample_table(5))
    schema = got_schema(
        path, columns=["amount"], time_field="time", key_fields=["key"], value_fields=["count"]
    )
    assert schema.names == ["amount", "key", "time", "count"]
    want = stream_bodies(ReadParquet(path, columns=["amount"], time_field="time", key_field="key"))
    assert_same_rows(frames_rows(path, columns=["amount"], time_field="time", key_fields=["key"]), want)


def test_memory_filesystem_urls(tmp_path):
    fs = fsspec.filesystem("memory")
    table = sample_table(12)
    with fs.open("/storey-frames-io/in/p=a/f.parquet", "wb") as f:
        pq.write_table(table.slice(0, 6), f)
    with fs.open("/storey-frames-io/in/p=b/f.parquet", "wb") as f:
        pq.write_table(table.slice(6), f)
    with fs.open("/storey-frames-io/rows.csv", "wb") as f:
        f.write(b"k,t,v\na,2024-01-01T00:00:00Z,1\nb,2024-01-01T00:00:01+01:00,2.5\n")
    try:
        url = "memory://storey-frames-io/in"
        assert_same_rows(
            frames_rows(url, time_field="time"), stream_bodies(ReadParquet(url, time_field="time"))
        )
        csv_url = "memory://storey-frames-io/rows.csv"
        want = stream_bodies(ReadCSV(csv_url, header=True, build_dict=True, timestamp_field="t"))
        assert_same_rows(frames_rows(csv_url, time_field="t"), want)
    finally:
        fs.rm("/storey-frames-io", recursive=True)


# ------------------------------------------------------------------------------------------ in-memory data
def test_arrow_table_record_batch_reader_and_iterables_equal_read_parquet(tmp_path):
    table = sample_table(20)
    path = write_parquet(str(tmp_path / "a.parquet"), table)
    want = stream_bodies(ReadParquet(path, time_field="time"))
    chunks = pa.Table.from_batches(table.to_batches(max_chunksize=6))
    inputs = {
        "table": lambda: table,
        "chunked": lambda: chunks,
        "record_batch": lambda: table.combine_chunks().to_batches()[0],
        "reader": lambda: pa.RecordBatchReader.from_batches(table.schema, chunks.to_batches()),
        "generator": lambda: (rb for rb in chunks.to_batches()),
        "tables": lambda: iter([chunks.slice(0, 7), chunks.slice(7)]),
        "polars": lambda: pl.from_arrow(table),
    }
    for name, make in inputs.items():
        batches = list(iter_batches(make(), batch_size=4, time_field="time"))
        assert {b.source for b in batches} == {"<input 0>"}, name
        offsets = [b.row_offset for b in batches]
        assert offsets == list(np.cumsum([0] + [b.num_rows for b in batches[:-1]])), name
        assert sum(b.num_rows for b in batches) == 20, name
        assert_same_rows(frames_rows(make(), batch_size=4, time_field="time"), want)


def test_several_inputs_in_the_order_given_with_their_own_offsets(tmp_path):
    t1, t2 = sample_table(5, seed=1), sample_table(7, seed=2)
    p2 = write_parquet(str(tmp_path / "b.parquet"), t2)
    batches = list(iter_batches([t1, p2, t1], batch_size=4))
    assert [(b.source, b.row_offset) for b in batches] == [
        ("<input 0>", 0),
        ("<input 0>", 4),
        (p2, 0),
        (p2, 4),
        ("<input 2>", 0),
        ("<input 2>", 4),
    ]
    rows = [r for b in batches for r in b.batch.to_pylist()]
    assert rows == t1.to_pylist() + t2.to_pylist() + t1.to_pylist()


def test_consecutive_parquet_paths_are_one_read_parquet_but_inputs_keep_their_order(tmp_path):
    pa_ = write_parquet(str(tmp_path / "a.parquet"), sample_table(3, seed=1))
    pb = write_parquet(str(tmp_path / "b.parquet"), sample_table(3, seed=2))
    table = sample_table(2, seed=3)
    order = [b.source for b in iter_batches([pb, pa_, table, pb])]
    assert order == [pa_, pb, "<input 2>", pb]


def test_pandas_equals_dataframe_source():
    n = 12
    df = pd.DataFrame(
        {
            "user id": [f"u{i % 3}" for i in range(n)],
            "time": pd.date_range("2024-01-01", periods=n, freq="37s", tz="UTC"),
            "amount": [1.5, np.nan, None, 4.0] * 3,
            "count": np.arange(n),
            "note": ["x", None] * 6,
            "naive": pd.date_range("2024-01-01", periods=n, freq="h"),
        }
    ).set_index(["user id"])
    want = stream_bodies(DataframeSource(df, time_column="time"))
    got = frames_rows(df, time_field="time", batch_size=5)
    # pandas 3 string columns hold NaN for missing values, which Arrow stores as null
    assert_same_rows(got, want, exact=False, missing=True)
    assert [r["note"] for r in got] == ["x", None] * 6
    assert list(got[0]) == ["user id", "time", "amount", "count", "note", "naive"]
    assert np.isnan(got[1]["amount"]) and np.isnan(got[2]["amount"])  # float NaN stays NaN, as in the stream
    # an unnamed index is dropped, as by DataframeSource
    plain = df.reset_index()
    assert_same_rows(frames_rows(plain), stream_bodies(DataframeSource(plain)), exact=False, missing=True)


def test_pandas_label_rules():
    with pytest.raises(TypeError, match="column label 0"):
        list(iter_batches(pd.DataFrame({0: [1]})))
    clash = pd.DataFrame({"a": [1]}, index=pd.Index([5], name="a"))
    with pytest.raises(ValueError, match="same name as a column"):
        list(iter_batches(clash))


def test_empty_inputs_contribute_no_rows(tmp_path):
    table = sample_table(0)
    path = write_parquet(str(tmp_path / "e.parquet"), table)
    assert frames_rows([table, path, pd.DataFrame({"a": []}), iter([])]) == []


def test_input_batch_is_a_small_frozen_record():
    b = InputBatch(pa.record_batch({"v": [1]}), "<input 0>", 3)
    assert (b.skipped_rows, b.lines, b.time_field, b.time_ns) == (0, None, None, None)
    with pytest.raises(AttributeError):
        b.row_offset = 4  # type: ignore[misc]


def test_argument_checks():
    table = sample_table(2)
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(table, batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        iter_batches(table, on_error="ignore")
    with pytest.raises(TypeError, match="column names"):
        iter_batches(table, key_fields=[len])
    with pytest.raises(TypeError, match="input 1 is a int"):
        iter_batches([table, 5])
    with pytest.raises(TypeError, match="an item is a str"):
        list(iter_batches(iter(["a"])))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=4),
    batch_size=st.integers(1, 12),
)
def test_arrival_order_is_input_row_order_for_any_batching(sizes, batch_size):
    tables = [
        pa.table({"i": pa.array(range(sum(sizes[:k]), sum(sizes[: k + 1])), pa.int64())})
        for k in range(len(sizes))
    ]
    got = [v for b in iter_batches(tables, batch_size=batch_size) for v in b.batch.column("i").to_pylist()]
    assert got == list(range(sum(sizes)))


def test_times_of_any_unit_zone_and_type_are_to_ns(tmp_path):
    values = [0, 1_500, 1_700_000_000]
    for type_ in (
        pa.timestamp("s"),
        pa.timestamp("ms", tz="Asia/Tokyo"),
        pa.timestamp("us", tz="UTC"),
        pa.int64(),
        pa.float64(),
    ):
        table = pa.table({"t": pa.array(values).cast(type_)})
        [batch] = iter_batches(table, time_field="t")
        assert batch.time_ns.tolist() == [to_ns(v) for v in table.column("t").to_pylist()]
