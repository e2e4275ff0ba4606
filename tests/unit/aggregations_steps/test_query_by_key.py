"""QueryByKey / QueryAggregationByKey (AGGREGATIONS.md §7.4)."""

from __future__ import annotations

import math

import pytest

from storey import (
    AggregateByKey,
    Complete,
    FieldAggregator,
    FixedWindows,
    FixedWindowType,
    FlowError,
    NoopDriver,
    QueryAggregationByKey,
    QueryByKey,
    Reduce,
    SchemaMismatchError,
    SlidingWindows,
    Source,
    SQLiteDriver,
    Table,
    build_flow,
)

MIN = 60_000  # ms
AGG = FieldAggregator("p", "v", ["sum", "count", "avg", "max"], SlidingWindows(["1h", "2h"], "10m"))


def _run(steps, events):
    c = build_flow([Source(), *steps, Reduce([], lambda acc, b: [*acc, b])]).run()
    for key, t_ms, body in events:
        c.emit(body, key=key, event_time=t_ms)
    return c.terminate(wait=True)


def test_alias_is_the_same_class():
    assert QueryAggregationByKey is QueryByKey


def test_shared_table_reads_the_live_state_as_of_each_event():
    table = Table("t", NoopDriver())
    names = ["p_sum_1h", "p_avg_2h", "p_max_1h"]
    out = _run(
        [AggregateByKey([AGG], table), QueryByKey(names, table, aliases={"p_sum_1h": "q_sum"})],
        [("a", i * 7 * MIN, {"v": float(i)}) for i in range(20)],
    )
    for body in out:
        assert body["q_sum"] == body["p_sum_1h"] or (
            math.isnan(body["q_sum"]) and math.isnan(body["p_sum_1h"])
        )


def test_serving_from_a_persisted_table_with_expiry(tmp_path):
    path = str(tmp_path / "f.db")
    _run(
        [AggregateByKey([AGG], Table("t", SQLiteDriver(path)))],
        [("a", i * MIN, {"v": 2.0}) for i in range(5)],
    )
    out = _run(
        [QueryByKey(["p_sum_1h", "p_count_2h", "p_avg_1h", "tier"], Table("t", SQLiteDriver(path)))],
        [("a", 5 * MIN, {}), ("a", 70 * MIN, {}), ("a", 200 * MIN, {}), ("nobody", 0, {}), (None, 0, {})],
    )
    assert out[0] == {"p_sum_1h": 10.0, "p_count_2h": 5, "p_avg_1h": 2.0, "tier": None}
    assert out[1]["p_sum_1h"] == 0.0 and out[1]["p_count_2h"] == 5  # the 1h window expired first
    assert out[2]["p_count_2h"] == 0 and math.isnan(out[2]["p_avg_1h"])
    for empty in out[3:]:
        assert empty["p_sum_1h"] == 0.0 and empty["p_count_2h"] == 0 and math.isnan(empty["p_avg_1h"])


def test_writes_of_another_table_are_seen_per_event(tmp_path):
    path = str(tmp_path / "g.db")
    writer_table = Table("t", SQLiteDriver(path))
    _run([AggregateByKey([AGG], writer_table)], [("a", 0, {"v": 1.0})])
    reader = build_flow(
        [Source(), QueryByKey(["p_sum_1h"], Table("t", SQLiteDriver(path))), Complete()]
    ).run()
    first = reader.emit({}, key="a", event_time=MIN).await_result(timeout=10)
    _run([AggregateByKey([AGG], Table("t", SQLiteDriver(path)))], [("a", 2 * MIN, {"v": 5.0})])
    second = reader.emit({}, key="a", event_time=3 * MIN).await_result(timeout=10)
    reader.terminate(wait=True)
    assert (first["p_sum_1h"], second["p_sum_1h"]) == (1.0, 6.0)


def test_field_aggregator_features_and_fixed_last_closed_window():
    table = Table("t", NoopDriver())
    fixed = FieldAggregator("f", "v", ["sum"], FixedWindows(["1h"]))
    _run([AggregateByKey([fixed], table)], [("a", 10 * MIN, {"v": 1.0}), ("a", 70 * MIN, {"v": 2.0})])
    query = FieldAggregator("f", None, ["sum"], FixedWindows(["1h"]))
    out = _run(
        [QueryByKey([query], table, fixed_window_type=FixedWindowType.LastClosedWindow)],
        [("a", 80 * MIN, {})],
    )
    assert out == [{"f_sum_1h": 1.0}]
    out = _run([QueryByKey([query], table)], [("a", 80 * MIN, {})])
    assert out == [{"f_sum_1h": 2.0}]


@pytest.mark.parametrize(
    "features",
    [["nope_sum_1h"], ["p_min_1h"], ["p_sum_3h"], ["p_sum_15m"]],
    ids=["unknown-name", "missing-kernel", "too-large", "not-multiple"],
)
def test_resolution_errors(features):
    table = Table("t", NoopDriver())
    _run([AggregateByKey([AGG], table)], [("a", 0, {"v": 1.0})])
    with pytest.raises(FlowError) as info:
        _run([QueryByKey(features, table)], [("a", 0, {})])
    assert isinstance(info.value.__cause__, SchemaMismatchError)


def test_no_schema_is_an_error():
    with pytest.raises(FlowError) as info:
        _run([QueryByKey(["p_sum_1h"], Table("t", NoopDriver()))], [("a", 0, {})])
    assert isinstance(info.value.__cause__, SchemaMismatchError)
