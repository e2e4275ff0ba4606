"""`fold_constants`: folding must never change what a function computes.

Generated functions are folded, then both versions run on the same inputs; hypothesis draws the inputs. The
cases are the shapes the step modules rely on (flags read from a parameter table, names bound once, dead
kernel branches) and the ones folding must leave alone (names assigned twice or in loops, ``nan``/``inf``,
indices that are not constant, arguments).
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from storey.aggregations.checks import same_bits
from storey.aggregations.kernels._codegen import fold_constants

SOURCE = """
def f(x, n, ip):
    on = ip[0] != 0
    w = ip[1]
    cap = ip[2]
    far = ip[3]
    acc = 0.0
    if on:
        acc = acc + x * w
    else:
        acc = acc - x
    total = 0
    for j in range(n):
        total = total + ip[1 + (j % 2)] * j
    k = w
    k = k + 1
    y = x if cap > 1.0 else -x
    if far > 1e300:
        y = y + far
    mode = ip[4]
    if mode == 1:
        y = y * 2
    elif mode == 2:
        y = y * 3
    x = x + 1
    return acc, total, k, y, x, ip[j % 5] if n > 0 else 0
"""


def _run(source, *args):
    ns = {}
    exec(source, ns)
    return ns["f"](*args)


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(0, 6),
    st.tuples(
        st.sampled_from([0, 1]),
        st.integers(-3, 3),
        st.sampled_from([0.5, 2.0, math.inf]),
        st.sampled_from([1.0, math.inf, math.nan]),
        st.sampled_from([0, 1, 2]),
    ),
)
def test_folding_keeps_what_a_function_computes(x, n, ip):
    folded = fold_constants(SOURCE, {"ip": ip})
    got, want = _run(folded, x, n, ip), _run(SOURCE, x, n, ip)
    assert len(got) == len(want)
    assert all(same_bits(a, b) if isinstance(a, float) else a == b for a, b in zip(got, want, strict=True))


def test_folding_removes_dead_branches_and_keeps_what_it_cannot_know():
    folded = fold_constants(SOURCE, {"ip": (0, 3, 2.0, math.inf, 2)})
    assert "acc + x * w" not in folded and "acc - x" in folded  # on is False
    assert "y * 2" not in folded and "y * 3" in folded  # mode is 2
    assert "far" in folded  # inf has no literal: read as written
    assert "k = k + 1" in folded and "x = x + 1" in folded  # assigned twice / an argument
    assert "ip[1 + j % 2]" in folded  # not a constant index
    assert "range(n)" in folded
