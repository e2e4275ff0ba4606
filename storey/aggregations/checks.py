"""Kernel contract checks (spec AGGREGATIONS.md §4.2, §9.1), used by our tests and by users adding kernels.

`check_kernel(kernel)` raises `AssertionError` naming the broken rule:

- `init` and every state have one value per field, of the field's dtype;
- `update_many` equals the left fold of `update` **bit for bit** (``prefixes=True`` too: element ``i`` is the
  state after ``i + 1`` updates), with and without a cap, including the compiled path when numba is present;
- `merge` with an empty operand returns the other operand unchanged;
- `merge(a, b)` takes `a` as the earlier arrivals: for order-free kernels (``count``, ``min``, ``max``,
  ``first``, ``last``: `Kernel.order_free`) ``merge(fold(A), fold(B))`` equals ``fold(A + B)`` bit for bit,
  which encodes the tie rules; for the others it must be close to it.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from storey.aggregations.kernels import Kernel, get_kernel
from storey.aggregations.kernels.base import _numba_enabled

__all__ = ["check_kernel", "same_bits", "same_state"]


def same_bits(x: Any, y: Any) -> bool:
    """Equal ints, or floats with equal IEEE-754 bits (``-0.0 != 0.0``); any two NaNs are equal.

    Examples
    --------
    >>> same_bits(0.0, -0.0), same_bits(float("nan"), float("nan")), same_bits(1, 1)
    (False, True, True)
    """
    x_float = isinstance(x, float | np.floating)
    if x_float != isinstance(y, float | np.floating):
        return False
    if x_float:
        fx, fy = float(x), float(y)
        if math.isnan(fx) and math.isnan(fy):
            return True
        return struct.pack("<d", fx) == struct.pack("<d", fy)
    return int(x) == int(y)


def same_state(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """`same_bits` field by field."""
    return len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b, strict=True))


def _default_segment(rng: random.Random, size: int) -> tuple[list[float], list[int]]:
    pool = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        math.inf,
        -math.inf,
        1e308,
        -1e308,
        5e-324,
        1e-300,
        3.5,
        1e16,
        1.0000000000000002,
    ]
    values = [rng.choice(pool) if rng.random() < 0.3 else rng.uniform(-1e6, 1e6) for _ in range(size)]
    times = [rng.choice([0, 1, 5, 5, 5, 10**12, -(10**12)]) for _ in range(size)]
    return values, times


def _check_state(kernel: Kernel, st: Any, what: str) -> None:
    assert isinstance(st, tuple) and len(st) == len(kernel.fields), (
        f"kernel {kernel.name!r}: {what} must be a tuple of {len(kernel.fields)} fields, got {st!r}"
    )
    for (name, dtype), value in zip(kernel.fields, st, strict=True):
        ok = isinstance(value, int | np.integer) if dtype == "i8" else isinstance(value, float | np.floating)
        assert ok and not isinstance(value, bool), (
            f"kernel {kernel.name!r}: {what}: field {name!r} ({dtype}) holds {type(value).__name__} {value!r}"
        )


def _loop(
    kernel: Kernel, st: tuple, n: int, values: Sequence[float], times: Sequence[int], cap: float | None
):
    states = []
    for i, (v, t) in enumerate(zip(values, times, strict=True)):
        st = kernel.update(st, n + i, v, t, cap)
        states.append(st)
    return st, states


def check_update_many(
    kernel: Kernel,
    st: tuple,
    n: int,
    values: Sequence[float],
    times: Sequence[int],
    cap: float | None = None,
    compiled: bool = True,
) -> None:
    """`update_many` (plain and with prefixes) against the looped `update`, bit for bit."""
    want, states = _loop(kernel, st, n, values, times, cap)
    vals = np.asarray(values, dtype=np.float64)
    ts = np.asarray(times, dtype=np.int64)
    got = kernel.update_many(st, n, vals, ts, cap)
    assert same_state(got, want), f"kernel {kernel.name!r}: update_many {got!r} != looped update {want!r}"
    _check_prefixes(
        kernel, "update_many", kernel.update_many(st, n, vals, ts, cap, prefixes=True), want, states
    )
    if compiled and kernel.fusable and _numba_enabled():
        from storey.aggregations.kernels.compiled import compiled_update_many

        got = compiled_update_many(kernel, cap is not None, False)(st, n, vals, ts, cap)
        assert same_state(got, want), (
            f"kernel {kernel.name!r}: compiled update_many {got!r} != looped {want!r}"
        )
        out = compiled_update_many(kernel, cap is not None, True)(st, n, vals, ts, cap)
        _check_prefixes(kernel, "compiled update_many", out, want, states)


def _check_prefixes(kernel: Kernel, what: str, out: Any, want: tuple, states: list[tuple]) -> None:
    got_state, cols = out
    assert same_state(got_state, want), f"kernel {kernel.name!r}: {what}(prefixes=True) final state differs"
    assert len(cols) == len(kernel.fields), f"kernel {kernel.name!r}: prefixes must hold one array per field"
    for i, expected in enumerate(states):
        row = tuple(c[i].item() for c in cols)
        assert same_state(row, expected), (
            f"kernel {kernel.name!r}: {what} prefix {i} is {row!r}, looped update gives {expected!r}"
        )


def check_merge(
    kernel: Kernel,
    a_vals: Sequence[float],
    a_times: Sequence[int],
    b_vals: Sequence[float],
    b_times: Sequence[int],
) -> None:
    """Merge identity with empty operands and a-precedes-b against the fold of the concatenation."""
    empty = kernel.init()
    a, _ = _loop(kernel, empty, 0, a_vals, a_times, None)
    b, _ = _loop(kernel, empty, 0, b_vals, b_times, None)
    na, nb = len(a_vals), len(b_vals)
    assert same_state(kernel.merge(empty, 0, b, nb), b), (
        f"kernel {kernel.name!r}: merge(empty, b) must return b"
    )
    assert same_state(kernel.merge(a, na, empty, 0), a), (
        f"kernel {kernel.name!r}: merge(a, empty) must return a"
    )
    if na == 0 or nb == 0:
        return
    merged = kernel.merge(a, na, b, nb)
    _check_state(kernel, merged, "merge result")
    whole, _ = _loop(kernel, empty, 0, list(a_vals) + list(b_vals), list(a_times) + list(b_times), None)
    if getattr(kernel, "order_free", False):
        assert same_state(merged, whole), (
            f"kernel {kernel.name!r}: merge(fold(A), fold(B)) {merged!r} != fold(A + B) {whole!r}"
        )


def check_kernel(
    kernel: Kernel | str, *, seed: int = 0, rounds: int = 30, cap: float | None = 3.5, compiled: bool = True
) -> None:
    """Run every contract check on `kernel` over `rounds` random segments (ties, ±0.0, ±inf, extremes).

    With `compiled` (and numba importable) the numba-compiled `update_many` is checked too.

    Examples
    --------
    >>> check_kernel("moments", compiled=False)
    >>> check_kernel("last", rounds=5, compiled=False)
    """
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    rng = random.Random(seed)
    _check_state(kernel, kernel.init(), "init()")
    for _ in range(rounds):
        start_n = rng.choice([0, 0, 3])
        st = kernel.init()
        if start_n:
            vals, ts = _default_segment(rng, start_n)
            st, _ = _loop(kernel, st, 0, vals, ts, None)
        vals, ts = _default_segment(rng, rng.randint(0, 40))
        for c in (None, cap) if cap is not None else (None,):
            check_update_many(kernel, st, start_n, vals, ts, c, compiled)
        final, _ = _loop(kernel, st, start_n, vals, ts, None)
        _check_state(kernel, final, "update result")
        a_vals, a_ts = _default_segment(rng, rng.randint(0, 8))
        b_vals, b_ts = _default_segment(rng, rng.randint(0, 8))
        check_merge(kernel, a_vals, a_ts, b_vals, b_ts)
