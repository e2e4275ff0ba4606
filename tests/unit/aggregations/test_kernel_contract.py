"""Kernel contract tests generated over the registry (spec AGGREGATIONS.md §4.2, §9.1).

Every registered kernel: `update_many` equals the looped `update` bit for bit (plain, with prefixes, capped
and uncapped, CPython and numba), `merge` with an empty operand is the identity, and merges take `a` as the
earlier arrivals (order-free kernels: merge of the folds == fold of the concatenation, bit for bit).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.aggregations import checks
from storey.aggregations.checks import check_merge, check_update_many, same_bits, same_state
from storey.aggregations.kernels import (
    Aggregation,
    Kernel,
    aggregation_names,
    canonical_kernels,
    get_aggregation,
    get_kernel,
    kernel_names,
)
from storey.aggregations.kernels.base import NUMBA_THRESHOLD

KERNELS = list(kernel_names())

special = st.sampled_from(
    [0.0, -0.0, math.inf, -math.inf, 1e308, -1e308, 5e-324, -5e-324, 1.0, 1e16, 2.0**53 + 1]
)
values = st.one_of(special, st.floats(allow_nan=False, allow_infinity=True), st.floats(-1e6, 1e6))
times = st.one_of(st.sampled_from([0, 5, 5, -(10**12), 10**18]), st.integers(-(2**62), 2**62))
segments = st.lists(st.tuples(values, times), max_size=30)


def test_registry_is_complete_and_canonical():
    assert KERNELS == ["count", "sum", "sqr", "moments", "min", "max", "first", "last"]
    assert aggregation_names() == (
        "count",
        "sum",
        "sqr",
        "min",
        "max",
        "first",
        "last",
        "avg",
        "stdvar",
        "stddev",
    )
    assert canonical_kernels(["last", "moments", "count", "sum"]) == ("count", "sum", "moments", "last")
    for name in aggregation_names():
        agg = get_aggregation(name)
        assert agg.kernels[0] == "count"
    assert get_aggregation("stddev").kernels == get_aggregation("avg").kernels == ("count", "moments")


def test_unknown_names_suggest():
    with pytest.raises(ValueError, match="did you mean 'first'"):
        get_kernel("firts")
    with pytest.raises(ValueError, match="did you mean 'stddev'"):
        get_aggregation("stdev")


@pytest.mark.parametrize("name", KERNELS)
@settings(max_examples=60, deadline=None)
@given(pre=segments, seg=segments, cap=st.one_of(st.none(), st.floats(-1e3, 1e3), st.just(0.0)))
def test_update_many_equals_looped_update(name, pre, seg, cap):
    kernel = get_kernel(name)
    st0 = kernel.init()
    for i, (v, t) in enumerate(pre):
        st0 = kernel.update(st0, i, v, t, cap)
    with np.errstate(all="ignore"):
        check_update_many(
            kernel, st0, len(pre), [v for v, _ in seg], [t for _, t in seg], cap, compiled=False
        )


@pytest.mark.parametrize("name", KERNELS)
@settings(max_examples=40, deadline=None)
@given(a=segments, b=segments)
def test_merge_identity_and_order(name, a, b):
    check_merge(get_kernel(name), [v for v, _ in a], [t for _, t in a], [v for v, _ in b], [t for _, t in b])


@pytest.mark.parametrize("name", KERNELS)
def test_check_kernel_including_numba(name):
    pytest.importorskip("numba", reason="numba (storey[fast]) is optional; the CPython path is tested above")
    checks.check_kernel(name, rounds=15, compiled=True)


@pytest.mark.parametrize("name", KERNELS)
def test_long_segments_use_the_compiled_or_vectorised_path_with_same_bits(name):
    kernel = get_kernel(name)
    rng = np.random.default_rng(7)
    n = NUMBA_THRESHOLD * 3
    vals = np.where(rng.random(n) < 0.05, -0.0, rng.normal(0, 1e3, n))
    ts = rng.integers(0, 50, n) * 10**9
    want = kernel.init()
    states = []
    for i, (v, t) in enumerate(zip(vals.tolist(), ts.tolist(), strict=True)):
        want = kernel.update(want, i, v, t, None)
        states.append(want)
    assert same_state(kernel.update_many(kernel.init(), 0, vals, ts), want)
    final, cols = kernel.update_many(kernel.init(), 0, vals, ts, prefixes=True)
    assert same_state(final, want)
    for i in (0, 1, n // 2, n - 1):
        assert same_state(tuple(c[i].item() for c in cols), states[i])


def test_tie_rules_first_last_min():
    first, last, mn = get_kernel("first"), get_kernel("last"), get_kernel("min")
    seg = ([1.0, 2.0, 3.0], [5, 5, 5])
    assert first.update_many(first.init(), 0, *seg) == (5, 1.0)  # earliest arrival among equal times
    assert last.update_many(last.init(), 0, *seg) == (5, 3.0)  # latest arrival
    a, b = (5, 1.0), (5, 2.0)
    assert first.merge(a, 1, b, 1) == a
    assert last.merge(a, 1, b, 1) == b
    assert same_bits(mn.merge((0.0,), 1, (-0.0,), 1)[0], 0.0)  # the earlier zero is kept
    assert same_bits(mn.merge((-0.0,), 1, (0.0,), 1)[0], -0.0)


def test_merge_with_empty_returns_the_operand_object():
    for name in KERNELS:
        k = get_kernel(name)
        b = k.update(k.init(), 0, 2.5, 7)
        assert k.merge(k.init(), 0, b, 1) is b
        assert k.merge(b, 1, k.init(), 0) is b


def test_formulas_match_the_spec_text():
    """Welford/Chan evaluated exactly as §4.3 writes them (same expression trees)."""
    m = get_kernel("moments")
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(0, 5))
        mean, m2, v = (float(x) for x in rng.normal(0, 10, 3))
        n1 = float(n + 1)
        d = v - mean
        mean2 = mean + d / n1
        assert m.update((mean, m2), n, v, 0) == (mean2, m2 + d * (v - mean2))
        na_, nb_ = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        a = tuple(float(x) for x in rng.normal(0, 10, 2))
        b = tuple(float(x) for x in rng.normal(0, 10, 2))
        na, nb, nt = float(na_), float(nb_), float(na_ + nb_)
        d = b[0] - a[0]
        want = (a[0] + d * (nb / nt), (a[1] + b[1]) + ((d * d) * ((na * nb) / nt)))
        assert m.merge(a, na_, b, nb_) == want


def test_finalize_empty_results_and_stats():
    empty = {"n": 0, "s": 0.0, "q": 0.0, "mean": 0.0, "m2": 0.0, "mn": math.inf, "mx": -math.inf}
    empty.update({"ft": 0, "fv": math.nan, "lt": 0, "lv": math.nan})
    got = {a: get_aggregation(a).finalize(empty) for a in aggregation_names()}
    assert got["count"] == 0 and type(got["count"]) is int
    assert got["sum"] == 0.0 and got["sqr"] == 0.0
    assert all(math.isnan(got[a]) for a in ("min", "max", "first", "last", "avg", "stdvar", "stddev"))
    one = dict(empty, n=1, mean=3.0, m2=0.0)
    assert math.isnan(get_aggregation("stdvar").finalize(one))
    assert math.isnan(get_aggregation("stddev").finalize(one))
    assert get_aggregation("stddev").finalize(dict(empty, n=3, m2=8.0)) == 2.0
    assert math.isnan(get_aggregation("stddev").finalize(dict(empty, n=3, m2=-math.inf)))  # never raises


def test_user_kernel_without_templates_works_everywhere():
    """A kernel that overrides update/merge (no templates) passes the checks and runs in a fused plan."""
    from storey.aggregations.kernels import _registry

    class SumAbs(Kernel):
        name = "test_sumabs"
        fields = (("sa", "f8"),)
        empty = (0.0,)
        order_free = False

        def update(self, st, n, value, time_ns, cap=None):
            s = st[0] + abs(value)
            return (cap if cap is not None and s > cap else s,)

        def merge(self, a, n_a, b, n_b):
            if n_a == 0:
                return b
            if n_b == 0:
                return a
            return (a[0] + b[0],)

    try:
        _registry.register_kernel(SumAbs)
        _registry.register_aggregation(Aggregation("test_sumabs", ("count", "test_sumabs"), "sa", 0.0))
        checks.check_kernel("test_sumabs", rounds=10)
        from storey.aggregations.field import FieldAggregator
        from storey.aggregations.state import AggregatorPlan
        from storey.aggregations.windows import SlidingWindows

        plan = AggregatorPlan(FieldAggregator("u", "x", ["test_sumabs", "sum"], SlidingWindows(["3s"], "1s")))
        state = plan.new_state()
        out: dict = {}
        for i, v in enumerate([1.0, -2.0, 3.0, -4.0]):
            state.update(v, i * 10**9)
        state.evaluate(3 * 10**9, out)
        assert out == {"u_test_sumabs_3s": 9.0, "u_sum_3s": -3.0}
    finally:
        _registry._KERNELS.pop("test_sumabs", None)
        _registry._AGGREGATIONS.pop("test_sumabs", None)


BANNED = [
    r"np\.sum\b",
    r"numpy\.sum\b",
    r"\.sum\(",
    r"np\.add\.reduce",
    r"np\.nansum",
    r"np\.mean\b",
    r"\.mean\(",
    r"np\.var\b",
    r"\.var\(",
    r"np\.std\b",
    r"\.std\(",
    r"np\.dot\b",
    r"\bdot\(",
    r"[\w\)\]] @ [\w\(]",
    r"(?<![\w.])sum\(",
    r"math\.fsum",
    r"\bfsum\b",
    r"\bstatistics\b",
    r"fastmath\s*=\s*True",
    r"parallel\s*=\s*True",
    r"\bprange\b",
    r"\.rolling\(",
    r"\.expanding\(",
    r"\.ewm\(",
    r"pyarrow\.compute",
    r"\bpc\.(sum|mean|variance|stddev)\b",
]


def _source_files():
    root = Path(__file__).resolve().parents[3] / "storey" / "aggregations"
    return sorted(root.rglob("*.py"))


def test_no_banned_reductions_in_kernels_and_folds():
    """§9.2: no pairwise/blocked/compensated reductions anywhere in storey/aggregations (code, not prose)."""
    offenders = []
    files = _source_files()
    assert any(p.name == "moments.py" for p in files)
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if (
                not code.strip()
                or code.strip().startswith(('"', "'", "``", ">>>"))
                or _in_docstring(path, lineno)
            ):
                continue
            for pattern in BANNED:
                if re.search(pattern, code):
                    offenders.append(f"{path.name}:{lineno}: {line.strip()}  [{pattern}]")
    assert not offenders, "banned reductions (spec §9.2):\n" + "\n".join(offenders)


def _in_docstring(path: Path, lineno: int, _cache: dict = {}) -> bool:
    if path not in _cache:
        import ast

        lines: set[int] = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                val = body[0].value
                if isinstance(val, ast.Constant) and isinstance(val.value, str):
                    lines.update(range(body[0].lineno, body[0].end_lineno + 1))
        _cache[path] = lines
    return lineno in _cache[path]


def test_banned_pattern_detector_works():
    bad = [
        "x = np.sum(a)",
        "t = sum(values)",
        "v = math.fsum(xs)",
        "m = a.mean()",
        "r = a @ b",
        "numba.njit(fastmath=True)",
    ]
    for line in bad:
        assert any(re.search(p, line) for p in BANNED), line
    ok = ["s = s + v", "np.cumsum(x)", "n = n_a + n_b", "bisect_left(keys, lo)"]
    for line in ok:
        assert not any(re.search(p, line) for p in BANNED), line
