"""The ten public aggregations (spec AGGREGATIONS.md §3.2): data over kernels plus a finalisation.

``avg``, ``stdvar`` and ``stddev`` all read the ``moments`` kernel; ``avg`` is its Welford/Chan mean.
"""

from __future__ import annotations

import math

from storey.aggregations.kernels import count, extrema, firstlast, moments, sqr, sum  # noqa: F401 - register
from storey.aggregations.kernels._registry import register_aggregation
from storey.aggregations.kernels.base import Aggregation

NAN = math.nan

COUNT = register_aggregation(Aggregation("count", ("count",), "n", 0))
SUM = register_aggregation(Aggregation("sum", ("count", "sum"), "s", 0.0))
SQR = register_aggregation(Aggregation("sqr", ("count", "sqr"), "q", 0.0))
MIN = register_aggregation(Aggregation("min", ("count", "min"), "mn", NAN))
MAX = register_aggregation(Aggregation("max", ("count", "max"), "mx", NAN))
FIRST = register_aggregation(Aggregation("first", ("count", "first"), "fv", NAN))
LAST = register_aggregation(Aggregation("last", ("count", "last"), "lv", NAN))
AVG = register_aggregation(Aggregation("avg", ("count", "moments"), "mean", NAN))
STDVAR = register_aggregation(
    Aggregation("stdvar", ("count", "moments"), "m2 / float(n - 1) if n >= 2 else NAN", NAN)
)
STDDEV = register_aggregation(
    Aggregation("stddev", ("count", "moments"), "sqrt(m2 / float(n - 1)) if n >= 2 else NAN", NAN)
)
