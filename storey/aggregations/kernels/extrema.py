"""The ``min`` and ``max`` kernels.

The strict comparisons keep the earlier operand on ties, so ``-0.0`` vs ``0.0`` follows arrival order and
both engines keep the same zero (spec AGGREGATIONS.md §9.2).
"""

from __future__ import annotations

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel


@register_kernel
class Min(Kernel):
    """``mn``: the smallest value (``+inf`` when empty).

    Examples
    --------
    >>> Min().update((1.0,), 1, -2.0, 0), Min().merge((0.0,), 1, (-0.0,), 1)
    ((-2.0,), (0.0,))
    """

    name = "min"
    fields = (("mn", "f8"),)
    empty = (float("inf"),)
    update_code = "mn = v if v < mn else mn"
    merge_code = "mn = b_mn if b_mn < a_mn else a_mn"
    cap_fields = ("mn",)
    order_free = True


@register_kernel
class Max(Kernel):
    """``mx``: the largest value (``-inf`` when empty).

    Examples
    --------
    >>> Max().update((1.0,), 1, 2.0, 0)
    (2.0,)
    """

    name = "max"
    fields = (("mx", "f8"),)
    empty = (float("-inf"),)
    update_code = "mx = v if v > mx else mx"
    merge_code = "mx = b_mx if b_mx > a_mx else a_mx"
    cap_fields = ("mx",)
    order_free = True
