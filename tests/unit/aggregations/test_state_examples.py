"""The worked examples of spec AGGREGATIONS.md §2.3, §2.4, §3.4, §5.2 and §5.3, run through the state machine.

Where the example is small enough, the expectation is also recomputed from the stated rule in the test.
"""

from __future__ import annotations

import math

import pytest

from storey._time import to_ns
from storey.aggregations.field import FieldAggregator
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows

MIN = 60 * 10**9
DAY0 = "2020-01-01T"


def at(hhmm: str) -> int:
    return to_ns(f"{DAY0}{hhmm}:00Z")


def run(plan, events):
    """EmitEveryEvent-style outputs: features as of each event's own time."""
    state = plan.new_state()
    outs = []
    for v, t in events:
        assert state.update(v, t)
        out = {}
        state.evaluate(t, out)
        outs.append(out)
    return outs


def test_2_3_window_membership():
    plan = AggregatorPlan(FieldAggregator("c", "x", ["count"], SlidingWindows(["1h"], "10m")))
    state = plan.new_state()
    state.update(1.0, to_ns("2020-01-01T21:49:59Z"))
    state.update(1.0, at("21:50"))
    out = {}
    assert state.evaluate(at("22:47"), out)
    assert out == {"c_count_1h": 1}  # 21:50:00 is in, 21:49:59 is out


def test_2_4_fixed_windows_current_open():
    plan = AggregatorPlan(FieldAggregator("c", "x", ["count"], FixedWindows(["1h", "2h", "3h", "24h"])))
    events = [(1.0, at("21:40") + i * 25 * MIN) for i in range(6)]
    assert events[-1][1] == at("23:45")
    out = run(plan, events)[-1]
    assert out == {"c_count_1h": 2, "c_count_2h": 5, "c_count_3h": 6, "c_count_24h": 6}


def test_2_4_fixed_windows_last_closed():
    plan = AggregatorPlan(
        FieldAggregator("c", "x", ["count", "sum"], FixedWindows(["1h", "2h"])),
        fixed_window_type=FixedWindowType.LastClosedWindow,
    )
    events = [(float(i), at("21:40") + i * 25 * MIN) for i in range(6)]  # 21:40 … 23:45
    out = run(plan, events)[-1]
    # as of 23:45 the last closed 1h window is [22:00, 23:00): 22:05, 22:30, 22:55; 2h: [20:00, 22:00): 21:40
    assert out == {"c_count_1h": 3, "c_count_2h": 1, "c_sum_1h": 1.0 + 2.0 + 3.0, "c_sum_2h": 0.0}


def test_3_4_max_value_counts_active_hours():
    plan = AggregatorPlan(FieldAggregator("c", "x", ["count"], SlidingWindows(["24h"], "1h"), max_value=1))
    events = [(1.0, at("21:40") + i * 10 * MIN) for i in range(10)]
    got = [o["c_count_24h"] for o in run(plan, events)]
    assert got == [1, 1, 2, 2, 2, 2, 2, 2, 3, 3]
    hours = [len({t // (60 * MIN) for _, t in events[: i + 1]}) for i in range(10)]  # the rule: active hours
    assert got == hours


def test_3_4_float_cap_gives_float_count_and_caps_sums_per_tile():
    plan = AggregatorPlan(
        FieldAggregator("c", "x", ["count", "sum", "max"], SlidingWindows(["2h"], "1h"), max_value=1.5)
    )
    outs = run(plan, [(1.0, at("21:00")), (1.0, at("21:10")), (1.0, at("21:20")), (2.0, at("22:00"))])
    assert [o["c_count_2h"] for o in outs] == [1.0, 1.5, 1.5, 2.5]
    assert all(type(o["c_count_2h"]) is float for o in outs)
    assert [o["c_sum_2h"] for o in outs] == [1.0, 1.5, 1.5, 3.0]  # each tile's sum capped, never the total
    assert [o["c_max_2h"] for o in outs] == [1.0, 1.0, 1.0, 1.5]


def test_max_value_zero_is_a_cap():
    plan = AggregatorPlan(
        FieldAggregator("c", "x", ["count", "sum"], SlidingWindows(["1h"], "10m"), max_value=0)
    )
    out = run(plan, [(5.0, at("21:00")), (5.0, at("21:15"))])[-1]
    assert out == {"c_count_1h": 0, "c_sum_1h": 0.0}


def test_5_2_late_event_goes_to_its_own_tile():
    plan = AggregatorPlan(FieldAggregator("s", "x", ["sum"], SlidingWindows(["1h"], "10m")))
    events = [(1.0, at("21:00")), (2.0, at("21:30")), (4.0, at("21:10")), (8.0, at("21:35"))]
    assert [o["s_sum_1h"] for o in run(plan, events)] == [1.0, 3.0, 5.0, 15.0]


def test_5_2_too_late_event_is_not_accepted_and_has_no_features():
    plan = AggregatorPlan(FieldAggregator("s", "x", ["sum"], SlidingWindows(["1h"], "10m")))
    state = plan.new_state()
    assert state.update(1.0, at("22:00"))
    assert state.update(2.0, at("21:10"))  # tile 21:10 = M - N + 1: the oldest accepted tile
    assert not state.update(4.0, at("21:09"))  # older than the largest window: too late
    out = {}
    assert not state.evaluate(at("21:09"), out) and out == {}
    assert state.evaluate(at("22:00"), out) and out == {"s_sum_1h": 3.0}  # tiles 21:10 … 22:00


def test_5_3_canonical_fold_example():
    plan = AggregatorPlan(FieldAggregator("s", "x", ["sum"], SlidingWindows(["1h"], "10m")))
    events = [(float(i), at("21:40") + i * 25 * MIN) for i in range(10)]
    got = [o["s_sum_1h"] for o in run(plan, events)]
    assert got == [0.0, 1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]
    p = 10 * MIN
    rule = [sum(v for v, t in events[: i + 1] if t // p >= ti // p - 5) for i, (_, ti) in enumerate(events)]
    assert got == rule


def test_empty_results_and_expiry_when_querying_the_future():
    aggrs = ["count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev"]
    plan = AggregatorPlan(FieldAggregator("f", "x", aggrs, SlidingWindows(["1h"], "10m")))
    state = plan.new_state()
    state.update(3.0, at("10:00"))
    out = {}
    state.evaluate(at("12:00"), out)  # τ ≥ H: windows expire naturally
    assert out["f_count_1h"] == 0 and type(out["f_count_1h"]) is int
    assert out["f_sum_1h"] == 0.0 and out["f_sqr_1h"] == 0.0
    assert all(math.isnan(out[f"f_{a}_1h"]) for a in aggrs[3:])
    fresh = {}
    plan.empty_features(fresh)
    assert list(fresh) == plan.feature_names and fresh["f_count_1h"] == 0


def test_single_value_and_identical_values():
    plan = AggregatorPlan(
        FieldAggregator("f", "x", ["stdvar", "stddev", "avg"], SlidingWindows(["1h"], "10m"))
    )
    outs = run(plan, [(7.25, at("10:00") + i * MIN) for i in range(100)])
    assert math.isnan(outs[0]["f_stdvar_1h"]) and math.isnan(outs[0]["f_stddev_1h"])
    assert outs[-1]["f_stdvar_1h"] == 0.0 and outs[-1]["f_stddev_1h"] == 0.0
    assert outs[-1]["f_avg_1h"] == 7.25


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_pass_through(value):
    plan = AggregatorPlan(
        FieldAggregator("f", "x", ["sum", "min", "max", "avg"], SlidingWindows(["1h"], "10m"))
    )
    out = run(plan, [(1.0, at("10:00")), (value, at("10:01"))])[-1]
    assert out["f_sum_1h"] == value
    assert out["f_min_1h"] == min(1.0, value) and out["f_max_1h"] == max(1.0, value)
    assert out["f_avg_1h"] == value


def test_count_only_accepts_non_numeric_values():
    plan = AggregatorPlan(FieldAggregator("c", "x", ["count"], SlidingWindows(["1h"], "10m")))
    assert [o["c_count_1h"] for o in run(plan, [("a", at("10:00")), ("b", at("10:01"))])] == [1, 2]


@pytest.mark.parametrize("max_value", [None, 1])
def test_pruned_tile_at_the_edge_of_a_running_count(max_value):
    """Count-only plans move cached integer sums; a tile pruned by retention while it is the oldest tile
    of such a sum must leave the sum (regression scenario: prune bound inside the cached range)."""
    plan = AggregatorPlan(
        FieldAggregator("c", "x", ["count"], SlidingWindows(["3s", "6s"], "1s"), max_value=max_value)
    )
    state = plan.new_state()
    s = 10**9
    got = []
    for tile in (96, 101, 107):  # as of 101 the 6s closed range is [96, 100]; tile 107 prunes tiles < 97
        state.update(1.0, tile * s)
        out = {}
        state.evaluate(tile * s, out)
        got.append((out["c_count_3s"], out["c_count_6s"]))
    assert got == [(1, 1), (1, 2), (1, 1)]
    assert state.keys == [101, 107]
