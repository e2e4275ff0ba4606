"""The ``moments`` kernel: Welford updates within a tile, Chan merges across tiles.

Behind ``avg`` (the Welford/Chan mean, not ``s / n``), ``stdvar`` and ``stddev``. Evaluated exactly in the
order of spec AGGREGATIONS.md §4.3; no Σx² variance and no subtract-on-evict.

References
----------
B. P. Welford, "Note on a method for calculating corrected sums of squares and products",
Technometrics 4(3), 1962.
T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for computing sample
variances", Stanford CS tech. report STAN-CS-79-773, 1979.
"""

from __future__ import annotations

from storey.aggregations.kernels._registry import register_kernel
from storey.aggregations.kernels.base import Kernel


@register_kernel
class Moments(Kernel):
    """``mean`` and ``m2`` (the sum of squared deviations from the mean).

    Examples
    --------
    >>> k = Moments()
    >>> st = k.init()
    >>> for i, v in enumerate([1.0, 2.0, 3.0]):
    ...     st = k.update(st, i, v, 0)
    >>> st
    (2.0, 2.0)
    >>> k.merge((1.0, 0.0), 1, (3.0, 0.0), 1)
    (2.0, 2.0)
    """

    name = "moments"
    fields = (("mean", "f8"), ("m2", "f8"))
    empty = (0.0, 0.0)
    update_code = """
        _n1 = float(n + 1)
        _d = v - mean
        mean = mean + _d / _n1
        m2 = m2 + _d * (v - mean)
    """
    merge_code = """
        _na = float(a_n)
        _nb = float(b_n)
        _nt = float(a_n + b_n)
        _d = b_mean - a_mean
        mean = a_mean + _d * (_nb / _nt)
        m2 = (a_m2 + b_m2) + ((_d * _d) * ((_na * _nb) / _nt))
    """
