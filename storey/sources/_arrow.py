"""Arrow columns to Python values, as `ReadParquet` builds bodies (spec STEPS.md §5.4).

Arrow's own Python conversion is used for every type except timestamps: null gives ``None``, and a
timestamp of any unit and time zone gives an aware UTC `datetime` (a `pandas.Timestamp` for a value with
sub-microsecond digits). `storey.frames` uses the same functions when it builds row dicts for callables.

Examples
--------
>>> import pyarrow as pa
>>> column_to_pylist(pa.array([0, None, 1_500], pa.timestamp("ns", tz="Europe/Paris")))
[datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), None, Timestamp('1970-01-01 00:00:00.000001500+0000', tz='UTC')]
>>> rows_from_batch(pa.record_batch({"k": ["a", "b"], "v": [1, None]}))
[{'k': 'a', 'v': 1}, {'k': 'b', 'v': None}]
"""  # noqa: E501

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

from storey._time import from_ns
from storey.sources._reading import dict_rows

__all__ = ["column_to_pylist", "datetimes_from_ns", "rows_from_batch"]

_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_SLICE = 4096  # datetimes made at once (see `_aware_datetimes`)


def datetimes_from_ns(ns: np.ndarray) -> list[Any]:
    """Aware UTC datetimes for int64 epoch ns (a `pandas.Timestamp` where sub-µs digits are present)."""
    micros, rest = np.divmod(ns, 1000)
    out = _aware_datetimes(micros)
    if rest.any():
        for i in np.flatnonzero(rest).tolist():
            out[i] = from_ns(int(ns[i]))
    return out


def _aware_datetimes(micros: np.ndarray) -> list[_dt.datetime]:
    """Aware UTC datetimes for epoch microseconds, built from their 10-byte pickle states.

    ``datetime(state, tzinfo)`` is the constructor pickle uses (``datetime.__reduce__``): the fields are
    computed for the whole array with integer numpy arithmetic (the civil-from-days algorithm of
    `_civil_from_days`), which is several times faster than ``epoch + timedelta`` per value. Long arrays are
    converted in slices, so the garbage collector never scans a huge list of fresh objects.
    """
    n = len(micros)
    if n > _SLICE:
        out: list[_dt.datetime] = []
        for a in range(0, n, _SLICE):
            out += _aware_datetimes(micros[a : a + _SLICE])
        return out
    micros = np.asarray(micros, dtype=np.int64)
    days, rest = np.divmod(micros, np.int64(86_400_000_000))  # rest: µs since midnight
    year, month, day = _civil_from_days(days)
    state = np.empty((n, 10), dtype=np.uint8)
    state[:, 0] = year >> 8
    state[:, 1] = year & 255
    state[:, 2] = month
    state[:, 3] = day
    state[:, 4] = rest // 3_600_000_000
    state[:, 5] = rest // 60_000_000 % 60
    state[:, 6] = rest // 1_000_000 % 60
    fraction = rest % 1_000_000
    state[:, 7] = fraction >> 16
    state[:, 8] = (fraction >> 8) & 255
    state[:, 9] = fraction & 255
    return list(map(_dt.datetime, state.view("V10").ravel().tolist(), repeat(_dt.UTC, n)))


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proleptic Gregorian (year, month, day) of days since 1970-01-01 (H. Hinnant's ``civil_from_days``)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097  # day of the 400-year era, [0, 146096]
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year starting in March, [0, 365]
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def column_to_pylist(column: Any) -> list[Any]:
    """Python values of an Arrow Array or ChunkedArray (see the module docstring)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    t = column.type
    if pa.types.is_dictionary(t) and pa.types.is_timestamp(t.value_type):
        column = column.cast(t.value_type)
        t = column.type
    if not pa.types.is_timestamp(t):
        return column.to_pylist()
    factor = _UNIT_NS[t.unit]
    raw = _int64_values(column.view(pa.int64()))  # a null's slot holds an arbitrary value ...
    valid = None
    if column.null_count:
        valid = np.asarray(column.is_valid().to_pylist(), dtype=bool)
        raw = np.where(valid, raw, 0)  # ... so it is set to 0 before any range check
    if factor != 1:
        limit = (2**63 - 1) // factor
        if np.abs(raw).max(initial=0) > limit:
            return [None if v is None else _aware(v) for v in column.to_pylist()]
        raw = raw * np.int64(factor)
    out = datetimes_from_ns(raw)
    if valid is not None:
        for i in np.flatnonzero(~valid).tolist():
            out[i] = None
    return out


def _int64_values(ints: Any) -> np.ndarray:
    """The value slots of an int64 Arrow array, zero-copy (``Array.to_numpy`` would import pandas)."""
    n = len(ints)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    return np.frombuffer(ints.buffers()[1], dtype=np.int64, count=n, offset=8 * ints.offset)


def _aware(value: Any) -> Any:
    """Fallback for timestamps outside the ns range: Arrow's datetime, made aware UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC)


def rows_from_batch(batch: Any, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Row dicts of a `pyarrow.RecordBatch` or `Table` (columns `names`, default all, in that order)."""
    names = list(batch.schema.names if names is None else names)
    columns = [column_to_pylist(batch.column(n)) for n in names]
    return dict_rows(names)(columns) if columns else [{} for _ in range(batch.num_rows)]
