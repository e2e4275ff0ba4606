"""FieldAggregator validation, FieldEquals and the upstream dict form (spec AGGREGATIONS.md §3.1)."""

from __future__ import annotations

import copy
from decimal import Decimal
from fractions import Fraction

import pytest

from storey.aggregations.field import FieldAggregator, FieldEquals, normalize_aggregates
from storey.aggregations.windows import FixedWindows, SlidingWindows
from storey.errors import MissingFieldError

W = SlidingWindows(["1h", "2h"], "10m")


def test_basic_attributes_and_kernels():
    fa = FieldAggregator("p", "amount", ["stddev", "min", "avg", "count"], W)
    assert fa.aggregations == ("stddev", "min", "avg", "count")
    assert fa.kernels == ("count", "moments", "min")
    assert fa.feature_names[:3] == ["p_stddev_1h", "p_stddev_2h", "p_min_1h"]
    assert not fa.count_only
    assert FieldAggregator("c", lambda e: 1, ["count"], W).count_only


@pytest.mark.parametrize(
    ("name", "exc"), [("", ValueError), ("_storey_x", ValueError), (3, TypeError), (None, TypeError)]
)
def test_name_rules(name, exc):
    with pytest.raises(exc):
        FieldAggregator(name, "x", ["sum"], W)


def test_unknown_aggregation_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown aggregation 'stdev'; did you mean 'stddev' or 'stdvar'"):
        FieldAggregator("p", "x", ["stdev"], W)
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        FieldAggregator("p", "x", ["median"], W)


def test_aggr_list_rules():
    with pytest.raises(ValueError, match="listed twice"):
        FieldAggregator("p", "x", ["sum", "sum"], W)
    with pytest.raises(ValueError, match="must not be empty"):
        FieldAggregator("p", "x", [], W)
    with pytest.raises(TypeError):
        FieldAggregator("p", "x", "sum", W)


def test_types_of_field_windows_filter():
    with pytest.raises(TypeError):
        FieldAggregator("p", 3, ["sum"], W)
    with pytest.raises(TypeError):
        FieldAggregator("p", "x", ["sum"], ["1h"])
    with pytest.raises(TypeError):
        FieldAggregator("p", "x", ["sum"], W, aggr_filter="yes")
    assert FieldAggregator("p", None, ["sum"], W).field is None


@pytest.mark.parametrize("cap", [0, 1, 2.5, -3, Decimal("1.5"), Fraction(1, 2)])
def test_max_value_accepts_finite_numbers(cap):
    fa = FieldAggregator("p", "x", ["count", "sum"], W, max_value=cap)
    assert fa.max_value == cap


@pytest.mark.parametrize(
    ("cap", "exc"),
    [(float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError), ("1", TypeError)],
)
def test_max_value_rejects(cap, exc):
    with pytest.raises(exc):
        FieldAggregator("p", "x", ["sum"], W, max_value=cap)


@pytest.mark.parametrize("aggr", ["avg", "stdvar", "stddev"])
def test_max_value_not_with_moments(aggr):
    with pytest.raises(ValueError, match="cannot be combined"):
        FieldAggregator("p", "x", ["sum", aggr], W, max_value=1)


def test_field_equals():
    f = FieldEquals("status", "fail")
    assert f({"status": "fail"}) is True
    assert f({"status": "ok"}) is False

    class Element:
        body = {"status": "fail"}

    assert f(Element()) is True
    with pytest.raises(MissingFieldError, match="'status'"):
        f({"other": 1})
    assert f == FieldEquals("status", "fail")
    with pytest.raises(TypeError):
        FieldEquals(1, 2)


def test_dict_form_sliding_and_fixed_without_mutation():
    d = {
        "name": "n",
        "column": "c",
        "operations": ["sum", "max"],
        "windows": ["2h", "1h"],
        "period": "10m",
        "aggregation_filter": FieldEquals("a", 1),
        "max_value": 5,
    }
    before = copy.deepcopy(d)
    fa = FieldAggregator.from_dict(d)
    assert d == before
    assert fa.windows == SlidingWindows(["1h", "2h"], "10m")
    assert (fa.name, fa.field, fa.aggregations, fa.max_value) == ("n", "c", ("sum", "max"), 5)
    assert fa.aggr_filter == FieldEquals("a", 1)
    fixed = FieldAggregator.from_dict({"name": "n", "column": "c", "operations": ["sum"], "windows": ["1h"]})
    assert fixed.windows == FixedWindows(["1h"])


@pytest.mark.parametrize(
    "d",
    [
        {"name": "n", "column": "c", "operations": ["sum"]},
        {"name": "n", "column": "c", "operations": ["sum"], "windows": ["1h"], "bogus": 1},
    ],
)
def test_dict_form_errors(d):
    with pytest.raises(ValueError):
        FieldAggregator.from_dict(d)


def test_normalize_aggregates():
    fa = FieldAggregator("a", "x", ["sum"], W)
    d = {"name": "b", "column": "y", "operations": ["count"], "windows": ["1h"], "period": "10m"}
    assert normalize_aggregates([fa]) == [fa]
    assert [a.name for a in normalize_aggregates([d, dict(d, name="c")])] == ["b", "c"]
    with pytest.raises(ValueError, match="mixes"):
        normalize_aggregates([fa, d])
    with pytest.raises(ValueError):
        normalize_aggregates([])
    with pytest.raises(TypeError):
        normalize_aggregates([3])
    with pytest.raises(ValueError, match="used twice"):
        normalize_aggregates([fa, FieldAggregator("a", "x", ["max"], W)])


def test_repr():
    assert repr(FieldAggregator("a", "x", ["sum"], W, max_value=2)) == (
        "FieldAggregator('a', 'x', ['sum'], SlidingWindows(['1h', '2h'], '10m'), max_value=2)"
    )
