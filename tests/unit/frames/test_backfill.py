"""`storey.frames.backfill`: a linear list of steps, equal to the flow (spec AGGREGATIONS.md §8.1, §8.2)."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pytest

from storey import (
    AggregateByKey,
    Extend,
    FieldAggregator,
    Filter,
    FlatMap,
    Map,
    MapClass,
    NoopDriver,
    Reduce,
    SlidingWindows,
    Table,
)
from storey.aggregations.emit import EmitAfterPeriod
from storey.errors import PerformanceWarning
from storey.frames import backfill, check_parity
from tests.unit.frames._streams import ALL_TEN

AGG = FieldAggregator("a", "x", ALL_TEN, SlidingWindows(["1h", "2h"], "10m"))
EVENTS = pa.table(
    {
        "k": ["a", "b", "a", "a", "b", "c"] * 5,
        "t": [i * 420_000 for i in range(30)],
        "x": [float(i % 7) if i % 5 else None for i in range(30)],
    }
)


class Double(MapClass):
    def do(self, body):
        if body["x"] is None:
            self.filter()
            return None
        return {**body, "x2": body["x"] * 2}


def _abk(**kw):
    return AggregateByKey([AGG], Table("t", NoopDriver()), **kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: [_abk()],
        lambda: [_abk(key="k", time_field="t", emit_policy=EmitAfterPeriod())],
        lambda: [Filter(lambda b: b["k"] != "c"), _abk(), Map(lambda b: {"k": b["k"], "s": b["a_sum_2h"]})],
        lambda: [Double(), Extend(lambda b: {"y": 1}), FlatMap(lambda b: [b, {**b, "copy": True}])],
    ],
    ids=["aggregate-only", "own-key-and-policy", "per-row-around", "per-row-only"],
)
def test_backfill_equals_the_flow(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        report = check_parity(make(), EVENTS, key="k", time_field="t")
    report.assert_ok()
    assert report.rows_stream > 0


def test_lone_aggregation_runs_in_the_batch_engine_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = backfill(EVENTS, [_abk()], key_field="k", time_field="t")
    assert out.num_rows == 30 and out.schema.names[: len(AGG.feature_names)] == AGG.feature_names


def test_steps_can_be_reused():
    steps = [Map(lambda b: {**b, "y": 1})]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        first = backfill(EVENTS, steps, key_field="k", time_field="t")
        second = backfill(EVENTS, steps, key_field="k", time_field="t")
    assert first.equals(second) and first.num_rows == 30


def test_other_steps_must_run_in_a_flow():
    with pytest.raises(TypeError, match="run it in a flow"):
        backfill(EVENTS, [Reduce(0, lambda a, b: a)], key_field="k", time_field="t")


def test_non_dict_bodies_fail_naming_the_last_step():
    with pytest.warns(PerformanceWarning), pytest.raises(TypeError, match="'last'"):
        backfill(EVENTS, [Map(lambda b: b["x"], name="last")], key_field="k", time_field="t")


def test_output_target(tmp_path):
    import pyarrow.parquet as pq

    metrics = backfill(EVENTS, [_abk()], key_field="k", time_field="t", output=str(tmp_path / "o.parquet"))
    assert metrics["rows_out"] == 30
    assert pq.read_table(tmp_path / "o.parquet").num_rows == 30
