"""storey: real-time and batch feature engineering.

Streaming flows are built with `build_flow([...])` from sources, processing steps and outputs; keyed windowed
aggregations (`AggregateByKey`) persist in a `Table`; `storey.frames` computes the same features over Arrow
data, bit-identical to the stream.

``import storey`` imports only the standard library and numpy; every other name is loaded on first use.
"""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr

__version__ = "0.3.0.dev0"

_ERRORS = [
    "StoreyError",
    "FlowError",
    "MissingFieldError",
    "CSVParseError",
    "SchemaMismatchError",
    "V3ioError",
    "RedisError",
    "SQLiteError",
    "PerformanceWarning",
]
_DTYPES = [
    "FieldAggregator",
    "FieldEquals",
    "SlidingWindows",
    "FixedWindows",
    "FixedWindowType",
    "EmitPolicy",
    "EmitBase",
    "EmitEveryEvent",
    "EmitAfterMaxEvent",
    "EmitAfterPeriod",
    "EmitAfterWindow",
    "EmitAfterDelay",
    "EmissionType",
    "LateDataHandling",
    "emit_policy_from_dict",
    "to_ns",
    "to_ns_array",
]
_FLOW = [
    "Flow",
    "build_flow",
    "Context",
    "FlowController",
    "AsyncFlowController",
    "FlowAwaiter",
    "AwaitableResult",
]
_STEPS = [
    "Filter",
    "Map",
    "FlatMap",
    "Extend",
    "MapWithState",
    "MapClass",
    "Choice",
    "Batch",
    "Complete",
    "Reduce",
    "SendToHttp",
    "HttpRequest",
    "HttpResponse",
    "JoinWithTable",
    "JoinWithV3IOTable",
]
_SOURCES = [
    "Source",
    "AsyncSource",
    "ReadCSV",
    "ReadParquet",
    "DataframeSource",
    "SyncEmitSource",
    "AsyncEmitSource",
    "CSVSource",
    "ParquetSource",
]
_AGGREGATIONS = ["AggregateByKey", "QueryByKey", "QueryAggregationByKey"]
_TARGETS = [
    "WriteToTable",
    "WriteToCSV",
    "WriteToParquet",
    "WriteToV3IOStream",
    "WriteToTSDB",
    "ToDataFrame",
    "ReduceToDataFrame",
    "NoSqlTarget",
    "StreamTarget",
    "CSVTarget",
    "ParquetTarget",
    "TSDBTarget",
]
_DRIVERS = ["Driver", "NoopDriver", "SQLiteDriver", "V3ioDriver", "RedisDriver"]

_LAZY: dict[str, str] = {}
for _names, _module in (
    (["Event"], "storey.event"),
    (_ERRORS, "storey.errors"),
    (_DTYPES, "storey.dtypes"),
    (_FLOW, "storey.flow"),
    (_STEPS, "storey.steps"),
    (_SOURCES, "storey.sources"),
    (_AGGREGATIONS, "storey.aggregations"),
    (_TARGETS, "storey.targets"),
    (["Table"], "storey.table"),
    (_DRIVERS, "storey.drivers"),
):
    for _name in _names:
        _LAZY[_name] = _module

__getattr__ = lazy_getattr(__name__, _LAZY)
__all__ = sorted(_LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
