"""`CompiledKeyState` (numba) against `PyKeyState` (pure Python): the same bits, step for step.

Hypothesis draws plans (sliding and fixed windows, last-closed evaluation, caps, stored-schema kernels and
`N`) and multi-key streams whose keys are sparse (gaps of up to several largest windows, so the largest
window loses its oldest tile at nearly every event), dense (many events per tile, every tile retained) or
mixed, with late, too-late, tied and boundary events. Both implementations are driven with the same calls
(`observe`, `add`, `add_evaluate`, `evaluate` at the event's time and at other times, `values`, `has_data`,
`copy`, a restart through the blob) and must agree on every result (IEEE bits, feature order), on the
tiles they hold (`keys`/`rows`, retention included) and on the blobs they write. The flow-level test runs
`AggregateByKey` with numba and with ``STOREY_DISABLE_NUMBA``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.aggregations._compiled_state import IP_DELTA
from storey.aggregations.blob import decode_state, encode_state
from storey.aggregations.checks import same_bits, same_state
from storey.aggregations.field import FieldAggregator
from storey.aggregations.kernels import aggregation_names, kernel_names
from storey.aggregations.kernels.base import _numba_enabled
from storey.aggregations.state import AggregatorPlan, PyKeyState
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows

pytestmark = pytest.mark.skipif(not _numba_enabled(), reason="numba is not importable or is disabled")

S = 10**9
BASE = 1_700_000_011 * S + 5  # not aligned to any period

VALUES = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e16]),
    st.integers(-5, 5).map(float),
)


@st.composite
def plan_pairs(draw, aggrs=None):
    """The same plan twice: ``engine='python'`` and ``engine='numba'``."""
    if aggrs is None:
        aggrs = draw(st.lists(st.sampled_from(aggregation_names()), min_size=1, max_size=5, unique=True))
    no_cap = any(a in ("avg", "stdvar", "stddev") for a in aggrs)
    max_value = None if no_cap else draw(st.sampled_from([None, None, 0, 1, 3, 2.5, -1.0, -0.0]))
    fixed_type = FixedWindowType.CurrentOpenWindow
    if draw(st.booleans()):
        p = draw(st.sampled_from([1, 2, 3]))
        mults = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))
        windows = SlidingWindows([f"{m * p}s" for m in mults], f"{p}s")
    else:
        durs = draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, 12]), min_size=1, max_size=3, unique=True))
        windows = FixedWindows([f"{d}s" for d in durs])
        fixed_type = draw(st.sampled_from(list(FixedWindowType)))
    extra = draw(st.lists(st.sampled_from(kernel_names()), max_size=3, unique=True))
    if max_value is not None:
        extra = [k for k in extra if k != "moments"]
    n_slots = windows.n_tiles + draw(st.sampled_from([0, 0, 1, 4]))
    agg = FieldAggregator("f", "x", aggrs, windows, max_value=max_value)
    kwargs = dict(kernels=extra, n_slots=n_slots, fixed_window_type=fixed_type)
    return AggregatorPlan(agg, engine="python", **kwargs), AggregatorPlan(agg, engine="numba", **kwargs)


@st.composite
def streams(draw, plan):
    """(key, t, value, action, query offset) rows; each key is sparse, dense or mixed."""
    p = plan.period_ns
    n = plan.n_slots
    n_keys = draw(st.integers(1, 3))
    styles = [draw(st.sampled_from(["sparse", "dense", "mixed"])) for _ in range(n_keys)]
    clocks = [BASE + draw(st.integers(0, 3 * p)) for _ in range(n_keys)]
    rows = []
    for _ in range(draw(st.integers(1, 80))):
        key = draw(st.integers(0, n_keys - 1))
        style = styles[key]
        if style == "mixed":
            style = draw(st.sampled_from(["sparse", "dense"]))
        kind = draw(st.sampled_from(["forward"] * 4 + ["tie", "late", "too_late", "boundary"]))
        if kind == "forward":
            step = (
                draw(st.integers(n * p // 3, 3 * n * p))
                if style == "sparse"
                else draw(st.integers(0, p // 2))
            )
            clocks[key] += step
            t = clocks[key]
        elif kind == "tie":
            t = clocks[key]
        elif kind == "late":
            t = clocks[key] - draw(st.integers(1, n * p))
        elif kind == "too_late":
            t = clocks[key] - draw(st.integers(n * p, 3 * n * p))
        else:
            t = (clocks[key] // p + draw(st.integers(-n, 1))) * p - draw(st.sampled_from([0, 1]))
        clocks[key] = max(clocks[key], t)
        action = draw(st.sampled_from(["add_evaluate"] * 3 + ["add", "add_only", "skip", "restart", "copy"]))
        offset = draw(st.integers(-3 * n * p, 3 * n * p))
        rows.append((key, t, draw(VALUES), action, offset))
    return rows


def assert_same_outputs(a, b, context):
    assert list(a) == list(b), context
    for name in a:
        x, y = a[name], b[name]
        numeric = isinstance(x, int | float) and not isinstance(x, bool)
        assert same_bits(x, y) if numeric else x == y, f"{context}: {name}: {x!r} != {y!r}"


def assert_same_state(a, b, context):
    assert (a.H, a.M) == (b.H, b.M), context
    assert a.keys == b.keys, context
    assert all(same_state(x, y) for x, y in zip(a.rows, b.rows, strict=True)), context
    assert encode_state(a) == encode_state(b), context


def assert_same_queries(states, key, tau, context):
    """Evaluate as of another time on this key's and another key's states (past, future or absent)."""
    for qkey in {key, (key + 1) % 3} & set(states):
        qpy, qnb = states[qkey]
        vp, vn = qpy.values(tau), qnb.values(tau)
        assert (vp is None) == (vn is None), context
        if vp is not None:
            assert same_state(vp, vn), f"{context} values({tau})"
        assert qpy.has_data(tau) == qnb.has_data(tau), context


def drive(py_plan, nb_plan, rows):
    """Drive both engines with the same calls; compare every output and the states after every event."""
    states: dict[int, tuple] = {}
    last_tau: dict[int, int] = {}
    for i, (key, t, v, action, offset) in enumerate(rows):
        context = f"event {i} key {key} t={t} action={action} {nb_plan!r}"
        if key not in states:
            states[key] = (py_plan.new_state(), nb_plan.new_state())
        py, nb = states[key]
        assert isinstance(py, PyKeyState) and not isinstance(nb, PyKeyState)
        accepted = py.observe(t)
        assert nb.observe(t) == accepted, context
        outs = ({}, {})
        if accepted and action == "add_evaluate":
            got = [s.add_evaluate(v, t, out) for s, out in zip((py, nb), outs, strict=True)]
            assert got[0] == got[1] is True, context
        elif action == "add_only":  # other emit policies: no evaluation at the event's own time
            if accepted:
                py.add(v, t)
                nb.add(v, t)
        else:
            if accepted and action != "skip":
                py.add(v, t)
                nb.add(v, t)
            got = [s.evaluate(t, out) for s, out in zip((py, nb), outs, strict=True)]
            assert got[0] == got[1] == accepted, context
        assert_same_outputs(*outs, context)
        if key in last_tau:  # the cached folds of the previous as-of time must see this event
            assert_same_queries(states, key, last_tau[key], context + " (previous tau)")
        last_tau[key] = t
        assert_same_queries(states, key, t + offset, context)
        assert_same_state(py, nb, context)
        if action == "restart":  # the compiled state from the Python engine's blob, and vice versa
            py_blob, nb_blob = encode_state(py), encode_state(nb)
            states[key] = (decode_state(py_plan, nb_blob), decode_state(nb_plan, py_blob))
        elif action == "copy":
            states[key] = (py.copy(), nb.copy())
            assert_same_state(*states[key], context + " (copy)")
    return states


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_state_equals_python_state(data):
    py_plan, nb_plan = data.draw(plan_pairs())
    assert (py_plan.engine, nb_plan.engine) == ("python", "numba")
    drive(py_plan, nb_plan, data.draw(streams(nb_plan)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_count_only_plans_move_window_counts_by_deltas(data):
    """Count-only plans (no cap or an int cap) move each window's cached count by the tiles that leave and
    enter (`IP_DELTA`); late events inside and outside the cached ranges, pruning, restarts and copies must
    keep the counts those of the Python engine (whose integer counts are the canonical fold's)."""
    py_plan, nb_plan = data.draw(plan_pairs(aggrs=["count"]))
    assert nb_plan.state_class._IP[IP_DELTA] == (not isinstance(nb_plan.max_value, float))
    drive(py_plan, nb_plan, data.draw(streams(nb_plan)))


@pytest.mark.parametrize("gap_s", [1, 600, 2000, 7200])
@pytest.mark.parametrize(
    "aggrs, max_value",
    [
        (["avg", "min", "max"], None),
        (["count"], None),
        (["count"], 3),
        (["count", "sum", "first", "last"], 2.5),
    ],
)
def test_long_streams_grow_compact_and_prune(aggrs, max_value, gap_s):
    """Thousands of events on one key (every tile of 24 h retained when dense; the 24 h window's oldest tile
    leaving at nearly every event when sparse), 10% late: the buffer grows, compacts and prunes; the
    results and tiles stay those of the Python engine."""
    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    agg = FieldAggregator("p", "x", aggrs, windows, max_value=max_value)
    py_plan, nb_plan = AggregatorPlan(agg, engine="python"), AggregatorPlan(agg, engine="numba")
    rng = np.random.default_rng(gap_s)
    t = BASE
    rows = []
    for _ in range(3000):
        t += int(rng.integers(0, 2 * gap_s * S))
        late = int(rng.integers(0, 20 * 3600 * S)) if rng.random() < 0.1 else 0
        action = ["add", "add_only", "add_evaluate"][int(rng.integers(0, 3))]
        rows.append((0, t - late, float(rng.normal(100, 30)), action, int(rng.integers(-3600, 3600)) * S))
    states = drive(py_plan, nb_plan, rows)
    assert len(states[0][1].keys) > 4  # more than a new buffer holds


def test_unsupported_plans_fall_back_to_python_or_fail_when_numba_is_forced():
    agg = FieldAggregator("c", "x", ["count"], SlidingWindows(["1h"], "10m"), max_value=2**70)
    assert AggregatorPlan(agg).engine == "python"
    with pytest.raises(ValueError, match="int64"):
        AggregatorPlan(agg, engine="numba")
    with pytest.raises(ValueError, match="engine"):
        AggregatorPlan(agg, engine="gpu")


def test_disable_numba_selects_the_python_engine(monkeypatch):
    agg = FieldAggregator("c", "x", ["count"], SlidingWindows(["1h"], "10m"))
    assert AggregatorPlan(agg).engine == "numba"
    monkeypatch.setenv("STOREY_DISABLE_NUMBA", "1")
    plan = AggregatorPlan(agg)
    assert plan.engine == "python" and isinstance(plan.new_state(), PyKeyState)


def test_count_only_plans_take_any_value():
    plan = AggregatorPlan(FieldAggregator("c", "x", ["count"], SlidingWindows(["1h"], "10m")), engine="numba")
    st_ = plan.new_state()
    out = {}
    assert st_.update("a", BASE) and st_.add_evaluate(None, BASE, out)
    assert out == {"c_count_1h": 2} and type(out["c_count_1h"]) is int


def test_generated_code_has_no_banned_reductions():
    """§9.2: the generated module is sequential scalar code compiled without fastmath/parallel."""
    from storey.aggregations._compiled_state import _module_for

    lines = _module_for(kernel_names(), aggregation_names()).source.splitlines()
    for pattern in (
        r"\bsum\(",
        r"\.sum\(",
        r"fsum",
        r"\.mean\(",
        r"\bdot\b",
        r" @ ",
        r"fastmath",
        r"parallel",
    ):
        hits = [line for line in lines if re.search(pattern, line)]
        assert not hits, (pattern, hits)
    decorators = [line for line in lines if line.startswith("@")]
    # storey's njit and njit_nogil (for step_rows only): fastmath=False, parallel=False
    assert decorators and set(decorators) == {"@njit", "@njit_nogil"}
    assert [line for line in lines if line.startswith("def step_rows(")]
    assert lines[lines.index(next(x for x in lines if x.startswith("def step_rows("))) - 1] == "@njit_nogil"


def _flow_outputs(policy, rows):
    from storey import AggregateByKey, FieldEquals, NoopDriver, Reduce, Source, Table, build_flow

    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    aggs = [
        FieldAggregator("clicks", "click", ["count"], windows),
        FieldAggregator("buy", "amount", ["avg", "min", "max", "sum", "stddev", "last"], windows),
        FieldAggregator(
            "fails",
            "status",
            ["count"],
            SlidingWindows(["1h"], "10m"),
            aggr_filter=FieldEquals("status", "fail"),
            max_value=2,
        ),
    ]
    step = AggregateByKey(aggs, Table("t", NoopDriver()), key="key", emit_policy=policy)
    c = build_flow([Source(), step, Reduce([], lambda acc, b: [*acc, b])]).run()
    for body, t in rows:
        c.emit(dict(body), event_time=t // 1_000_000)
    return c.terminate(wait=True), step.metrics, [p.engine for p in step.plans]


@pytest.mark.parametrize("policy_name", ["every", "max-events", "period"])
def test_aggregate_by_key_gives_the_same_bits_with_and_without_numba(monkeypatch, policy_name):
    """The step end to end (filters, skipped values, late and too-late events, sparse and dense keys)."""
    from storey import EmitAfterMaxEvent, EmitAfterPeriod, EmitEveryEvent

    policy = {"every": EmitEveryEvent(), "max-events": EmitAfterMaxEvent(3), "period": EmitAfterPeriod()}
    rng = np.random.default_rng(7)
    rows = []
    t = BASE // 1_000_000 * 1_000_000
    for _ in range(1500):
        t += int(rng.integers(0, 60 * S))
        key = f"u{int(rng.integers(0, 40))}" if rng.random() < 0.5 else "dense"
        late = int(rng.integers(0, 30 * 3600 * S)) if rng.random() < 0.05 else 0
        amount = None if rng.random() < 0.2 else float(np.round(rng.lognormal(3, 1), 2))
        status = "fail" if rng.random() < 0.3 else "ok"
        body = {"key": key, "click": int(rng.poisson(1)), "amount": amount, "status": status}
        rows.append((body, (t - late) // 1_000_000 * 1_000_000))
    nb_out, nb_metrics, nb_engines = _flow_outputs(policy[policy_name], rows)
    monkeypatch.setenv("STOREY_DISABLE_NUMBA", "1")
    py_out, py_metrics, py_engines = _flow_outputs(policy[policy_name], rows)
    assert nb_engines == ["numba"] * 3 and py_engines == ["python"] * 3
    assert nb_metrics == py_metrics and nb_metrics["late_events"] > 0 and nb_metrics["skipped_values"] > 0
    assert len(nb_out) == len(py_out) > 0
    for i, (a, b) in enumerate(zip(nb_out, py_out, strict=True)):
        assert_same_outputs(a, b, f"output {i}")


def test_a_compile_failure_falls_back_to_python_with_a_warning(monkeypatch):
    import storey.aggregations._compiled_state as compiled

    def broken(plan, attrs):
        raise RuntimeError("no LLVM today")

    monkeypatch.setattr(compiled, "compiled_state_class", broken)
    agg = FieldAggregator("c", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    with pytest.warns(RuntimeWarning, match="no LLVM today"):
        plan = AggregatorPlan(agg)
    assert plan.engine == "python" and isinstance(plan.new_state(), PyKeyState)
    with pytest.raises(RuntimeError, match="no LLVM today"):
        AggregatorPlan(agg, engine="numba")
