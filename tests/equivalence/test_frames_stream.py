"""The parity contract (spec AGGREGATIONS.md §9.1): `storey.frames` == the streaming flow, bit for bit.

Random multi-key streams with late and too-late events, repeated times, None/NaN/±0.0/±inf values, string
keys and tuple keys, `FieldEquals` filters, int and float `max_value`, sliding and fixed windows, all ten
aggregations and every emit policy are run through the real streaming runtime (`AggregateByKey` in a flow)
and through `storey.frames.aggregate`; `check_parity` compares every row, column and value (floats:
``a == b`` or both NaN; a feature absent from the stream's body is null in frames). Small batches make the
frames engine carry state and pending emissions across batches.
"""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.errors import PerformanceWarning
from storey.frames import check_parity
from tests.unit.frames._streams import aggregator_sets, events, policies

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(events(), aggregator_sets(), policies(), st.sampled_from(["k", ["k", "k2"]]), st.integers(1, 64))
def test_frames_equals_stream(table, aggs, policy, key, batch_size):
    report = check_parity(aggs, table, key=key, time_field="t", emit_policy=policy, batch_size=batch_size)
    report.assert_ok()
    assert report.metrics["frames"]["events"] == report.metrics["stream"]["events"] == table.num_rows
    for name in ("late_events", "skipped_values"):
        assert report.metrics["frames"][name] == report.metrics["stream"][name]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(max_rows=25), aggregator_sets(), policies())
def test_callables_row_by_row_equal_stream(table, aggs, policy):
    """User callables (key, field, filter, augmentation) are called row by row, as the stream calls them."""
    from storey import FieldAggregator

    a = aggs[0]
    aggs = [
        FieldAggregator(a.name, lambda b: b["x"], list(a.aggregations), a.windows),
        FieldAggregator("f", "c", ["sum", "count"], aggs[1].windows, aggr_filter=lambda b: b["s"] == "ok"),
    ]

    def augment(body, features):
        return {"key": body.get("k"), **features, "extra": 1}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        report = check_parity(
            aggs, table, key=lambda b: b["k"], time_field="t", emit_policy=policy, augmentation_fn=augment
        )
    report.assert_ok()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_files_equal_stream(tmp_path, fmt):
    """CSV and Parquet inputs: the stream reads them with ReadCSV / ReadParquet, frames with its readers."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from storey import FieldAggregator, FieldEquals, SlidingWindows

    n = 300
    table = pa.table(
        {
            "key": [f"u{i % 7}" for i in range(n)],
            "time": pa.array(
                [1_700_000_000_000_000_000 + i * 97_000_000_000 for i in range(n)], pa.timestamp("ns", "UTC")
            ),
            "amount": [None if i % 5 == 0 else i * 0.25 for i in range(n)],
            "status": ["fail" if i % 3 == 0 else "ok" for i in range(n)],
        }
    )
    path = tmp_path / f"events.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=64)
    else:
        pacsv.write_csv(table, path)
    w = SlidingWindows(["1h", "2h"], "10m")
    aggs = [
        FieldAggregator("amount", "amount", ["avg", "min", "max", "count"], w),
        FieldAggregator("fails", "status", ["count"], w, aggr_filter=FieldEquals("status", "fail")),
    ]
    report = check_parity(aggs, str(path), key="key", time_field="time", batch_size=50)
    report.assert_ok()
    assert report.rows_compared == n
