"""The ``sum`` kernel: a sequential float64 sum (never pairwise, never compensated)."""

from __future__ import annotations

from typing import Any

import numpy as np

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel


def sequential_cumsum(start: float, terms: np.ndarray) -> np.ndarray:
    """Running sums ``start + x0, (start + x0) + x1, …`` in float64.

    `np.cumsum` is a sequential left fold (spec AGGREGATIONS.md §9.2 allows it); the starting state is
    prepended so that the first addition is ``start + x0``.
    """
    return np.cumsum(np.concatenate((np.array([start], dtype=np.float64), terms)))[1:]


@register_kernel
class Sum(Kernel):
    """``s``: the sum of the values, ``s = s + v`` in arrival order.

    Examples
    --------
    >>> k = Sum()
    >>> k.update((1.5,), 1, 2.0, 0), k.update((1.5,), 1, 2.0, 0, cap=3.0)
    ((3.5,), (3.0,))
    """

    name = "sum"
    fields = (("s", "f8"),)
    empty = (0.0,)
    update_code = "s = s + v"
    merge_code = "s = a_s + b_s"
    cap_fields = ("s",)

    def _update_many_fast(
        self, st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None, prefixes: bool
    ) -> Any:
        if cap is not None or len(values) == 0:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            running = sequential_cumsum(st[0], values)
        state = (float(running[-1]),)
        return (state, (running,)) if prefixes else state
