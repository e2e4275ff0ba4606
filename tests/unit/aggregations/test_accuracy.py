"""Accuracy against high-precision references, separate from parity (spec AGGREGATIONS.md §9.3).

Sums: ``|s − S| ≤ γ_{n−1} · Σ|xᵢ|``; means and variances: relative error ``≤ c · n · u · κ``. ULP distances
are reported in assertion messages.
"""

from __future__ import annotations

import math
import random
import struct
from fractions import Fraction

import pytest

from storey.aggregations.field import FieldAggregator
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import SlidingWindows

U = 2.0**-53
S = 10**9


def ulps(a: float, b: float) -> int:
    ia = struct.unpack("<q", struct.pack("<d", a))[0]
    ib = struct.unpack("<q", struct.pack("<d", b))[0]
    return abs(ia - ib)


def gamma(k: int) -> float:
    return k * U / (1 - k * U)


def features(values, aggrs=("sum", "avg", "stdvar", "stddev", "count")):
    """Stream `values` one per second into 10 s tiles; evaluate a window holding all of them."""
    plan = AggregatorPlan(FieldAggregator("f", "x", list(aggrs), SlidingWindows(["100000s"], "10s")))
    state = plan.new_state()
    t0 = 1_600_000_000 * S
    for i, v in enumerate(values):
        state.update(v, t0 + i * S)
    out = {}
    state.evaluate(t0 + len(values) * S, out)
    return {k.split("_")[1]: v for k, v in out.items()}


def exact_stats(values):
    xs = [Fraction(x) for x in values]
    n = len(xs)
    mean = sum(xs) / n
    m2 = sum((x - mean) ** 2 for x in xs)
    return mean, m2 / (n - 1) if n > 1 else None


@pytest.mark.parametrize("seed", range(3))
def test_near_1e9_with_std_1e_minus_3(seed):
    rng = random.Random(seed)
    values = [1e9 + rng.gauss(0, 1e-3) for _ in range(5000)]
    got = features(values)
    mean, var = exact_stats(values)
    assert got["stdvar"] > 0.0, "catastrophic cancellation: variance collapsed to 0"
    rel = abs(Fraction(got["stdvar"]) - var) / var
    n = len(values)
    kappa = float(sum(Fraction(x) ** 2 for x in values) / ((n - 1) * var)) ** 0.5  # condition number
    assert rel <= 4 * n * U * kappa, f"stdvar {got['stdvar']!r} vs {float(var)!r}: rel {float(rel):.3g}"
    assert abs(got["stdvar"] - 1e-6) < 2e-7
    assert rel < 1e-4, f"stdvar relative error {float(rel):.3g}"  # far tighter than the κ bound here
    assert abs(Fraction(got["avg"]) - mean) / mean <= 2 * n * U
    print(
        f"near-1e9 case: stdvar rel. error {float(rel):.2e} ({ulps(got['stdvar'], float(var))} ulps), "
        f"avg {ulps(got['avg'], float(mean))} ulps"
    )


def test_sum_error_bound_mixed_signs():
    rng = random.Random(11)
    values = [rng.choice([-1, 1]) * 10 ** rng.uniform(-8, 8) for _ in range(3000)]
    got = features(values)
    exact = math.fsum(values)
    bound = gamma(len(values) - 1) * math.fsum(abs(x) for x in values)
    assert abs(got["sum"] - exact) <= bound, f"sum off by {ulps(got['sum'], exact)} ulps"
    mean, var = exact_stats(values)
    assert abs(Fraction(got["avg"]) - mean) <= Fraction(4 * len(values) * U) * sum(
        abs(Fraction(x)) for x in values
    ) / len(values)
    assert abs(Fraction(got["stdvar"]) - var) / var <= 10 * len(values) * U


def test_single_value_variance_is_nan():
    got = features([42.0])
    assert math.isnan(got["stdvar"]) and math.isnan(got["stddev"]) and got["avg"] == 42.0


def test_identical_values_variance_exactly_zero():
    for v in (0.1, 1e9 + 0.123, -3.3e-7, 12345.678):
        got = features([v] * 2000)
        assert got["stdvar"] == 0.0 and got["stddev"] == 0.0
        assert got["avg"] == v


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([1.0, 2.0, math.inf], {"sum": math.inf, "avg": math.inf}),
        # Welford after an infinity: mean = inf + (2 - inf) / 3 = NaN (the formula's arithmetic, not a bug)
        ([1.0, math.inf, 2.0], {"sum": math.inf, "avg": math.nan}),
        ([1.0, -math.inf], {"sum": -math.inf, "avg": -math.inf}),
        ([math.inf, -math.inf], {"sum": math.nan, "avg": math.nan}),
    ],
)
def test_infinite_inputs(values, want):
    got = features(values)
    for name, w in want.items():
        assert (math.isnan(got[name]) and math.isnan(w)) or got[name] == w, (name, got[name])
    assert math.isnan(got["stdvar"])  # inf - inf inside Welford: NaN, never an exception
