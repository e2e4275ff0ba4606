"""`storey.frames.aggregate`: output format, metrics, options and errors (spec AGGREGATIONS.md §8.1–8.4, 8.8)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storey import (
    FieldAggregator,
    FieldEquals,
    FixedWindows,
    MissingFieldError,
    NoopDriver,
    SlidingWindows,
    Table,
)
from storey.aggregations.emit import EmitAfterMaxEvent, EmitAfterPeriod
from storey.errors import PerformanceWarning
from storey.frames import aggregate, check_parity
from tests.unit.frames._streams import ALL_TEN, assert_tables_equal

H = 3_600_000
W = SlidingWindows(["1h", "2h"], "10m")
ALL = FieldAggregator("a", "x", ALL_TEN, W)
COUNT = FieldAggregator(
    "n", "s", ["count"], FixedWindows(["30m", "1h"]), aggr_filter=FieldEquals("s", "fail")
)
CAPPED = FieldAggregator("m", "x", ["count", "sum", "sqr", "min", "max", "first", "last"], W, max_value=2.5)


def _events(n=12):
    return pa.table(
        {
            "k": ["a", "b", "a", "a"] * (n // 4),
            "t": pa.array([i * 600_000 for i in range(n)], pa.int64()),
            "x": pa.array([None if i == 2 else float(i) for i in range(n)], pa.float64()),
            "s": ["fail", "ok", "ok"] * (n // 3),
        }
    )


def _metrics(table):
    return json.loads(table.schema.metadata[b"storey.metrics"])


def test_columns_types_and_metrics():
    out = aggregate(_events(), [ALL, COUNT, CAPPED], key="k", time_field="t")
    features = [*ALL.feature_names, *COUNT.feature_names, *CAPPED.feature_names]
    assert out.schema.names == [*features, "k", "t", "x", "s"]
    assert out.schema.field("a_count_1h").type == pa.int64()
    assert out.schema.field("n_count_1h").type == pa.int64()
    assert out.schema.field("m_count_1h").type == pa.float64()  # a float max_value
    assert out.schema.field("a_avg_2h").type == pa.float64()
    assert out.schema.field("t").type == pa.int64() and out.schema.field("s").type == pa.string()
    assert _metrics(out) == {
        "events": 12,
        "late_events": 0,
        "skipped_values": 2,
        "rows": 12,
        "skipped_rows": 0,
    }
    assert out.column("a_sum_1h").to_pylist()[:4] == [0.0, 1.0, 0.0, 3.0]
    assert out.column("m_max_1h").to_pylist()[:4] == [0.0, 1.0, 0.0, 2.5]


def test_too_late_features_are_null():
    table = pa.table({"k": ["a", "a", "a"], "t": [10 * H, 20 * H, 11 * H], "x": [1.0, 2.0, 4.0]})
    out = aggregate(table, [ALL], key="k", time_field="t")
    assert out.column("a_sum_1h").to_pylist() == [1.0, 2.0, None]
    assert _metrics(out)["late_events"] == 1


def test_empty_input_gives_typed_columns():
    empty = _events().slice(0, 0)
    out = aggregate(empty, [ALL], key="k", time_field="t")
    assert out.num_rows == 0
    assert out.schema.names == [*ALL.feature_names, "k", "t", "x", "s"]
    assert out.schema.field("a_count_1h").type == pa.int64()
    with_fn = aggregate(empty, [ALL], key="k", time_field="t", augmentation_fn=lambda b, f: {**f})
    assert with_fn.num_columns == 0


def test_timer_emissions_have_key_and_utc_ns_time():
    out = aggregate(_events(), [ALL], key="k", time_field="t", emit_policy=EmitAfterPeriod())
    assert out.schema.names[-2:] == ["key", "time"]
    assert out.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert out.schema.field("key").type == pa.string()
    assert out.num_rows > 0


def test_tuple_keys_and_aliases():
    table = _events().append_column("k2", pa.array([1, 2] * 6, pa.int64()))
    out = aggregate(table, [ALL], key=["k", "k2"], time_field="t", aliases={"a_sum_1h": "total"})
    assert "total" in out.schema.names and "a_sum_1h" not in out.schema.names
    check_parity([ALL], table, key=["k", "k2"], time_field="t", aliases={"a_sum_1h": "total"}).assert_ok()


def test_output_parquet_and_csv(tmp_path):
    data = _events()
    expected = aggregate(data, [ALL, COUNT], key="k", time_field="t")
    metrics = aggregate(data, [ALL, COUNT], key="k", time_field="t", output=str(tmp_path / "out.parquet"))
    assert metrics["rows_out"] == 12 and metrics["events"] == 12
    written = pq.read_table(tmp_path / "out.parquet")
    assert written.schema.names == expected.schema.names
    assert_tables_equal(written, expected)
    metrics = aggregate(data, [ALL, COUNT], key="k", time_field="t", output=str(tmp_path / "out.csv"))
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header.split(",") == expected.schema.names


def test_unknown_engine():
    with pytest.raises(ValueError, match="engine"):
        aggregate(_events(), [ALL], key="k", time_field="t", engine="spark")


def test_performance_warning_once_for_callables_and_none_for_field_equals():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aggregate(_events(), [COUNT], key="k", time_field="t")
    with pytest.warns(PerformanceWarning) as caught:
        aggregate(_events(), [ALL], key=lambda b: b["k"], time_field="t", batch_size=3)
    assert len(caught) == 1


def test_missing_column_and_non_numeric_values():
    with pytest.raises(MissingFieldError, match=r"'y'.*<input 0>"):
        aggregate(_events(), [FieldAggregator("y", "y", ["sum"], W)], key="k", time_field="t")
    bad = FieldAggregator("s", "s", ["sum", "count"], W)
    with pytest.raises(TypeError, match=r"'s'.*row 0"):
        aggregate(_events(), [bad], key="k", time_field="t")


def test_progress_counts_rows():
    seen = []
    aggregate(_events(), [ALL], key="k", time_field="t", batch_size=5, progress=seen.append)
    assert seen == [5, 5, 2]


def test_table_starts_from_and_persists_state():
    table = Table("t", NoopDriver())
    data = _events()
    aggregate(data.slice(0, 6), [ALL], key="k", time_field="t", table=table)
    rest = aggregate(data.slice(6), [ALL], key="k", time_field="t", table=Table("t", table.storage))
    whole = aggregate(data, [ALL], key="k", time_field="t")
    assert rest.column("a_avg_2h").to_pylist() == whole.column("a_avg_2h").to_pylist()[6:]


def test_pandas_and_polars_inputs_equal_the_stream():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "k": rng.choice(["a", "b"], 40),
            "t": pd.to_datetime(np.cumsum(rng.integers(0, 900, 40)), unit="s", utc=True),
            "x": np.where(rng.random(40) < 0.2, np.nan, rng.normal(size=40)),
        }
    )
    check_parity([ALL], df, key="k", time_field="t").assert_ok()
    check_parity([ALL], pl.from_pandas(df), key="k", time_field="t").assert_ok()


def test_max_events_flush_emits_latest_events():
    out = aggregate(_events(), [ALL], key="k", time_field="t", emit_policy=EmitAfterMaxEvent(4))
    check_parity([ALL], _events(), key="k", time_field="t", emit_policy=EmitAfterMaxEvent(4)).assert_ok()
    assert out.num_rows == 4  # 'a' twice (9 events -> 4, 8, then the flush), 'b' once (3 events, flush)
