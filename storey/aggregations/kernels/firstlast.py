"""The ``first`` and ``last`` kernels: the value of the earliest / latest event by event time.

Ties in time go by arrival: ``first`` keeps the earliest arrival (strict ``<``), ``last`` takes the latest
(``>=``). Merges encode the same rule because ``a`` precedes ``b`` (spec AGGREGATIONS.md §4.3).
"""

from __future__ import annotations

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel


@register_kernel
class First(Kernel):
    """``ft`` (int ns) and ``fv``: the earliest event's time and value.

    Examples
    --------
    >>> k = First()
    >>> st = k.update(k.init(), 0, 5.0, 20)
    >>> k.update(st, 1, 6.0, 10), k.update(st, 1, 7.0, 20)
    ((10, 6.0), (20, 5.0))
    """

    name = "first"
    fields = (("ft", "i8"), ("fv", "f8"))
    empty = (0, float("nan"))
    update_code = """
        if n == 0 or t < ft:
            ft = t
            fv = v
    """
    merge_code = """
        if a_ft <= b_ft:
            ft = a_ft
            fv = a_fv
        else:
            ft = b_ft
            fv = b_fv
    """
    cap_fields = ("fv",)
    order_free = True


@register_kernel
class Last(Kernel):
    """``lt`` (int ns) and ``lv``: the latest event's time and value.

    Examples
    --------
    >>> k = Last()
    >>> st = k.update(k.init(), 0, 5.0, 20)
    >>> k.update(st, 1, 6.0, 10), k.update(st, 1, 7.0, 20)
    ((20, 5.0), (20, 7.0))
    """

    name = "last"
    fields = (("lt", "i8"), ("lv", "f8"))
    empty = (0, float("nan"))
    update_code = """
        if n == 0 or t >= lt:
            lt = t
            lv = v
    """
    merge_code = """
        if b_lt >= a_lt:
            lt = b_lt
            lv = b_lv
        else:
            lt = a_lt
            lv = a_lv
    """
    cap_fields = ("lv",)
    order_free = True
