"""The stored schema document and QueryByKey resolution (spec AGGREGATIONS.md §7.1, §7.4)."""

from __future__ import annotations

import copy
import json

import pytest

from storey.aggregations.field import FieldAggregator
from storey.aggregations.schema import (
    aggregator_entry,
    build_schema,
    plan_for,
    reconcile,
    resolve_query,
)
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows
from storey.errors import SchemaMismatchError

W = SlidingWindows(["1h", "2h", "24h"], "10m")
PURCHASES = FieldAggregator("purchases", "amount", ["avg", "min", "max"], W)
CLICKS = FieldAggregator("clicks", "click", ["count"], FixedWindows(["1h", "1d"]), max_value=1)


def test_document_shape_matches_spec():
    doc = build_schema([PURCHASES, CLICKS])
    assert doc == {
        "storey_schema": 1,
        "aggregators": {
            "purchases": {
                "window_type": "sliding",
                "period_ns": 600000000000,
                "windows": ["1h", "2h", "24h"],
                "kernels": ["count", "moments", "min", "max"],
                "max_value": None,
            },
            "clicks": {
                "window_type": "fixed",
                "period_ns": 3600 * 10**9,
                "windows": ["1h", "1d"],
                "kernels": ["count"],
                "max_value": 1,
            },
        },
    }
    assert json.loads(json.dumps(doc)) == doc


def test_reconcile_saves_new_and_adds_absent_without_mutating():
    doc, changed, aggs = reconcile(None, [PURCHASES])
    assert changed and aggs == [PURCHASES]
    stored = json.loads(json.dumps(doc))
    before = copy.deepcopy(stored)
    doc2, changed2, _ = reconcile(stored, [PURCHASES, CLICKS])
    assert stored == before
    assert changed2 and set(doc2["aggregators"]) == {"purchases", "clicks"}
    doc3, changed3, _ = reconcile(doc2, [CLICKS])
    assert not changed3 and doc3 == doc2  # aggregators the step does not use are left untouched


def test_narrowing_is_fine_and_uses_stored_kernels_and_window():
    stored = build_schema([FieldAggregator("p", "x", ["avg", "min", "max", "last"], W)])
    narrow = FieldAggregator("p", "x", ["max"], SlidingWindows(["1h"], "10m"))
    _, changed, _ = reconcile(stored, [narrow])
    assert not changed
    plan = plan_for(narrow, stored)
    assert plan.kernels == ("count", "moments", "min", "max", "last")
    assert plan.n_slots == 144 and plan.feature_names == ["p_max_1h"]


@pytest.mark.parametrize(
    ("agg", "prop"),
    [
        (FieldAggregator("purchases", "x", ["avg"], FixedWindows(["1h", "2h"])), "window_type"),
        (FieldAggregator("purchases", "x", ["avg"], SlidingWindows(["1h"], "5m")), "period_ns"),
        (FieldAggregator("purchases", "x", ["max"], W, max_value=3), "max_value"),
        (FieldAggregator("purchases", "x", ["sum"], W), "kernels"),
        (FieldAggregator("purchases", "x", ["avg"], SlidingWindows(["1h", "48h"], "10m")), "larger window"),
    ],
)
def test_mismatches_name_aggregator_and_property(agg, prop):
    stored = build_schema([PURCHASES])
    with pytest.raises(SchemaMismatchError, match=rf"purchases.*{prop}"):
        reconcile(stored, [agg])


def test_int_and_float_caps_differ():
    stored = json.loads(json.dumps(build_schema([CLICKS])))
    float_cap = FieldAggregator("clicks", "click", ["count"], FixedWindows(["1h", "1d"]), max_value=1.0)
    with pytest.raises(SchemaMismatchError, match="max_value"):
        reconcile(stored, [float_cap])


def test_use_windows_from_schema():
    stored = build_schema([PURCHASES])
    mine = FieldAggregator("purchases", "amount", ["max"], SlidingWindows(["5m"], "5m"))
    _, _, (agg,) = reconcile(stored, [mine], use_windows_from_schema=True)
    assert agg.windows == W and agg.aggregations == ("max",)


def test_bad_documents():
    with pytest.raises(SchemaMismatchError):
        reconcile({"storey_schema": 2, "aggregators": {}}, [PURCHASES])
    with pytest.raises(SchemaMismatchError):
        reconcile({"storey_schema": 1}, [PURCHASES])


def test_resolve_query_strings_and_enrich_columns():
    doc = build_schema([PURCHASES, CLICKS])
    plans, enrich = resolve_query(
        ["purchases_avg_1h", "city", "purchases_max_24h", "clicks_count_1d", "age"], doc
    )
    assert enrich == ["city", "age"]
    assert [qp.plan.name for qp in plans] == ["purchases", "clicks"]
    purchases, clicks = plans
    assert purchases.features == ["purchases_avg_1h", "purchases_max_24h"]
    assert set(purchases.features) <= set(purchases.plan.feature_names)
    assert purchases.plan.kernels == ("count", "moments", "min", "max")  # stored kernels: blob fields match
    assert purchases.plan.n_slots == 144 and purchases.plan.period_ns == W.period_ns
    assert clicks.plan.max_value == 1 and clicks.plan.window_type == "fixed"
    assert clicks.plan.period_ns == 3600 * 10**9


def test_resolve_query_window_not_stored_but_multiple_of_period():
    doc = build_schema([PURCHASES])
    (qp,), _ = resolve_query(["purchases_min_30m", "purchases_min_60m"], doc)
    assert qp.plan.windows.tiles_per_window == (3, 6)
    assert qp.plan.feature_names == ["purchases_min_30m", "purchases_min_60m"]


@pytest.mark.parametrize(
    ("feature", "match"),
    [
        ("nobody_avg_1h", "not in the stored schema"),
        ("purchases_sum_1h", "needs kernels"),
        ("purchases_avg_15m", "not a multiple"),
        ("purchases_avg_2d", "exceeds"),
    ],
)
def test_resolve_query_errors(feature, match):
    with pytest.raises(SchemaMismatchError, match=match):
        resolve_query([feature], build_schema([PURCHASES]))


def test_resolve_query_without_schema():
    with pytest.raises(SchemaMismatchError, match="no aggregation schema"):
        resolve_query(["purchases_avg_1h"], None)
    plans, enrich = resolve_query(["city"], None)
    assert plans == [] and enrich == ["city"]


def test_resolve_query_field_aggregators():
    doc = build_schema([PURCHASES])
    query = FieldAggregator("purchases", None, ["avg"], SlidingWindows(["1h", "2h"], "10m"))
    (qp,), _ = resolve_query([query], doc, FixedWindowType.CurrentOpenWindow)
    assert qp.features == ["purchases_avg_1h", "purchases_avg_2h"] and qp.plan.n_slots == 144
    with pytest.raises(SchemaMismatchError, match="period_ns"):
        resolve_query([FieldAggregator("purchases", None, ["avg"], SlidingWindows(["1h"], "5m"))], doc)
    with pytest.raises(SchemaMismatchError, match="kernels"):
        resolve_query([FieldAggregator("purchases", None, ["first"], W)], doc)


def test_aggregator_entry_kernel_override():
    assert aggregator_entry(PURCHASES, ["last", "count"])["kernels"] == ["count", "last"]
