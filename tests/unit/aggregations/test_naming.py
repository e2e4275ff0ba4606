"""Feature names and the anchored feature regex (spec AGGREGATIONS.md §3.3, §7.4)."""

from __future__ import annotations

import pytest

from storey.aggregations.field import FieldAggregator
from storey.aggregations.naming import (
    FEATURE_NAME_RE,
    check_unique_features,
    feature_name,
    feature_names,
    parse_feature_name,
    state_attribute,
)
from storey.aggregations.windows import SlidingWindows


def test_order_is_aggregator_then_aggregation_then_window():
    w = SlidingWindows(["24h", "1h"], "10m")
    a = FieldAggregator("a", "x", ["max", "count"], w)
    b = FieldAggregator("b", "x", ["avg"], SlidingWindows(["60m"], "10m"))
    assert check_unique_features([a, b]) == [
        "a_max_1h",
        "a_max_24h",
        "a_count_1h",
        "a_count_24h",
        "b_avg_60m",
    ]
    assert feature_names("a", ["max"], ["1h"]) == [feature_name("a", "max", "1h")]


def test_duplicate_features_across_aggregators():
    w = SlidingWindows(["1h"], "10m")
    a = FieldAggregator("a_sum", "x", ["count"], w)  # a_sum_count_1h
    b = FieldAggregator("a", "x", ["sum"], SlidingWindows(["1h"], "10m"))  # a_sum_1h
    check_unique_features([a, b])
    c = FieldAggregator("x_sum", "x", ["max"], w)
    d = FieldAggregator("x", "x", ["sum"], w)
    assert "x_sum_max_1h" in check_unique_features([c, d])


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("purchases_avg_1h", ("purchases", "avg", "1h")),
        ("a_b_count_10m", ("a_b", "count", "10m")),
        ("x_sum_max_2d", ("x_sum", "max", "2d")),
        ("x_stddev_90s", ("x", "stddev", "90s")),
        ("purchases_avg_1h\n", None),
        ("purchases_avg_0h", None),
        ("purchases_avg_1.5h", None),
        ("_avg_1h", None),
        ("purchases_mean_1h", None),
        ("city", None),
    ],
)
def test_parse_feature_name(text, want):
    assert parse_feature_name(text) == want
    if want is None:
        assert FEATURE_NAME_RE.fullmatch(text) is None or text.endswith("\n")


def test_state_attribute():
    assert state_attribute("clicks") == "_storey_a_clicks"
