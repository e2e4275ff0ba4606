"""Sources: the heads of flows (spec STEPS.md §5), plus the later-upstream aliases of §10."""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr
from storey.sources.emit import AsyncSource, Source

SyncEmitSource = Source
AsyncEmitSource = AsyncSource

_LAZY = {
    "ReadCSV": "storey.sources.csv",
    "CSVSource": "storey.sources.csv",
    "ReadParquet": "storey.sources.parquet",
    "ParquetSource": "storey.sources.parquet",
    "DataframeSource": "storey.sources.dataframe",
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "AsyncEmitSource",
    "AsyncSource",
    "CSVSource",
    "DataframeSource",
    "ParquetSource",
    "ReadCSV",
    "ReadParquet",
    "Source",
    "SyncEmitSource",
]
