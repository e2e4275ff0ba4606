"""The fused per-event path of `AggregateByKey` (`storey.aggregations._step_fused`) against the others.

Hypothesis draws steps of one to three aggregators (sliding/fixed windows, several periods, caps, filters on
fields and callables, count-only aggregators over strings) and multi-key streams with late, too-late and tied
events, ints, None and NaN values. The step runs three ways: fused (one numba call per event), compiled
states without fusion (one numba call per aggregator) and pure Python (``STOREY_DISABLE_NUMBA``). Outputs
(IEEE bits and key order), metrics and the persisted blobs must agree, and every output must equal a
brute-force recomputation from the accepted raw events (`tests.unit.aggregations.test_state_oracle`).
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import (
    AggregateByKey,
    FieldAggregator,
    FieldEquals,
    FixedWindows,
    NoopDriver,
    Reduce,
    SlidingWindows,
    Source,
    Table,
    build_flow,
)
from storey.aggregations import _step_fused
from storey.aggregations.checks import same_bits
from storey.aggregations.kernels import aggregation_names
from storey.aggregations.kernels.base import _numba_enabled
from tests.unit.aggregations.test_state_oracle import brute_force

pytestmark = pytest.mark.skipif(not _numba_enabled(), reason="numba is not importable or is disabled")

S = 10**9
BASE = 1_700_000_011 * S  # whole ms, not aligned to the periods


def _y_present(body):
    return body.get("y") is not None


@st.composite
def aggregators(draw):
    n = draw(st.integers(1, 3))
    out = []
    for i in range(n):
        field = draw(st.sampled_from(["x", "x", "y", "s"]))
        if field == "s":
            aggrs = ["count"]
        else:
            aggrs = draw(st.lists(st.sampled_from(aggregation_names()), min_size=1, max_size=3, unique=True))
        no_cap = any(a in ("avg", "stdvar", "stddev") for a in aggrs)
        max_value = None if no_cap else draw(st.sampled_from([None, None, 2, 1.5]))
        p = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            mults = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True))
            windows = SlidingWindows([f"{m * p}s" for m in mults], f"{p}s")
        else:
            windows = FixedWindows([f"{d}s" for d in draw(st.lists(st.sampled_from([1, 2, 4, 6]), min_size=1,
                                                                   max_size=2, unique=True))])  # fmt: skip
        flt = draw(st.sampled_from([None, None, FieldEquals("s", "a"), _y_present]))
        out.append(FieldAggregator(f"a{i}", field, aggrs, windows, aggr_filter=flt, max_value=max_value))
    return out


@st.composite
def events(draw):
    n_keys = draw(st.integers(1, 3))
    clocks = [BASE + draw(st.integers(0, 3)) * S for _ in range(n_keys)]
    rows = []
    for _ in range(draw(st.integers(1, 60))):
        k = draw(st.integers(0, n_keys - 1))
        kind = draw(st.sampled_from(["forward"] * 5 + ["tie", "late", "too_late"]))
        if kind == "forward":
            clocks[k] += draw(st.sampled_from([0, 1, 100, 700, 1_500, 4_000, 9_000])) * S // 1000
            t = clocks[k]
        elif kind == "tie":
            t = clocks[k]
        elif kind == "late":
            t = clocks[k] - draw(st.integers(1, 8_000)) * S // 1000
        else:
            t = clocks[k] - draw(st.integers(20, 60)) * S
        x = draw(st.one_of(st.floats(-100, 100), st.integers(-3, 3), st.none(), st.just(math.nan)))
        y = draw(st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.none()))
        rows.append(({"key": f"k{k}", "x": x, "y": y, "s": draw(st.sampled_from(["a", "b"]))}, t))
    return rows


def run(aggs, rows, *, table=None, **kwargs):
    table = table if table is not None else Table("t", NoopDriver())
    step = AggregateByKey(aggs, table, key="key", **kwargs)
    c = build_flow([Source(), step, Reduce([], lambda acc, b: [*acc, b])]).run()
    for body, t in rows:
        c.emit(dict(body), event_time=t // 1_000_000)
    out = c.terminate(wait=True)
    blobs = {(key, name): st.encode() for name in step._names for key, st in table.states(name)}
    return out, dict(step.metrics), blobs, step


def three_ways(monkeypatch, aggs, rows, **kwargs):
    fused = run(aggs, rows, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "fused_apply", lambda step: None)
        unfused = run(aggs, rows, **kwargs)
    with monkeypatch.context() as m:
        m.setenv("STOREY_DISABLE_NUMBA", "1")
        python = run(aggs, rows, **kwargs)
    assert fused[3]._fused is not None
    assert unfused[3]._fused is None and python[3]._fused is None
    return fused, unfused, python


def assert_same_bodies(a, b, context):
    assert len(a) == len(b), context
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert list(x) == list(y), f"{context} output {i}"
        for name in x:
            u, v = x[name], y[name]
            numeric = isinstance(u, int | float) and not isinstance(u, bool)
            assert (same_bits(u, v) and type(u) is type(v)) if numeric else u == v, f"{context} {i} {name}"


def oracle(step, rows):
    """The expected outputs from the raw events: per aggregator, acceptance with its own high-water mark,
    filter and skip rules, then `brute_force` as of the event's time."""
    plans = step.plans
    high: dict[tuple[str, int], int] = {}
    accepted: dict[tuple[str, int], list[tuple[int, float]]] = {}
    out = []
    for body, t_ms in rows:
        t = t_ms // 1_000_000 * 1_000_000
        features = {}
        for i, (plan, agg) in enumerate(zip(plans, step.aggregates, strict=True)):
            key = (body["key"], i)
            h = high[key] = max(high.get(key, t), t)
            if t // plan.period_ns < h // plan.period_ns - (plan.n_slots - 1):
                continue
            v = body[agg.field]
            if agg.aggr_filter is None or agg.aggr_filter(body):
                if isinstance(v, str):
                    accepted.setdefault(key, []).append((t, 0.0))
                elif v is not None and not (isinstance(v, float) and math.isnan(v)):
                    accepted.setdefault(key, []).append((t, float(v)))
            features.update(brute_force(plan, accepted.get(key, []), t))
        features.update(body)
        out.append(features)
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # monkeypatch.context
)
@given(aggs=aggregators(), rows=events())
def test_fused_equals_unfused_python_and_brute_force(monkeypatch, aggs, rows):
    fused, unfused, python = three_ways(monkeypatch, aggs, rows)
    for name, other in (("unfused", unfused), ("python", python)):
        assert_same_bodies(fused[0], other[0], name)
        assert fused[1] == other[1], name
        assert fused[2] == other[2], name
    assert_same_bodies(fused[0], oracle(fused[3], rows), "oracle")


def _readme_aggs():
    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    return [
        FieldAggregator("clicks", "x", ["count"], windows),
        FieldAggregator("buy", "y", ["avg", "min", "max", "sum", "last"], windows, max_value=None),
        FieldAggregator(
            "fails", "s", ["count"], SlidingWindows(["1h"], "10m"), aggr_filter=FieldEquals("s", "a")
        ),
    ]


def _long_rows(n=3000, keys=30):
    import numpy as np

    rng = np.random.default_rng(3)
    t = BASE
    rows = []
    for _ in range(n):
        t += int(rng.integers(0, 120 * S))
        late = int(rng.integers(0, 30 * 3600 * S)) if rng.random() < 0.05 else 0
        body = {
            "key": f"u{int(rng.integers(0, keys))}",
            "x": int(rng.poisson(1)),
            "y": None if rng.random() < 0.2 else float(np.round(rng.lognormal(3, 1), 2)),
            "s": "a" if rng.random() < 0.2 else "b",
        }
        rows.append((body, t - late))
    return rows


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"full_event": True},
        {"aliases": {"clicks_count_1h": "c1"}},
        {"augmentation_fn": lambda body, features: {"k": body["key"], **features}},
        {"enrich_with": ["color"]},
    ],
    ids=["plain", "full_event", "aliases", "augmentation", "enrich"],
)
def test_long_stream_grows_buffers_and_gives_the_same_bits(monkeypatch, kwargs):
    """Sparse keys over days: buffers grow (the fused call redoes the grown aggregators), tiles are pruned."""
    rows = _long_rows()
    fused, unfused, python = three_ways(monkeypatch, _readme_aggs(), rows, **kwargs)
    assert fused[1]["late_events"] > 0 and fused[1]["skipped_values"] > 0
    for other in (unfused, python):
        assert_same_bodies(fused[0], other[0], str(kwargs))
        assert fused[1] == other[1]
        assert fused[2] == other[2]


def test_states_of_another_engine_keep_the_step_by_step_path(monkeypatch):
    """A table whose live states came from the Python engine (a previous run): those keys are not fused,
    new keys are, and the results equal a single pure-Python run."""
    rows = _long_rows(600, keys=8)
    first, second = rows[:300], rows[300:]
    second = [*second, ({"key": "new", "x": 1, "y": 2.0, "s": "a"}, second[-1][1])]
    table = Table("t", NoopDriver())
    with monkeypatch.context() as m:
        m.setenv("STOREY_DISABLE_NUMBA", "1")
        run(_readme_aggs(), first, table=table)
    out, metrics, blobs, step = run(_readme_aggs(), second, table=table)
    assert step._fused is not None
    assert type(step._states["new"]) is tuple and type(step._states["u1"]) is list
    ref_table = Table("t", NoopDriver())
    with monkeypatch.context() as m:
        m.setenv("STOREY_DISABLE_NUMBA", "1")
        run(_readme_aggs(), first, table=ref_table)
        ref = run(_readme_aggs(), second, table=ref_table)
    assert_same_bodies(out, ref[0], "mixed engines")
    assert metrics == ref[1] and blobs == ref[2]


def test_states_of_an_earlier_run_on_the_same_table_are_fused(monkeypatch):
    """A second run of an equal step on the same table finds the first run's compiled states (of the first
    run's plan classes, laid out alike): they take the fused path and the results equal one long run."""
    rows = _long_rows(600, keys=8)
    table = Table("t", NoopDriver())
    first = run(_readme_aggs(), rows[:300], table=table)
    second = run(_readme_aggs(), rows[300:], table=table)
    step = second[3]
    assert all(type(states) is tuple for states in step._states.values())
    assert type(step._states["u1"][0]) is not step.plans[0].state_class  # the first run's class
    whole = run(_readme_aggs(), rows)
    assert_same_bodies(first[0] + second[0], whole[0], "two runs")
    assert second[2] == whole[2]


def test_errors_are_unchanged(monkeypatch):
    """A missing field and a non-numeric value fail the flow with the step's messages, fused or not."""
    from storey.errors import FlowError

    aggs = [FieldAggregator("a", "x", ["sum"], SlidingWindows(["1h"], "10m"))]
    messages = []
    for rows in ([({"key": "k", "y": 1.0}, BASE)], [({"key": "k", "x": "oops"}, BASE)]):
        got = []
        for disable in (False, True):
            with monkeypatch.context() as m:
                if disable:
                    m.setattr(_step_fused, "fused_apply", lambda step: None)
                with pytest.raises(FlowError) as info:
                    run(aggs, rows)
                got.append(re.sub("'[0-9a-f]{32}'", "<id>", str(info.value)))
        assert got[0] == got[1]
        messages.append(got[0])
    assert "'x'" in messages[0] and "<id>" in messages[0] and "oops" in messages[1]


def test_more_aggregators_than_fused_calls_take_the_step_by_step_path():
    windows = SlidingWindows(["1h"], "10m")
    aggs = [FieldAggregator(f"a{i}", "x", ["sum"], windows) for i in range(_step_fused.MAX_FUSED + 1)]
    out, _, _, step = run(aggs, [({"key": "k", "x": 1.0}, BASE)])
    assert step._fused is None and out[0]["a0_sum_1h"] == 1.0


def test_fused_source_is_one_compiled_call_per_event():
    out, _, _, step = run(_readme_aggs(), [({"key": "k", "x": 1, "y": 2.0, "s": "a"}, BASE)])
    source = step._fused.source
    apply, do = source.split("def do(event)")
    assert apply.count("FN(") == do.count("FN(") == 1
    assert (out[0]["clicks_count_1h"], out[0]["buy_sum_24h"], out[0]["fails_count_1h"]) == (1, 2.0, 1)
