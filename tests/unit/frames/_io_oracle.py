"""Oracles for the `storey.frames.io` tests: the bodies the streaming sources build, and a strict comparison."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from storey import Reduce, build_flow
from storey._time import to_ns
from storey.frames.io import iter_batches
from storey.sources._arrow import rows_from_batch


def stream_bodies(source: Any) -> list[dict[str, Any]]:
    """The dict bodies a source step emits, in order (the §8.2 definition of arrival order and values)."""
    flow = build_flow([source, Reduce([], lambda acc, body: [*acc, body])])
    return flow.run().await_termination()


def frames_rows(data: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The rows `iter_batches` gives, as dicts built with ReadParquet's Arrow → Python conversion."""
    rows: list[dict[str, Any]] = []
    for batch in iter_batches(data, **kwargs):
        assert batch.num_rows <= kwargs.get("batch_size", 65536)
        rows.extend(rows_from_batch(batch.batch))
    return rows


def _kind(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # datetime.datetime or pandas.Timestamp: compared by value
        return dt.datetime
    return type(value)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def same_value(a: Any, b: Any, exact: bool = True, missing: bool = False) -> bool:
    """Equal values (NaN equals NaN) of the same type; with ``exact=False`` datetimes (`datetime`, pandas
    `Timestamp`, naive or aware) are compared as instants; with ``missing=True`` None and NaN are equal."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if missing and _missing(a) and _missing(b):
        return True
    if (type(a) is not type(b)) if exact else (_kind(a) is not _kind(b)):
        return False
    if not exact and isinstance(a, dt.datetime):  # the same instant (naive means UTC, AGGREGATIONS.md §1)
        return to_ns(a) == to_ns(b)
    return bool(a == b)


def assert_same_rows(
    got: list[dict[str, Any]], want: list[dict[str, Any]], exact: bool = True, missing: bool = False
) -> None:
    """Equal row count, keys in the same order, equal values of the same Python type (NaN equals NaN)."""
    assert len(got) == len(want), (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert list(g) == list(w), (i, list(g), list(w))
        for k in w:
            assert same_value(g[k], w[k], exact, missing), (i, k, g[k], w[k], type(g[k]), type(w[k]))
