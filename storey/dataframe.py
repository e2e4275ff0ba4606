"""Compatibility module: dataframe steps of the original storey (same objects as `storey.targets`)."""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr

_LAZY = {
    "ToDataFrame": "storey.targets.dataframe",
    "ReduceToDataFrame": "storey.targets.dataframe",
    "DataframeSource": "storey.sources.dataframe",
}
__getattr__ = lazy_getattr(__name__, _LAZY)
__all__ = sorted(_LAZY)
