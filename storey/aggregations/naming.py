"""Feature names ``{name}_{aggr}_{window}``: the one place that builds and parses them (§3.3, §7.4)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storey.aggregations.field import FieldAggregator

__all__ = [
    "FEATURE_NAME_RE",
    "check_unique_features",
    "feature_name",
    "feature_names",
    "feature_regex",
    "parse_feature_name",
    "state_attribute",
]

_TEN = ("count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev")

FEATURE_NAME_RE = re.compile(
    r"^(?P<name>.+)_(?P<aggr>count|sum|sqr|min|max|first|last|avg|stdvar|stddev)_(?P<window>[1-9][0-9]*[smhd])$"
)
"""The anchored feature-name pattern of §7.4 (match it with `fullmatch`, or use `parse_feature_name`)."""


def feature_name(name: str, aggr: str, window: str) -> str:
    """``f"{name}_{aggr}_{window}"``.

    Examples
    --------
    >>> feature_name("purchases", "avg", "1h")
    'purchases_avg_1h'
    """
    return f"{name}_{aggr}_{window}"


def feature_names(name: str, aggrs: Sequence[str], windows: Sequence[str]) -> list[str]:
    """Features of one aggregator in output order: aggregation (as given), then window (ascending).

    Examples
    --------
    >>> feature_names("p", ["max", "avg"], ["1h", "2h"])
    ['p_max_1h', 'p_max_2h', 'p_avg_1h', 'p_avg_2h']
    """
    return [feature_name(name, a, w) for a in aggrs for w in windows]


def feature_regex() -> re.Pattern[str]:
    """The feature pattern over every registered aggregation (the ten of §7.4 plus user registrations)."""
    from storey.aggregations.kernels import aggregation_names

    names = aggregation_names()
    if names == _TEN or set(names) == set(_TEN):
        return FEATURE_NAME_RE
    alternatives = "|".join(re.escape(a) for a in sorted(names, key=len, reverse=True))
    return re.compile(rf"^(?P<name>.+)_(?P<aggr>{alternatives})_(?P<window>[1-9][0-9]*[smhd])$")


def parse_feature_name(text: str) -> tuple[str, str, str] | None:
    """Split an aggregation feature name into ``(name, aggr, window)``; ``None`` if it is not one.

    The pattern is anchored at both ends (a trailing newline does not match).

    Examples
    --------
    >>> parse_feature_name("purchases_sum_of_x_avg_10m")
    ('purchases_sum_of_x', 'avg', '10m')
    >>> parse_feature_name("purchases_avg_1h\\n") is None, parse_feature_name("city") is None
    (True, True)
    """
    match = feature_regex().fullmatch(text)
    if match is None:
        return None
    return match.group("name"), match.group("aggr"), match.group("window")


def state_attribute(name: str) -> str:
    """The per-key record attribute holding aggregator `name`'s state blob (§7.2).

    Examples
    --------
    >>> state_attribute("purchases")
    '_storey_a_purchases'
    """
    return f"_storey_a_{name}"


def check_unique_features(aggregators: Iterable[FieldAggregator], where: str = "AggregateByKey") -> list[str]:
    """All feature names of `aggregators` in output order; a duplicate (or a duplicate aggregator name)
    fails with `ValueError`."""
    seen_aggs: set[str] = set()
    seen: set[str] = set()
    out: list[str] = []
    for agg in aggregators:
        if agg.name in seen_aggs:
            msg = f"step {where!r}: aggregator name {agg.name!r} is used twice"
            raise ValueError(msg)
        seen_aggs.add(agg.name)
        for feature in agg.feature_names:
            if feature in seen:
                msg = f"step {where!r}: feature name {feature!r} occurs twice"
                raise ValueError(msg)
            seen.add(feature)
            out.append(feature)
    return out
