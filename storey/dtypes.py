"""Compatibility home of `Event`, windows, aggregators and emit policies (re-exports; spec STEPS.md §0.1).

``from storey.dtypes import SlidingWindows`` and ``from storey import SlidingWindows`` give the same object.
It also re-exports every error class.
"""

from __future__ import annotations

from storey._time import to_ns, to_ns_array
from storey._utils._lazy import lazy_getattr
from storey.errors import (
    CSVParseError,
    FlowError,
    MissingFieldError,
    PerformanceWarning,
    RedisError,
    SchemaMismatchError,
    SQLiteError,
    StoreyError,
    V3ioError,
)
from storey.event import Event

_LAZY = {
    "SlidingWindows": "storey.aggregations.windows",
    "FixedWindows": "storey.aggregations.windows",
    "FixedWindowType": "storey.aggregations.windows",
    "FieldAggregator": "storey.aggregations.field",
    "FieldEquals": "storey.aggregations.field",
    "EmitPolicy": "storey.aggregations.emit",
    "EmitBase": "storey.aggregations.emit",
    "EmitEveryEvent": "storey.aggregations.emit",
    "EmitAfterMaxEvent": "storey.aggregations.emit",
    "EmitAfterPeriod": "storey.aggregations.emit",
    "EmitAfterWindow": "storey.aggregations.emit",
    "EmitAfterDelay": "storey.aggregations.emit",
    "EmissionType": "storey.aggregations.emit",
    "LateDataHandling": "storey.aggregations.emit",
    "emit_policy_from_dict": "storey.aggregations.emit",
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "CSVParseError",
    "Event",
    "FlowError",
    "MissingFieldError",
    "PerformanceWarning",
    "RedisError",
    "SQLiteError",
    "SchemaMismatchError",
    "StoreyError",
    "V3ioError",
    "to_ns",
    "to_ns_array",
    *_LAZY,
]
