"""Outputs and writers (spec STEPS.md §7–8), plus the later-upstream aliases of §10."""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr

_LAZY = {
    "WriteToTable": "storey.targets.table",
    "NoSqlTarget": "storey.targets.table",
    "WriteToCSV": "storey.targets.files",
    "CSVTarget": "storey.targets.files",
    "WriteToParquet": "storey.targets.files",
    "ParquetTarget": "storey.targets.files",
    "WriteToV3IOStream": "storey.targets.streams",
    "StreamTarget": "storey.targets.streams",
    "WriteToTSDB": "storey.targets.tsdb",
    "TSDBTarget": "storey.targets.tsdb",
    "ToDataFrame": "storey.targets.dataframe",
    "ReduceToDataFrame": "storey.targets.dataframe",
}
__getattr__ = lazy_getattr(__name__, _LAZY)
__all__ = sorted(_LAZY)
