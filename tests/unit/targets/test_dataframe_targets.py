"""ToDataFrame and ReduceToDataFrame (spec STEPS.md §8.2)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pandas as pd
import pytest

from storey import Batch, FlowError, Reduce, ReduceToDataFrame, Source, ToDataFrame, build_flow

UTC = dt.UTC


def test_to_dataframe_replaces_batch_bodies_without_mutating_them():
    bodies = []
    c = build_flow(
        [
            Source(),
            Batch(2),
            [Reduce(None, lambda a, b: bodies.append(b))],
            [ToDataFrame(index="k", columns=["k", "v"]), Reduce([], lambda a, df: [*a, df])],
        ]
    ).run()
    for i in range(3):
        c.emit({"k": f"u{i}", "v": i, "extra": 0})
    frames = c.terminate(wait=True)
    assert [list(df.index) for df in frames] == [["u0", "u1"], ["u2"]]
    assert list(frames[0].columns) == ["v"]
    assert all(isinstance(b, list) for b in bodies)  # the other branch still sees the list


def test_reduce_to_dataframe_with_inserted_columns_and_index():
    c = build_flow(
        [
            Source(),
            ReduceToDataFrame(
                index="key",
                insert_key_column_as="key",
                insert_time_column_as="time",
                insert_id_column_as="id",
            ),
        ]
    ).run()
    c.emit(pd.Series({"a": 1}).to_dict(), key="k1", event_time=dt.datetime(2024, 1, 1, tzinfo=UTC))
    c.emit({"a": 2, "b": 3}, key="k2", event_time=dt.datetime(2024, 1, 2, tzinfo=UTC))
    df = c.terminate(wait=True)
    assert list(df.columns) == ["a", "b", "time", "id"]
    assert list(df.index) == ["k1", "k2"]
    assert df["a"].tolist() == [1, 2]
    assert df["time"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")]
    assert df["id"].map(len).tolist() == [32, 32]


def test_reduce_to_dataframe_list_bodies_with_columns():
    c = build_flow([Source(), ReduceToDataFrame(columns=["x", "y"])]).run()
    c.emit([1, 2])
    c.emit((3, 4))
    assert c.terminate(wait=True).to_dict("records") == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


def test_zero_events_give_the_requested_columns():
    c = build_flow([Source(), ReduceToDataFrame(columns=["a", "b"], insert_key_column_as="k")]).run()
    df = c.terminate(wait=True)
    assert list(df.columns) == ["a", "b", "k"] and len(df) == 0


def test_reduce_to_dataframe_rejects_other_bodies_and_is_terminal():
    c = build_flow([Source(), ReduceToDataFrame()]).run()
    c.emit(5)
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="terminal"):
        ReduceToDataFrame().to(Reduce(0, lambda a, b: a))


def test_a_second_run_starts_empty():
    flow = build_flow([Source(), ReduceToDataFrame()])
    for _ in range(2):
        c = flow.run()
        c.emit({"a": 1})
        assert len(c.terminate(wait=True)) == 1


def test_importing_the_modules_does_not_import_optional_packages():
    modules = "storey.targets.dataframe, storey.targets.files, storey.sources.csv, storey.sources.parquet"
    code = (
        f"import sys, {modules}, storey.sources.dataframe\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'fsspec') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
