"""Processing steps (spec STEPS.md §6)."""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr
from storey.steps.batching import Batch
from storey.steps.functional import Extend, Filter, FlatMap, Map, MapClass, MapWithState
from storey.steps.join import JoinWithTable
from storey.steps.outputs import Complete, Reduce
from storey.steps.routing import Choice

__getattr__ = lazy_getattr(
    __name__,
    {
        "SendToHttp": "storey.steps.http",
        "HttpRequest": "storey.steps.http",
        "HttpResponse": "storey.steps.http",
        "JoinWithV3IOTable": "storey.steps.join_v3io",
    },
)

__all__ = [
    "Batch",
    "Choice",
    "Complete",
    "Extend",
    "Filter",
    "FlatMap",
    "HttpRequest",
    "HttpResponse",
    "JoinWithTable",
    "JoinWithV3IOTable",
    "Map",
    "MapClass",
    "MapWithState",
    "Reduce",
    "SendToHttp",
]
