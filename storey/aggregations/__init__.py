"""Keyed, windowed aggregations shared by the streaming engine and `storey.frames` (spec AGGREGATIONS.md).

The pure core lives in submodules: `windows` (durations and tile math), `field` (`FieldAggregator`), `emit`
(emit policies), `naming` (feature names), `kernels` (the only arithmetic), `state` (the per-key state
machine), `blob` and `schema` (persistence) and `checks` (kernel contract checks).
"""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr

__getattr__ = lazy_getattr(
    __name__,
    {
        "AggregateByKey": "storey.aggregations.step",
        "QueryByKey": "storey.aggregations.query",
        "QueryAggregationByKey": "storey.aggregations.query",
    },
)

__all__ = ["AggregateByKey", "QueryAggregationByKey", "QueryByKey"]
