"""AggregateByKey: worked examples, oracle comparison, late events, bad input (AGGREGATIONS.md §3–6)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from storey import (
    AggregateByKey,
    FieldAggregator,
    FieldEquals,
    FixedWindows,
    FlowError,
    MissingFieldError,
    NoopDriver,
    Reduce,
    SchemaMismatchError,
    SlidingWindows,
    Source,
    SQLiteDriver,
    Table,
    build_flow,
)

H = 3_600_000_000_000
MIN = 60_000_000_000
MS = 1_000_000


def run_agg(aggs, events, table=None, **kwargs):
    """events: (key, time_ns, body); returns (bodies, step)."""
    step = AggregateByKey(aggs, table or Table("t", NoopDriver()), **kwargs)
    c = build_flow([Source(), step, Reduce([], lambda acc, b: [*acc, b])]).run()
    for key, t, body in events:
        c.emit(body, key=key, event_time=t // MS if t % MS == 0 else t / MS)
    return c.terminate(wait=True), step


def test_late_event_example_of_the_spec():
    agg = FieldAggregator("x", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    times = [21 * H, 21 * H + 30 * MIN, 21 * H + 10 * MIN, 21 * H + 35 * MIN]
    out, step = run_agg([agg], [("k", t, {"v": v}) for t, v in zip(times, [1, 2, 4, 8])])
    assert [b["x_sum_1h"] for b in out] == [1, 3, 5, 15]
    assert step.metrics == {"events": 4, "late_events": 0, "skipped_values": 0}


def test_in_order_sum_example_of_the_spec():
    agg = FieldAggregator("x", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    events = [("k", 21 * H + 40 * MIN + i * 25 * MIN, {"v": i}) for i in range(10)]
    out, _ = run_agg([agg], events)
    assert [b["x_sum_1h"] for b in out] == [0, 1, 3, 6, 9, 12, 15, 18, 21, 24]


def test_max_value_example_counts_active_hours():
    agg = FieldAggregator("a", "v", ["count"], SlidingWindows(["24h"], "1h"), max_value=1)
    events = [("k", 21 * H + 40 * MIN + i * 10 * MIN, {"v": 1}) for i in range(10)]
    out, _ = run_agg([agg], events)
    assert [b["a_count_24h"] for b in out] == [1, 1, 2, 2, 2, 2, 2, 2, 3, 3]


def test_fixed_windows_example():
    agg = FieldAggregator("a", "v", ["count"], FixedWindows(["1h", "2h", "3h", "24h"]))
    events = [("k", 21 * H + 40 * MIN + i * 25 * MIN, {"v": 1}) for i in range(6)]  # last at 23:45
    out, _ = run_agg([agg], events)
    last = out[-1]
    assert (last["a_count_1h"], last["a_count_2h"], last["a_count_3h"], last["a_count_24h"]) == (2, 5, 6, 6)


def _readme_aggregates():
    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    return [
        FieldAggregator("number_of_clicks", "click", ["count"], windows),
        FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
        FieldAggregator(
            "failed_activities",
            "activity",
            ["count"],
            SlidingWindows(["1h"], "10m"),
            aggr_filter=lambda element: element["activity_status"] == "fail",
        ),
    ]


def _readme_events(seed, n=400, keys=3):
    rnd = random.Random(seed)
    t = 1_700_000_000 * 10**9
    out = []
    for _ in range(n):
        t += rnd.randint(0, 20) * MIN // 2
        body = {
            "click": rnd.randint(0, 3),
            "purchase_amount": rnd.choice([None, round(rnd.uniform(1, 500), 2)]),
            "activity": "login",
            "activity_status": rnd.choice(["ok", "ok", "fail"]),
        }
        out.append((f"user{rnd.randrange(keys)}", t, body))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_readme_features_against_a_brute_force_oracle(seed):
    events = _readme_events(seed)
    out, step = run_agg(_readme_aggregates(), events)
    P = 10 * MIN
    for i, ((key, t, body), got) in enumerate(zip(events, out, strict=True)):
        mine = [(tt, b) for k, tt, b in events[: i + 1] if k == key]
        for w, n_tiles in (("1h", 6), ("2h", 12), ("24h", 144)):
            lo = t // P - n_tiles + 1
            in_window = [b for tt, b in mine if lo <= tt // P <= t // P]
            assert got[f"number_of_clicks_count_{w}"] == len(in_window)
            amounts = [b["purchase_amount"] for b in in_window if b["purchase_amount"] is not None]
            if amounts:
                assert got[f"purchases_min_{w}"] == min(amounts)
                assert got[f"purchases_max_{w}"] == max(amounts)
                exact = Fraction(sum(Fraction(a) for a in amounts), len(amounts))
                assert abs(got[f"purchases_avg_{w}"] - float(exact)) <= 1e-12 * abs(float(exact))
            else:
                assert math.isnan(got[f"purchases_avg_{w}"]) and math.isnan(got[f"purchases_max_{w}"])
        lo = t // P - 5
        failed = [b for tt, b in mine if lo <= tt // P and b["activity_status"] == "fail"]
        assert got["failed_activities_count_1h"] == len(failed)
        assert got["click"] == body["click"]  # body fields follow the features
    skipped = sum(1 for _, _, b in events if b["purchase_amount"] is None)
    assert step.metrics == {"events": len(events), "late_events": 0, "skipped_values": skipped}


def test_too_late_events_pass_through_without_that_aggregators_features():
    short = FieldAggregator("s", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    long = FieldAggregator("l", "v", ["sum"], SlidingWindows(["1d"], "1h"))
    events = [("k", 10 * H, {"v": 1}), ("k", 8 * H, {"v": 2}), ("k", 10 * H + MIN, {"v": 4})]
    out, step = run_agg([short, long], events)
    assert out[1] == {"l_sum_1d": 2.0, "v": 2}  # too late for `short`; as of 8h the 1d window ends at 8h
    assert out[2]["s_sum_1h"] == 5.0 and out[2]["l_sum_1d"] == 7.0
    assert step.metrics["late_events"] == 1


def test_none_and_nan_values_are_skipped_and_counted():
    agg = FieldAggregator("a", "v", ["count", "sum"], SlidingWindows(["1h"], "10m"))
    out, step = run_agg([agg], [("k", i * MIN, {"v": v}) for i, v in enumerate([1, None, float("nan"), 2])])
    assert [b["a_count_1h"] for b in out] == [1, 1, 1, 2]
    assert step.metrics["skipped_values"] == 2


def test_field_equals_filter_and_string_values_for_count_only():
    agg = FieldAggregator(
        "f", "status", ["count"], SlidingWindows(["1h"], "10m"), aggr_filter=FieldEquals("status", "fail")
    )
    out, _ = run_agg(
        [agg], [("k", i * MIN, {"status": s}) for i, s in enumerate(["ok", "fail", "fail", "ok"])]
    )
    assert [b["f_count_1h"] for b in out] == [0, 1, 2, 2]


def test_non_numeric_value_for_a_numeric_aggregation_fails_naming_everything():
    agg = FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    with pytest.raises(FlowError) as info:
        run_agg([agg], [("k", 0, {"v": "abc"})], name="agg")
    cause = info.value.__cause__
    assert (
        isinstance(cause, TypeError) and "'a'" in str(cause) and "'v'" in str(cause) and "event" in str(cause)
    )
    assert info.value.step == "agg"


def test_missing_field_and_unhashable_key():
    agg = FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    with pytest.raises(FlowError) as info:
        run_agg([agg], [("k", 0, {"w": 1})], name="agg")
    assert isinstance(info.value.__cause__, MissingFieldError) and "'v'" in str(info.value.__cause__)
    with pytest.raises(FlowError) as info:
        run_agg([agg], [({"a": 1}, 0, {"v": 1})])
    assert isinstance(info.value.__cause__, TypeError)


def test_key_field_list_key_callable_key_and_time_field():
    agg = FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    events = [
        (None, 0, {"u": "x", "d": 1, "v": 1, "ts": 0}),
        (None, 0, {"u": "x", "d": 2, "v": 2, "ts": 60_000}),
    ]
    out, _ = run_agg([agg], events, key=["u", "d"], time_field="ts")
    assert [b["a_sum_1h"] for b in out] == [1.0, 2.0]
    out, _ = run_agg([agg], events, key_field=lambda b: b["u"])
    assert [b["a_sum_1h"] for b in out] == [1.0, 3.0]
    with pytest.raises(TypeError):
        AggregateByKey([agg], Table("t", NoopDriver()), key=5)


def test_augmentation_aliases_and_enrich_with():
    agg = FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    table = Table("t", NoopDriver())
    table["k"] = {"tier": "gold"}
    out, _ = run_agg(
        [agg],
        [("k", 0, {"v": 1})],
        table=table,
        enrich_with=["tier", "absent"],
        aliases={"a_sum_1h": "total"},
    )
    assert out == [{"total": 1.0, "tier": "gold", "absent": None, "v": 1}]
    out, _ = run_agg([agg], [("k", 0, {"v": 1, "a_sum_1h": "body wins"})])
    assert out[0]["a_sum_1h"] == "body wins"
    agg7 = FieldAggregator("a", lambda body: body, ["sum"], SlidingWindows(["1h"], "10m"))
    out, _ = run_agg([agg7], [("k", 0, 7)], augmentation_fn=lambda body, f: (body, f))
    assert out == [(7, {"a_sum_1h": 7.0})]


def test_dict_form_and_validation():
    d = {"name": "a", "column": "v", "operations": ["sum"], "windows": ["1h"], "period": "10m"}
    out, _ = run_agg([d], [("k", 0, {"v": 2})])
    assert out[0]["a_sum_1h"] == 2.0
    agg = FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    with pytest.raises(ValueError):
        AggregateByKey([d, agg], Table("t", NoopDriver()))
    table = Table("t", NoopDriver())
    a1, a2 = AggregateByKey([agg], table), AggregateByKey([agg], table)
    with pytest.raises(ValueError, match="same table"):
        build_flow([Source(), a1, a2]).run()


def test_schema_mismatch_on_a_changed_definition(tmp_path):
    driver = SQLiteDriver(str(tmp_path / "s.db"))
    run_agg(
        [FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "10m"))],
        [("k", 0, {"v": 1})],
        table=Table("t", driver),
    )
    with pytest.raises(FlowError) as info:
        run_agg(
            [FieldAggregator("a", "v", ["sum"], SlidingWindows(["1h"], "5m"))],
            [("k", 0, {"v": 1})],
            table=Table("t", driver),
        )
    assert isinstance(info.value.__cause__, SchemaMismatchError)
    # narrowing is fine: a subset of kernels over a smaller window
    out, _ = run_agg(
        [FieldAggregator("a", "v", ["count"], SlidingWindows(["30m"], "10m"))],
        [("k", MIN, {"v": 1})],
        table=Table("t", driver),
    )
    assert out[0]["a_count_30m"] == 2
