"""Aggregation kernels and their registry: the only arithmetic on aggregated values (spec §4).

Both the streaming `AggregateByKey` and `storey.frames` call these kernels (or code generated from their
templates) for every update, merge and finalisation. Adding an aggregation is one module plus one
registration: a `Kernel` subclass decorated with `register_kernel`, and/or an `Aggregation` passed to
`register_aggregation`.

Examples
--------
>>> from storey.aggregations.kernels import get_kernel
>>> k = get_kernel("sum")
>>> k.update_many(k.init(), 0, [1.0, 2.0, 3.0], [0, 0, 0])
(6.0,)
"""

from __future__ import annotations

# The built-ins register on import (finalize imports the kernel modules it needs).
from storey.aggregations.kernels import finalize  # noqa: F401
from storey.aggregations.kernels._registry import (
    aggregation_names,
    canonical_kernels,
    get_aggregation,
    get_kernel,
    kernel_names,
    register_aggregation,
    register_kernel,
)
from storey.aggregations.kernels.base import Aggregation, Kernel

__all__ = [
    "Aggregation",
    "Kernel",
    "aggregation_names",
    "canonical_kernels",
    "get_aggregation",
    "get_kernel",
    "kernel_names",
    "register_aggregation",
    "register_kernel",
]
