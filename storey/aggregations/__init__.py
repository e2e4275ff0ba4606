"""Keyed, windowed aggregations shared by the streaming engine and `storey.frames` (spec AGGREGATIONS.md).

The pure core lives in submodules: `windows` (durations and tile math), `field` (`FieldAggregator`), `emit`
(emit policies), `naming` (feature names), `kernels` (the only arithmetic), `state` (the per-key state
machine), `blob` and `schema` (persistence) and `checks` (kernel contract checks).
"""
