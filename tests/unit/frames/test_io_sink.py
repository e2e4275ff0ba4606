"""`storey.frames.io.OutputSink`: Parquet file, Parquet dataset and CSV targets (AGGREGATIONS.md §8.1)."""

from __future__ import annotations

import datetime as dt
import math
import os

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey import ReadCSV, Source, WriteToCSV, build_flow
from storey.frames.io import OutputSink, iter_batches
from storey.sources._arrow import rows_from_batch
from tests.unit.frames._io_oracle import assert_same_rows, stream_bodies

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "k": [f"k{i}" for i in range(start, start + n)],
            "time": pa.array([10**18 + i for i in range(start, start + n)], pa.timestamp("ns", tz="UTC")),
            "v": [float(i) / 3 for i in range(start, start + n)],
            "c": pa.array(range(start, start + n), pa.int64()),
        }
    )


def read_rows(path, **kw):
    return [r for b in iter_batches(path, **kw) for r in rows_from_batch(b.batch)]


# ------------------------------------------------------------------------------------------- Parquet file
def test_parquet_file_round_trip_in_bounded_row_groups(tmp_path):
    path = str(tmp_path / "out" / "rows.parquet")
    with OutputSink(path, batch_size=10) as sink:
        sink.write(table(25))  # split into 10-row batches
        for i in range(5):  # small writes are gathered
            sink.write(table(3, 25 + 3 * i).to_batches()[0])
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 10, 10]
    assert pq.read_table(path).equals(pa.concat_tables([table(25), table(15, 25)]))
    assert sink.rows_written == 40


def test_later_batches_are_matched_by_name_and_cast_to_the_first_schema(tmp_path):
    path = str(tmp_path / "rows.parquet")
    first = pa.table({"a": pa.array([1], pa.int64()), "b": ["x"]})
    with OutputSink(path) as sink:
        sink.write(first)
        sink.write(pa.table({"b": ["y"], "a": pa.array([2.0])}))  # reordered, float → int64 is exact
        sink.write(pa.table({"a": pa.array([3], pa.int32())}))  # b missing → null
        with pytest.raises(TypeError, match=r"column 'a' has type string.*rows\.parquet.*int64"):
            sink.write(pa.table({"a": ["2.5"], "b": ["z"]}))
        with pytest.raises(TypeError, match=r"column 'b'"):
            sink.write(pa.table({"a": [4], "b": pa.array([[1]])}))
        with pytest.raises(ValueError, match="column 'new'"):
            sink.write(pa.table({"a": [5], "new": [1]}))
    assert pq.read_table(path).to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}, {"a": 3, "b": None}]


@pytest.mark.parametrize("target", ["rows.parquet", "set/"])
def test_null_and_int_columns_are_promoted_as_csv_inputs_need(tmp_path, target):
    """A CSV column is null until a value is seen and int until a float is seen (`iter_batches`): the
    target is rewritten with the promoted types instead of failing."""
    path = f"{tmp_path}/{target}"
    batches = [
        pa.table({"k": ["a", "b"], "v": pa.array([1, 2], pa.int64()), "n": pa.nulls(2)}),
        pa.table({"k": ["c"], "v": pa.array([3], pa.int64()), "n": pa.array([True])}),
        pa.table({"k": ["d"], "v": pa.array([4.5]), "n": pa.array([False])}),
        pa.table({"k": ["e"], "v": pa.array([6], pa.int64()), "n": pa.nulls(1)}),
    ]
    with OutputSink(path, batch_size=2, rows_per_file=2) as sink:
        for b in batches:
            sink.write(b)
    got = read_rows(path)
    assert got == [
        {"k": "a", "v": 1.0, "n": None},
        {"k": "b", "v": 2.0, "n": None},
        {"k": "c", "v": 3.0, "n": True},
        {"k": "d", "v": 4.5, "n": False},
        {"k": "e", "v": 6.0, "n": None},
    ]
    assert all(type(r["v"]) is float for r in got)
    assert sink.schema == pa.schema([("k", pa.string()), ("v", pa.float64()), ("n", pa.bool_())])
    files = [str(tmp_path / "set" / n) for n in os.listdir(tmp_path / "set")] if target == "set/" else [path]
    assert all(pq.read_schema(f).equals(sink.schema) for f in files)
    assert not [n for n in os.listdir(tmp_path if target != "set/" else tmp_path / "set") if "rewrite" in n]


def test_rows_written_before_an_error_stay_readable(tmp_path):
    path = str(tmp_path / "rows.parquet")
    with pytest.raises(RuntimeError), OutputSink(path, batch_size=4) as sink:
        sink.write(table(10))
        raise RuntimeError("the engine failed")
    assert pq.read_table(path).equals(table(10))
    csv_path = str(tmp_path / "rows.csv")
    with pytest.raises(RuntimeError), OutputSink(csv_path) as sink:
        sink.write(table(3))
        raise RuntimeError("the engine failed")
    assert len(read_rows(csv_path)) == 3


def test_close_is_idempotent_and_nothing_is_created_without_a_write(tmp_path):
    path = str(tmp_path / "rows.parquet")
    sink = OutputSink(path)
    sink.close()
    sink.close()
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="closed"):
        sink.write(table(1))
    with pytest.raises(TypeError, match="Tables or RecordBatches"):
        OutputSink(path).write({"a": [1]})
    with pytest.raises(ValueError, match="batch_size"):
        OutputSink(path, batch_size=0)


def test_zero_rows_give_a_file_with_the_schema(tmp_path):
    empty = table(0)
    for name in ("rows.parquet", "rows.csv", "set/"):
        path = f"{tmp_path}/{name}"
        with OutputSink(path) as sink:
            sink.write(empty)
        assert read_rows(path) == []
    assert pq.read_schema(str(tmp_path / "rows.parquet")).names == empty.schema.names
    assert (tmp_path / "rows.csv").read_text() == "k,time,v,c\n"
    [part] = os.listdir(tmp_path / "set")
    assert pq.read_schema(str(tmp_path / "set" / part)).equals(empty.schema)


# ---------------------------------------------------------------------------------------- Parquet dataset
@pytest.mark.parametrize("existing", [False, True])
def test_dataset_directory_with_part_files_in_arrival_order(tmp_path, existing):
    directory = tmp_path / "set"
    if existing:
        directory.mkdir()
        path = str(directory)  # an existing directory is a dataset, even without a trailing '/'
    else:
        path = str(directory) + "/"
    with OutputSink(path, batch_size=4, rows_per_file=10) as sink:
        assert sink.dataset
        sink.write(table(23))
        sink.write(table(4, 23))
    names = sorted(os.listdir(directory))
    assert len(names) == 3 and all(n.startswith(f"part-{i:05d}-") for i, n in enumerate(names))
    assert [pq.ParquetFile(str(directory / n)).metadata.num_rows for n in names] == [10, 10, 7]
    assert read_rows(str(directory)) == read_rows(table(27))


def test_memory_urls(tmp_path):
    fs = fsspec.filesystem("memory")
    try:
        for url in (
            "memory://storey-sink/one.parquet",
            "memory://storey-sink/set/",
            "memory://storey-sink/r.csv",
        ):
            with OutputSink(url, batch_size=5) as sink:
                sink.write(table(12))
            assert_same_rows(read_rows(url), read_rows(table(12)) if "csv" not in url else read_rows(url))
        assert len(read_rows("memory://storey-sink/r.csv")) == 12
        assert len(fs.ls("/storey-sink/set")) == 1
        with OutputSink("memory://storey-sink/promoted.parquet") as sink:  # a rewrite through fsspec
            sink.write(pa.table({"v": [1]}))
            sink.write(pa.table({"v": [1.5]}))
        assert read_rows("memory://storey-sink/promoted.parquet") == [{"v": 1.0}, {"v": 1.5}]
        assert not [p for p in fs.ls("/storey-sink", detail=False) if "rewrite" in p]
    finally:
        fs.rm("/storey-sink", recursive=True)


# ----------------------------------------------------------------------------------------------------- CSV
ROWS = [
    {"s": "plain", "f": 0.1, "i": 1, "b": True, "t": T0, "n": None},
    {
        "s": 'a,"quoted"\nline',
        "f": 1e-300,
        "i": -(2**62),
        "b": False,
        "t": pd.Timestamp(10**18 + 1, tz="UTC"),
        "n": None,
    },
    {"s": "cr\rin", "f": float("nan"), "i": 0, "b": None, "t": T0 + dt.timedelta(microseconds=5), "n": None},
    {"s": "", "f": float("-inf"), "i": None, "b": True, "t": None, "n": None},
]


SCHEMA = pa.schema([
    ("s", pa.string()), ("f", pa.float64()), ("i", pa.int64()), ("b", pa.bool_()),
    ("t", pa.timestamp("ns", tz="UTC")), ("n", pa.null()),
])  # fmt: skip


def write_to_csv_bytes(tmp_path, rows):
    path = str(tmp_path / "stream.csv")
    controller = build_flow([Source(), WriteToCSV(path, header=True)]).run()
    for row in rows:
        controller.emit(dict(row))
    controller.terminate(wait=True)
    return open(path, "rb").read()


def test_csv_is_written_as_write_to_csv_writes_it(tmp_path):
    path = str(tmp_path / "frames.csv")
    with OutputSink(path, batch_size=3) as sink:
        sink.write(pa.Table.from_pylist(ROWS, schema=SCHEMA))
    assert open(path, "rb").read() == write_to_csv_bytes(tmp_path, ROWS)


def test_csv_round_trips_through_readcsv(tmp_path):
    path = str(tmp_path / "frames.csv")
    with OutputSink(path) as sink:
        sink.write(pa.Table.from_pylist(ROWS[:2], schema=SCHEMA))
    want = stream_bodies(ReadCSV(path, header=True, build_dict=True))
    assert_same_rows(read_rows(path), want)
    got = read_rows(path)
    assert got[1]["s"] == ROWS[1]["s"] and got[1]["f"] == 1e-300 and got[1]["t"] == ROWS[1]["t"]


def test_csv_batches_keep_their_own_types_under_the_first_header(tmp_path):
    path = str(tmp_path / "frames.csv")
    with OutputSink(path) as sink:
        sink.write(pa.table({"a": [1], "b": ["x"]}))
        sink.write(pa.table({"b": [2.5], "a": ["y"]}))
        sink.write(pa.table({"a": [None]}))
    assert open(path).read() == "a,b\n1,x\ny,2.5\n,\n"


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=True, width=64)),
        min_size=1,
        max_size=20,
    )
)
def test_floats_round_trip_exactly(tmp_path_factory, values):
    path = str(tmp_path_factory.mktemp("f") / "f.csv")
    with OutputSink(path) as sink:
        sink.write(pa.table({"f": pa.array(values, pa.float64()), "i": range(len(values))}))
    got = [r["f"] for r in read_rows(path)]
    for g, w in zip(got, values, strict=True):
        assert (g is None and w is None) or (
            float(g) == w and math.copysign(1, float(g)) == math.copysign(1, w)
        )
