"""The ``count`` kernel: the number of values in a summary (exact int64)."""

from __future__ import annotations

from typing import Any

import numpy as np

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel


@register_kernel
class Count(Kernel):
    """``n``: the number of values. Never capped in a tile: with `max_value` the window fold adds
    ``min(max_value, n)`` per tile instead (spec AGGREGATIONS.md §3.4, §5.3).

    Examples
    --------
    >>> k = Count()
    >>> k.update(k.init(), 0, 7.0, 0), k.merge((2,), 2, (3,), 3)
    ((1,), (5,))
    """

    name = "count"
    fields = (("n", "i8"),)
    empty = (0,)
    update_code = "n = n + 1"
    merge_code = "n = a_n + b_n"
    order_free = True

    def _update_many_fast(
        self, st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None, prefixes: bool
    ) -> Any:
        m = len(values)
        if not prefixes:
            return (st[0] + m,)
        return (st[0] + m,), (np.arange(st[0] + 1, st[0] + m + 1, dtype=np.int64),)
