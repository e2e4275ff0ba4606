"""The ``sqr`` kernel: a sequential float64 sum of squares (kept for upstream compatibility).

It is never used to derive a variance (see ``moments``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel
from storey.aggregations.kernels.sum import sequential_cumsum


@register_kernel
class Sqr(Kernel):
    """``q``: the sum of squares, ``q = q + (v * v)`` in arrival order.

    Examples
    --------
    >>> Sqr().update((1.0,), 1, 3.0, 0)
    (10.0,)
    """

    name = "sqr"
    fields = (("q", "f8"),)
    empty = (0.0,)
    update_code = "q = q + v * v"
    merge_code = "q = a_q + b_q"
    cap_fields = ("q",)

    def _update_many_fast(
        self, st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None, prefixes: bool
    ) -> Any:
        if cap is not None or len(values) == 0:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            running = sequential_cumsum(st[0], values * values)  # element-wise: each square rounds once
        state = (float(running[-1]),)
        return (state, (running,)) if prefixes else state
