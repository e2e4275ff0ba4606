"""The per-key state machine against brute force (spec AGGREGATIONS.md §5).

Hypothesis draws window definitions, aggregations, caps, stored-schema overrides and multi-key streams with
late, too-late, tied, skipped (None/NaN) and extreme values. For every event the features as of its time
(and as of random query times) must equal, bit for bit, a brute-force recomputation from the raw accepted
events: filter by the window's tile range, fold each tile with the kernels' generic ``update`` in arrival
order, merge the tiles oldest → newest with the kernels' generic ``merge``, finalise with the registry's
``Aggregation.finalize``. The fused code, the cache, retention and the blob round trip are all checked
against that reference. A second test compares with exact maths (``math.fsum`` / ``Fraction``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.aggregations.blob import decode_state, encode_state
from storey.aggregations.checks import same_bits
from storey.aggregations.field import FieldAggregator
from storey.aggregations.kernels import aggregation_names, get_aggregation, get_kernel, kernel_names
from storey.aggregations.kernels.base import _numba_enabled
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows, window_range

ENGINES = ["python", pytest.param("numba", marks=pytest.mark.skipif(not _numba_enabled(), reason="no numba"))]
"""Both `KeyState` implementations are checked against brute force (numba only when importable)."""

S = 10**9
BASE = 1_700_000_003 * S + 123  # deliberately not aligned to any period

VALUES = st.one_of(
    st.none(),
    st.just(math.nan),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e16]),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.integers(-5, 5).map(float),
)


@st.composite
def configs(draw, aggrs=None, engine="auto"):
    if aggrs is None:
        aggrs = draw(st.lists(st.sampled_from(aggregation_names()), min_size=1, max_size=5, unique=True))
    no_cap = any(a in ("avg", "stdvar", "stddev") for a in aggrs)
    max_value = None if no_cap else draw(st.sampled_from([None, None, 0, 1, 3, 2.5, -1.0]))
    if draw(st.booleans()):
        p = draw(st.sampled_from([1, 2, 3]))
        mults = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True))
        windows = SlidingWindows([f"{m * p}s" for m in mults], f"{p}s")
        fixed_type = FixedWindowType.CurrentOpenWindow
    else:
        durs = draw(st.lists(st.sampled_from([1, 2, 3, 4, 6, 12]), min_size=1, max_size=3, unique=True))
        windows = FixedWindows([f"{d}s" for d in durs])
        fixed_type = draw(st.sampled_from(list(FixedWindowType)))
    extra = draw(st.lists(st.sampled_from(kernel_names()), max_size=3, unique=True))
    if max_value is not None:
        extra = [k for k in extra if k != "moments"]
    n_slots = windows.n_tiles + draw(st.sampled_from([0, 0, 0, 1, 3]))
    agg = FieldAggregator("f", "x", aggrs, windows, max_value=max_value)
    return AggregatorPlan(agg, kernels=extra, n_slots=n_slots, fixed_window_type=fixed_type, engine=engine)


@st.composite
def streams(draw, plan):
    p = plan.period_ns
    n = plan.n_slots
    events = []
    clock = BASE
    for _ in range(draw(st.integers(1, 45))):
        kind = draw(st.sampled_from(["forward", "forward", "tie", "late", "boundary", "far"]))
        if kind == "forward":
            clock += draw(st.integers(0, 2 * p))
            t = clock
        elif kind == "tie":
            t = clock
        elif kind == "late":
            t = clock - draw(st.integers(1, (n + 3) * p))
        elif kind == "boundary":
            t = (clock // p + draw(st.integers(-n - 1, 1))) * p - draw(st.sampled_from([0, 1]))
        else:
            clock += draw(st.integers(2 * n * p, 4 * n * p))
            t = clock
        clock = max(clock, t)
        key = draw(st.integers(0, 2))
        query_offset = draw(st.integers(-3 * n * p, 3 * n * p))
        # emit policies other than EmitEveryEvent update a key without evaluating at the event's time
        mode = draw(st.sampled_from(["own", "own", "query_first", "no_own"]))
        events.append((key, t, draw(VALUES), query_offset, mode))
    return events


def _skipped(v):
    return v is None or (isinstance(v, float) and math.isnan(v))


def brute_force(plan, events, tau):
    """Features as of `tau` from the accepted (t, v) events of one key, with the generic kernel methods."""
    p = plan.period_ns
    k = tau // p
    cap = plan.cap
    out = {}
    per_window = []
    for i, n_w in enumerate(plan.windows.tiles_per_window):
        lo, hi = window_range(plan.window_type, k, n_w, plan.fixed_window_type)
        tiles: dict[int, list] = {}
        for t, v in events:
            if lo <= t // p <= hi:
                tiles.setdefault(t // p, []).append((t, v))
        summaries = []
        for tile in sorted(tiles):
            s = {}
            for name in plan.kernels:
                kernel = get_kernel(name)
                state = kernel.init()
                for j, (t, v) in enumerate(tiles[tile]):
                    state = kernel.update(state, j, v, t, cap)
                s[name] = state
            summaries.append((len(tiles[tile]), s))
        acc = None
        acc_n = 0
        cc = 0.0 if isinstance(plan.max_value, float) else 0
        for n_tile, s in summaries:
            if plan.max_value is not None:
                cc = cc + min(plan.max_value, n_tile)
            if acc is None:
                acc, acc_n = dict(s), n_tile
            else:
                acc = {
                    name: get_kernel(name).merge(acc[name], acc_n, s[name], n_tile) for name in plan.kernels
                }
                acc_n += n_tile
        fields = {"n": acc_n}
        for name in plan.kernels:
            kernel = get_kernel(name)
            state = acc[name] if acc is not None else kernel.init()
            fields.update(zip(kernel.field_names, state, strict=True))
        per_window.append((fields, cc))
    for aggr in plan.aggregations:
        for i, w in enumerate(plan.windows.windows):
            fields, cc = per_window[i]
            if aggr == "count" and plan.max_value is not None:
                value = cc
            else:
                value = get_aggregation(aggr).finalize(fields)
            out[f"{plan.name}_{aggr}_{w}"] = value
    return out


def assert_same(got, want, context):
    assert list(got) == list(want), context
    for name in want:
        assert same_bits(got[name], want[name]), f"{context}: {name}: got {got[name]!r}, want {want[name]!r}"


class Reference:
    """Brute-force per-key state: high-water mark and the raw accepted events."""

    def __init__(self, plan):
        self.plan = plan
        self.keys: dict[int, list] = {}

    def event(self, key, t, v):
        h, events = self.keys.get(key, (None, []))
        h = t if h is None else max(h, t)
        p = self.plan.period_ns
        accepted = t // p >= h // p - self.plan.n_slots + 1
        if accepted and not _skipped(v):
            events.append((t, v))
        self.keys[key] = (h, events)
        return accepted

    def features(self, key, tau):
        h, events = self.keys.get(key, (None, []))
        p = self.plan.period_ns
        if h is not None and tau // p < h // p - self.plan.n_slots + 1:
            return None
        return brute_force(self.plan, events, tau)


def check_own_time(plan, ref, state, key, t, accepted, context):
    out = {}
    present = state.evaluate(t, out)
    assert present == accepted
    want = ref.features(key, t)
    if want is None:
        assert out == {}
        return
    assert_same(out, want, context)
    uncached = {}
    state.evaluate_uncached(t, uncached)
    assert_same(uncached, want, context + " (uncached)")
    assert all(same_bits(a, b) for a, b in zip(state.values(t), out.values(), strict=True))


def check_queries(plan, ref, states, key, tau, context):
    """Evaluate at another time (past, future or absent) on this key's state and another key's."""
    for qkey in (key, (key + 1) % 3):
        qstate = states.get(qkey)
        if qstate is None:
            continue
        q_out = {}
        q_present = qstate.evaluate(tau, q_out)
        q_want = ref.features(qkey, tau)
        assert q_present == (q_want is not None)
        if q_want is not None:
            assert_same(q_out, q_want, context + f" query key {qkey} tau={tau}")
        assert qstate.has_data(tau) == (q_want is not None and _largest_window_has_data(plan, ref, qkey, tau))


def _largest_window_has_data(plan, ref, key, tau):
    _, events = ref.keys.get(key, (None, []))
    lo, hi = window_range(
        plan.window_type, tau // plan.period_ns, plan.windows.n_tiles, plan.fixed_window_type
    )
    return any(lo <= t // plan.period_ns <= hi for t, _ in events)


def run(plan, events, restart_at=None):
    """Drive the state machine; check every output against the reference; return the final blobs."""
    ref = Reference(plan)
    states = {}
    last_tau: dict[int, int] = {}
    for i, (key, t, v, query_offset, mode) in enumerate(events):
        if i == restart_at:  # restart: every key's state only through its blob (§7.3)
            states = {k: decode_state(plan, encode_state(s)) for k, s in states.items()}
        state = states.get(key)
        if state is None:
            state = states[key] = plan.new_state()
        accepted = state.observe(t)
        if accepted and not _skipped(v):
            state.add(v, t)
        assert accepted == ref.event(key, t, v)
        context = f"event {i} key {key} t={t} {plan!r}"
        if key in last_tau:  # the previous as-of time: its cached folds must see this event
            check_queries(plan, ref, states, key, last_tau[key], context + " (previous tau)")
        last_tau[key] = t
        if mode == "query_first":
            check_queries(plan, ref, states, key, t + query_offset, context)
        if mode != "no_own":
            check_own_time(plan, ref, state, key, t, accepted, context)
        if mode != "query_first":
            check_queries(plan, ref, states, key, t + query_offset, context)
    return {k: encode_state(s) for k, s in states.items()}


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_state_machine_matches_brute_force(engine, data):
    plan = data.draw(configs(engine=engine))
    events = data.draw(streams(plan))
    restart_at = data.draw(st.one_of(st.none(), st.integers(0, len(events))))
    blobs = run(plan, events, restart_at)
    if restart_at is not None:  # restart identity: byte-identical blobs after both runs
        assert blobs == run(plan, events, None)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_count_only_plans_match_brute_force(engine, data):
    """Count-only plans keep running integer window sums (moved, not refolded): same bits as the fold."""
    plan = data.draw(configs(aggrs=["count"], engine=engine))
    assert plan.python_state_class._DELTA == (not isinstance(plan.max_value, float))
    events = data.draw(streams(plan))
    restart_at = data.draw(st.one_of(st.none(), st.integers(0, len(events))))
    blobs = run(plan, events, restart_at)
    if restart_at is not None:
        assert blobs == run(plan, events, None)


@st.composite
def finite_stream(draw):
    p = S
    events = []
    clock = BASE
    for _ in range(draw(st.integers(1, 60))):
        clock += draw(st.integers(0, 2 * p))
        t = clock - (draw(st.integers(0, 5 * p)) if draw(st.booleans()) else 0)
        events.append((t, draw(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))))
    return events


@settings(max_examples=60, deadline=None)
@given(events=finite_stream())
def test_features_match_exact_maths(events):
    """count/min/max/first/last exact; sum/avg/stdvar close to `math.fsum`/`Fraction` (finite values)."""
    aggrs = ["count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev"]
    plan = AggregatorPlan(FieldAggregator("f", "x", aggrs, SlidingWindows(["3s", "8s"], "1s")))
    state = plan.new_state()
    accepted_events = []
    for arrival, (t, v) in enumerate(events):
        if not state.update(v, t):
            continue
        accepted_events.append((t, arrival, v))
        out = {}
        state.evaluate(t, out)
        k = t // S
        for w, n_w in zip(("3s", "8s"), (3, 8), strict=True):
            inside = [(tt, a, vv) for tt, a, vv in accepted_events if k - n_w + 1 <= tt // S <= k]
            vals = [vv for _, _, vv in inside]
            assert out[f"f_count_{w}"] == len(vals)
            assert out[f"f_min_{w}"] == min(vals) and out[f"f_max_{w}"] == max(vals)
            assert out[f"f_first_{w}"] == min(inside, key=lambda e: (e[0], e[1]))[2]
            assert out[f"f_last_{w}"] == max(inside, key=lambda e: (e[0], e[1]))[2]
            n = len(vals)
            u = 2.0**-53
            gamma = n * u / (1 - n * u)
            absum = math.fsum(abs(x) for x in vals)
            assert abs(out[f"f_sum_{w}"] - math.fsum(vals)) <= gamma * absum + 1e-300
            exact_mean = sum(Fraction(x) for x in vals) / n
            assert abs(Fraction(out[f"f_avg_{w}"]) - exact_mean) <= Fraction(4 * n * u) * (
                sum(abs(Fraction(x)) for x in vals) / n
            ) + Fraction(1, 10**300)
            if n >= 2:
                exact_m2 = sum((Fraction(x) - exact_mean) ** 2 for x in vals)
                exact_var = exact_m2 / (n - 1)
                scale = sum(Fraction(x) ** 2 for x in vals) / (n - 1)
                assert abs(Fraction(out[f"f_stdvar_{w}"]) - exact_var) <= Fraction(
                    10 * n * u
                ) * scale + Fraction(1, 10**300)
            else:
                assert math.isnan(out[f"f_stdvar_{w}"]) and math.isnan(out[f"f_stddev_{w}"])
