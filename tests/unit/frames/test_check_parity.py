"""`check_parity` and `ParityReport` (spec AGGREGATIONS.md §8.6)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from storey import AggregateByKey, FieldAggregator, Map, NoopDriver, SlidingWindows, Table
from storey.aggregations.emit import EmitAfterMaxEvent
from storey.frames import ParityReport, check_parity
from tests.unit.frames._streams import ALL_TEN

W = SlidingWindows(["1h", "2h"], "10m")
AGGS = [FieldAggregator("a", "x", ALL_TEN, W)]


def _events(n=30):
    rng = np.random.default_rng(3)
    return pa.table(
        {
            "k": rng.choice(["a", "b", "c"], n),
            "t": np.cumsum(rng.integers(0, 20 * 60_000, n)),
            "x": pa.array([None if i % 7 == 0 else float(i) for i in range(n)], pa.float64()),
        }
    )


def test_report_of_equal_engines():
    report = check_parity(AGGS, _events(), key="k", time_field="t")
    assert report.ok and bool(report)
    assert report.rows_stream == report.rows_frames == report.rows_compared == 30
    expected_columns = [*AGGS[0].feature_names, "k", "t", "x"]
    assert list(report.mismatches) == expected_columns
    assert set(report.mismatches.values()) == {0}
    assert report.examples == {}
    assert report.metrics["stream"] == {"events": 30, "late_events": 0, "skipped_values": 5}
    assert report.metrics["frames"]["events"] == 30 and report.metrics["frames"]["rows"] == 30
    assert str(report).startswith("parity OK: 30 rows compared")
    report.assert_ok()


def test_a_perturbed_engine_is_detected(monkeypatch):
    """Frames values nudged by one ulp in some rows: the report counts and shows them, in stream order."""
    import storey.frames._output as output

    real = output.features_array

    def perturbed(values, present):
        values = np.array(values)
        if values.dtype == np.float64 and len(values) > 3:
            values[3] = np.nextafter(values[3], np.inf)
        return real(values, present)

    monkeypatch.setattr(output, "features_array", perturbed)
    report = check_parity(AGGS, _events(), key="k", time_field="t", max_examples=2)
    assert not report.ok and not bool(report)
    float_features = [f for f in AGGS[0].feature_names if "_count_" not in f]
    assert all(report.mismatches[f] >= 1 for f in float_features if "stdvar" not in f and "stddev" not in f)
    assert report.mismatches["k"] == report.mismatches["x"] == 0
    assert all(n == 0 for f, n in report.mismatches.items() if "_count_" in f)
    row, _key, _time, stream_value, frames_value = report.examples["a_sum_1h"][0]
    assert row == 3 and frames_value == np.nextafter(stream_value, np.inf)
    assert len(report.examples["a_sum_1h"]) <= 2
    with pytest.raises(AssertionError, match="parity FAILED"):
        report.assert_ok()
    assert "a_sum_1h" in str(report)


def test_row_count_differences_are_reported(monkeypatch):
    import sys

    import storey.frames.parity  # noqa: F401 - imports the module below

    agg_module = sys.modules["storey.frames.aggregate"]
    real = agg_module.aggregate

    def drop_last(*args, **kwargs):
        out = real(*args, **kwargs)
        return out.slice(0, out.num_rows - 1)

    monkeypatch.setattr(agg_module, "aggregate", drop_last)
    report = check_parity(AGGS, _events(), key="k", time_field="t")
    assert not report.ok
    assert (report.rows_stream, report.rows_frames, report.rows_compared) == (30, 29, 29)
    assert "row counts differ" in str(report)


def test_steps_and_policies():
    steps = [
        AggregateByKey(AGGS, Table("t", NoopDriver()), emit_policy=EmitAfterMaxEvent(2)),
        Map(lambda b: {"k": b["k"], "s": b["a_sum_1h"]}),
    ]
    with pytest.warns(Warning):
        report = check_parity(steps, _events(), key="k", time_field="t")
    assert report.ok and report.rows_stream > 0
    assert list(report.mismatches) == ["k", "s"]


@pytest.mark.parametrize("option", ["table", "output", "engine"])
def test_rejected_options(option):
    with pytest.raises(TypeError, match=option):
        check_parity(AGGS, _events(), key="k", time_field="t", **{option: None})


def test_key_and_time_are_required_for_aggregates():
    with pytest.raises(TypeError, match="required"):
        check_parity(AGGS, _events(), key="k")


def test_report_type():
    assert isinstance(check_parity(AGGS, _events(3), key="k", time_field="t"), ParityReport)
