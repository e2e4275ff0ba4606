"""`run_keys`: the batch entry point, pure-Python engine vs numba engine, bit for bit.

The python engine drives `KeyState` (checked against brute force in test_state_oracle.py); the numba
engine is generated from the same kernel templates. Both must give identical acceptance, features (own-time
and queries) and final states, on multi-key streams with late/too-late events, skipped values, initial
states loaded from blobs and extra as-of queries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.aggregations.blob import decode_state, encode, encode_state
from storey.aggregations.checks import same_bits
from storey.aggregations.field import FieldAggregator
from storey.aggregations.runner import run_keys
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows

S = 10**9
BASE = 1_700_000_000 * S + 7

PLANS = {
    "sliding-capped": AggregatorPlan(
        FieldAggregator(
            "a",
            "x",
            ["count", "sum", "sqr", "min", "max", "first", "last"],
            SlidingWindows(["2s", "5s"], "1s"),
            max_value=2.5,
        ),
        kernels=["count", "sum"],
        n_slots=7,
    ),
    "fixed-last-closed": AggregatorPlan(
        FieldAggregator("b", "x", ["avg", "stdvar", "stddev", "count"], FixedWindows(["2s", "6s"])),
        kernels=["min"],
        fixed_window_type=FixedWindowType.LastClosedWindow,
    ),
}

numba = pytest.importorskip("numba", reason="the numba engine is optional (storey[fast])")

VALUES = st.one_of(
    st.floats(-1e3, 1e3),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 1e300, 5e-324]),
    st.floats(allow_nan=False),
)


@st.composite
def batches(draw):
    n_keys = draw(st.integers(1, 4))
    times, values, valid, starts = [], [], [], [0]
    q_key, q_before, q_tau = [], [], []
    for key in range(n_keys):
        clock = BASE + draw(st.integers(0, 10 * S))
        for _ in range(draw(st.integers(0, 25))):
            step = draw(st.sampled_from(["fwd", "fwd", "late", "tie", "far"]))
            if step == "fwd":
                clock += draw(st.integers(0, 2 * S))
                t = clock
            elif step == "late":
                t = clock - draw(st.integers(0, 12 * S))
            elif step == "far":
                clock += draw(st.integers(10 * S, 40 * S))
                t = clock
            else:
                t = clock
            if draw(st.integers(0, 5)) == 0:
                q_key.append(key)
                q_before.append(len(times))
                q_tau.append(t + draw(st.integers(-15 * S, 15 * S)))
            times.append(t)
            values.append(draw(VALUES))
            valid.append(draw(st.integers(0, 4)) > 0)
        if draw(st.booleans()):
            q_key.append(key)
            q_before.append(len(times))
            q_tau.append(clock + draw(st.integers(-15 * S, 15 * S)))
        starts.append(len(times))
    evaluate = [draw(st.integers(0, 3)) > 0 for _ in times]
    return (
        np.array(starts),
        np.array(times, dtype=np.int64),
        np.array(values, dtype=np.float64),
        np.array(valid, dtype=bool),
        np.array(evaluate, dtype=bool),
        np.array(q_key, dtype=np.int64),
        np.array(q_before, dtype=np.int64),
        np.array(q_tau, dtype=np.int64),
    )


def assert_runs_equal(a, b):
    assert a.accepted.tolist() == b.accepted.tolist()
    assert a.present.tolist() == b.present.tolist()
    assert a.query_present.tolist() == b.query_present.tolist()
    assert a.query_has_data.tolist() == b.query_has_data.tolist()
    for name in a.plan.feature_names:
        for x, y, mask in (
            (a.features, b.features, a.present),
            (a.query_features, b.query_features, a.query_present),
        ):
            assert x[name].dtype == y[name].dtype, name
            for i in np.flatnonzero(mask):
                assert same_bits(x[name][i].item(), y[name][i].item()), (name, i, x[name][i], y[name][i])
    assert a.final_H.tolist() == b.final_H.tolist()
    assert a.final_offsets.tolist() == b.final_offsets.tolist()
    assert a.final_tiles.tolist() == b.final_tiles.tolist()
    for ca, cb in zip(a.final_columns, b.final_columns, strict=True):
        assert ca.dtype == cb.dtype and ca.tobytes() == cb.tobytes()


@pytest.mark.parametrize("plan_name", list(PLANS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), with_init=st.booleans())
def test_numba_engine_equals_python_engine(plan_name, batch, with_init):
    plan = PLANS[plan_name]
    starts, times, values, valid, evaluate, q_key, q_before, q_tau = batch
    init = None
    if with_init:  # start every key from the state another run left behind, through its blob
        warm = run_keys(plan, starts, times - 30 * S, values[::-1].copy(), valid, engine="python")
        init = [decode_state(plan, encode_state(warm.state(k))) for k in range(len(starts) - 1)]
    kwargs = dict(evaluate=evaluate, query_keys=q_key, query_before=q_before, query_times=q_tau, init=init)
    a = run_keys(plan, starts, times, values, valid, engine="python", **kwargs)
    b = run_keys(plan, starts, times, values, valid, engine="numba", **kwargs)
    assert_runs_equal(a, b)
    for k in range(len(starts) - 1):  # final states: identical blobs, straight from the columns too
        blob = encode_state(a.state(k))
        assert encode_state(b.state(k)) == blob
        lo, hi = b.final_offsets[k], b.final_offsets[k + 1]
        cols = [c[lo:hi] for c in b.final_columns]
        assert encode(b.final_H[k], plan.period_ns, plan.row_fields, b.final_tiles[lo:hi], cols) == blob


def test_python_engine_is_the_streaming_state_machine():
    plan = PLANS["sliding-capped"]
    times = np.array([BASE + i * S // 3 for i in range(30)] + [BASE], dtype=np.int64)
    values = np.arange(31, dtype=np.float64)
    run = run_keys(plan, [0, 31], times, values, np.ones(31, bool), engine="python")
    state = plan.new_state()
    for i, (t, v) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
        assert state.update(v, t) == run.accepted[i]
        out = {}
        if state.evaluate(t, out):
            assert all(same_bits(out[f], run.features[f][i].item()) for f in out)
    assert encode_state(state) == encode_state(run.state(0))


def test_arguments_are_checked():
    plan = PLANS["sliding-capped"]
    t = np.array([BASE, BASE + S], dtype=np.int64)
    with pytest.raises(ValueError, match="engine"):
        run_keys(plan, [0, 2], t, np.ones(2), np.ones(2, bool), engine="gpu")
    with pytest.raises(ValueError, match="sorted"):
        run_keys(plan, [0, 2], t, np.ones(2), np.ones(2, bool), query_keys=np.array([0, 0]),
                 query_before=np.array([1, 0]), query_times=t)  # fmt: skip


@pytest.mark.parametrize("plan_name", list(PLANS))
def test_long_streams_exercise_pruning_and_growth(plan_name):
    """Hundreds of tiles per key: the numba working arrays fill up, prune lazily and (with big initial
    states) grow; results and final states still equal the python engine's."""
    plan = PLANS[plan_name]
    rng = np.random.default_rng(5)
    starts, times, values = [0], [], []
    for _key in range(3):
        t = BASE + int(rng.integers(0, 10 * S))
        for _ in range(400):
            t += int(rng.integers(0, 2 * S))
            times.append(t - (int(rng.integers(0, 8 * S)) if rng.random() < 0.2 else 0))
            values.append(float(rng.normal(0, 10)))
        starts.append(len(times))
    times_a = np.array(times, dtype=np.int64)
    values_a = np.array(values)
    valid = rng.random(len(times)) < 0.9
    # initial states holding far more tiles than the working arrays start with (an unpruned KeyState)
    init = []
    for k in range(3):
        st = plan.new_state()
        for i in range(300):
            st.update(float(i), BASE - 400 * S + i * S)
        init.append(st if k != 1 else None)
    for with_init in (None, init):
        a = run_keys(plan, starts, times_a, values_a, valid, init=with_init, engine="python")
        b = run_keys(plan, starts, times_a, values_a, valid, init=with_init, engine="numba")
        assert_runs_equal(a, b)
        assert not a.accepted.all()  # the stream does contain too-late events
