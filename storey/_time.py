"""The one time-conversion helper (spec AGGREGATIONS.md §1).

Every instant inside storey is an int64 count of nanoseconds since the Unix epoch, UTC. `to_ns` (scalar) and
`to_ns_array` (vector) are the only places where conversion happens; the vector form gives exactly the same
integers as the scalar form.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import operator
import re
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from storey.errors import MissingFieldError

__all__ = ["from_ns", "now_ns", "to_datetime", "to_ns", "to_ns_array"]

UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
_I64_MIN = -(2**63) + 1  # -2**63 is NaT in numpy/pandas
_I64_MAX = 2**63 - 1
_ISO_FRACTION = re.compile(
    r"^(?P<head>[^.,]*T?[0-9:]*?[0-9]{2}:[0-9]{2}:[0-9]{2})[.,](?P<frac>[0-9]+)(?P<tail>.*)$"
)


def _check_range(ns: int) -> int:
    if ns < _I64_MIN or ns > _I64_MAX:
        msg = f"time {ns} ns is outside the supported range 1677-09-21 .. 2262-04-11"
        raise ValueError(msg)
    return ns


_UTC_EPOCHS: dict[Any, _dt.datetime] = {}
_TZINFO = operator.attrgetter("tzinfo")
"""Epochs carrying the very tzinfo object of a UTC zone: subtracting datetimes that share a tzinfo skips the
offset lookups (valid because a UTC zone has no transitions)."""


def _utc_epoch(tz: Any) -> _dt.datetime | None:
    epoch = _UTC_EPOCHS.get(tz)
    if epoch is None and (tz is UTC or getattr(tz, "key", None) in ("UTC", "Etc/UTC")):
        epoch = _UTC_EPOCHS[tz] = _dt.datetime(1970, 1, 1, tzinfo=tz)
    return epoch


def _datetime_to_ns(value: _dt.datetime) -> int:
    tz = value.tzinfo
    epoch = _utc_epoch(tz) if tz is not None else None
    if epoch is not None:
        delta = value - epoch
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return _check_range(micros * 1000)
    if tz is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _check_range(micros * 1000)


def _utc_datetimes_ns(values: list[Any]) -> list[int] | np.ndarray | None:
    """`_datetime_to_ns` over a list of aware `datetime`s sharing one UTC zone, in one pass (compiled when
    numba is already imported, else through pandas' vectorised conversion when pandas is); ``None`` for any
    other list (the caller then converts element by element).

    Raises
    ------
    ValueError
        An instant outside the int64 range.
    """
    if not values or set(map(type, values)) != {_dt.datetime}:
        return None
    zones = set(map(_TZINFO, values))
    epoch = _utc_epoch(zones.pop()) if len(zones) == 1 else None
    if epoch is None:
        return None
    if sys.modules.get("numba") is not None:  # the fields read from the objects in one compiled pass
        from storey._time_nb import utc_datetimes_ns

        fast = utc_datetimes_ns(values)
        if fast is not None:
            return fast
    pd = sys.modules.get("pandas")
    if pd is not None:
        try:
            return pd.DatetimeIndex(values).as_unit("ns").asi8  # type: ignore[no-any-return]
        except (ValueError, OverflowError):  # out of pandas' ns range: the exact path below raises or not
            pass
    out = [
        ((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds) * 1000
        for d in map(operator.sub, values, itertools.repeat(epoch))
    ]
    _check_range(min(out))
    _check_range(max(out))
    return out


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    name = type(value).__name__
    if name in ("NaTType", "NAType"):
        return True
    return False


def _parse_iso(text: str) -> int:
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    extra_ns = 0
    match = _ISO_FRACTION.match(s)
    if match is not None and len(match.group("frac")) > 6:
        frac = match.group("frac")
        extra_ns = int(frac[6:9].ljust(3, "0"))
        s = f"{match.group('head')}.{frac[:6]}{match.group('tail')}"
    try:
        parsed = _dt.datetime.fromisoformat(s)
    except ValueError:
        msg = f"cannot parse {text!r} as an ISO 8601 time"
        raise ValueError(msg) from None
    return _check_range(_datetime_to_ns(parsed) + extra_ns)


def to_ns(value: Any) -> int:
    """Convert one time value to int64 epoch nanoseconds (UTC).

    Parameters
    ----------
    value
        An aware or naive `datetime` (naive means UTC), a `pandas.Timestamp`, a `numpy.datetime64`, an
        `int` or `float` of epoch **milliseconds**, or an ISO 8601 `str`.

    Returns
    -------
    int
        Nanoseconds since 1970-01-01T00:00:00Z.

    Raises
    ------
    MissingFieldError
        The value is null (`None`, NaT).
    TypeError
        `bool` or an unsupported type.
    ValueError
        NaN/inf floats, unparseable strings, or an instant outside 1677-09-21 .. 2262-04-11.

    Examples
    --------
    >>> to_ns(1000)
    1000000000
    >>> to_ns("1970-01-01T00:00:01.5Z")
    1500000000
    >>> import datetime
    >>> to_ns(datetime.datetime(1970, 1, 1, 0, 0, 2))
    2000000000
    """
    if isinstance(value, _dt.datetime):
        if type(value).__name__ == "NaTType":
            msg = "time is null (NaT)"
            raise MissingFieldError(msg)
        pd_ts = _pandas_timestamp_ns(value)
        if pd_ts is not None:
            return pd_ts
        return _datetime_to_ns(value)
    if isinstance(value, bool | np.bool_):
        msg = f"cannot convert a bool ({value!r}) to a time"
        raise TypeError(msg)
    if isinstance(value, int | np.integer):
        return _check_range(int(value) * 1_000_000)
    if isinstance(value, float | np.floating):
        x = float(value)
        if math.isnan(x) or math.isinf(x):
            msg = f"cannot convert {x!r} to a time"
            raise ValueError(msg)
        return _check_range(int(round(x * 1e6)))
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            msg = "time is null (NaT)"
            raise MissingFieldError(msg)
        return _check_range(int(value.astype("datetime64[ns]").astype(np.int64)))
    if isinstance(value, str):
        return _parse_iso(value)
    if _is_null(value):
        msg = "time is null"
        raise MissingFieldError(msg)
    if isinstance(value, _dt.date):
        return _datetime_to_ns(_dt.datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, Decimal | Fraction):
        msg = f"cannot convert a {type(value).__name__} to a time; pass an int or float of epoch ms"
        raise TypeError(msg)
    msg = f"cannot convert a {type(value).__name__} ({value!r}) to a time"
    raise TypeError(msg)


def _pandas_timestamp_ns(value: _dt.datetime) -> int | None:
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(value, pd.Timestamp):
        return None
    # .value is the UTC instant for aware timestamps and the wall clock read as UTC for naive ones.
    return int(value.as_unit("ns").value)


def now_ns() -> int:
    """The current wall-clock time in epoch nanoseconds (µs resolution)."""
    return _datetime_to_ns(_dt.datetime.now(UTC))


def from_ns(ns: int) -> _dt.datetime:
    """Convert epoch nanoseconds back to an aware UTC datetime.

    A `pandas.Timestamp` is returned when sub-microsecond digits are present (pandas is then required).

    Examples
    --------
    >>> from_ns(1_500_000_000)
    datetime.datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=datetime.timezone.utc)
    """
    micros, rest = divmod(int(ns), 1000)
    if rest:
        import pandas as pd

        return pd.Timestamp(int(ns), unit="ns", tz="UTC")
    return _EPOCH + _dt.timedelta(microseconds=micros)


def to_datetime(value: Any) -> _dt.datetime:
    """Normalise a time value to an aware UTC datetime (`Event.time` rules).

    Aware UTC `datetime` objects are returned unchanged; a `pandas.Timestamp` keeps its ns precision.
    """
    if type(value) is _dt.datetime and value.tzinfo is UTC:
        return value
    if isinstance(value, _dt.datetime):
        if type(value).__name__ == "NaTType":
            msg = "time is null (NaT)"
            raise MissingFieldError(msg)
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(value, pd.Timestamp):
            return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, np.datetime64):
        return from_ns(to_ns(value))
    return from_ns(to_ns(value))


def to_ns_array(values: Any, *, column: str | None = None, source: str | None = None) -> np.ndarray:
    """Convert a column of time values to an int64 ns array, exactly as `to_ns` would element-wise.

    Accepts a numpy array, a list, a pandas Series or a pyarrow Array/ChunkedArray. Arrow timestamp
    columns of any unit (tz-aware or naive) are scaled to ns with an overflow check; date32/date64 are
    midnight UTC; int/float columns are epoch ms; strings are ISO 8601.

    Raises
    ------
    MissingFieldError
        A null time; the message names the column, the input and the 0-based row.

    Examples
    --------
    >>> to_ns_array([1, 2.5]).tolist()
    [1000000, 2500000]
    """
    if type(values) is list:
        fast = _utc_datetimes_ns(values)  # e.g. the times of a chunk of emitted bodies
        if fast is not None:
            return np.asarray(fast, dtype=np.int64)
    where = _where(column, source)
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(values, pa.ChunkedArray | pa.Array):
        return _arrow_to_ns(values, where)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(values, pd.Series | pd.Index):
        if pa is None:
            import pyarrow as pa
        return _arrow_to_ns(pa.array(values, from_pandas=True), where)
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        nat = np.isnat(arr)
        if nat.any():
            _null_error(where, int(np.flatnonzero(nat)[0]))
        return arr.astype("datetime64[ns]").astype(np.int64)
    if arr.dtype.kind in "iu":
        return _scale_checked(arr.astype(np.int64), 1_000_000, where)
    if arr.dtype.kind == "f":
        return _floats_to_ns(arr.astype(np.float64), where)
    return _objects_with_where(arr.tolist(), where)


def _where(column: str | None, source: str | None) -> str:
    parts = []
    if column is not None:
        parts.append(f"column {column!r}")
    if source is not None:
        parts.append(f"input {source}")
    return (", ".join(parts) + ", ") if parts else ""


def _null_error(where: str, row: int) -> None:
    msg = f"time is null: {where}row {row}"
    raise MissingFieldError(msg)


def _scale_checked(arr: np.ndarray, factor: int, where: str) -> np.ndarray:
    if factor == 1:
        return arr
    limit = _I64_MAX // factor
    bad = (arr > limit) | (arr < -limit)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = f"time {int(arr[i])} overflows int64 nanoseconds: {where}row {i}"
        raise ValueError(msg)
    return arr * np.int64(factor)


def _floats_to_ns(arr: np.ndarray, where: str) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if np.isnan(arr[i]):
            _null_error(where, i)
        msg = f"cannot convert {float(arr[i])!r} to a time: {where}row {i}"
        raise ValueError(msg)
    scaled = np.rint(arr * 1e6)  # rint rounds half to even, like round()
    if (np.abs(scaled) > 9.2e18).any():
        i = int(np.flatnonzero(np.abs(scaled) > 9.2e18)[0])
        msg = f"time {float(arr[i])!r} ms is outside the supported range: {where}row {i}"
        raise ValueError(msg)
    return scaled.astype(np.int64)


_UNIT_FACTOR = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _arrow_to_ns(values: Any, where: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if values.null_count:
        i = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        _null_error(where, i)
    t = values.type
    if pa.types.is_timestamp(t):
        raw = values.view(pa.int64()).to_numpy(zero_copy_only=False)
        return _scale_checked(raw.astype(np.int64, copy=False), _UNIT_FACTOR[t.unit], where)
    if pa.types.is_date32(t):
        days = values.view(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
        return days * np.int64(86_400_000_000_000)
    if pa.types.is_date64(t):
        ms = values.view(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
        return _scale_checked(ms, 1_000_000, where)
    if pa.types.is_integer(t):
        return _scale_checked(values.to_numpy(zero_copy_only=False).astype(np.int64), 1_000_000, where)
    if pa.types.is_floating(t):
        return _floats_to_ns(values.to_numpy(zero_copy_only=False).astype(np.float64), where)
    if pa.types.is_dictionary(t):
        return _arrow_to_ns(pc.cast(values, t.value_type), where)
    return _objects_with_where(values.to_pylist(), where)


def _objects_with_where(items: list[Any], where: str) -> np.ndarray:
    out = np.empty(len(items), dtype=np.int64)
    for i, v in enumerate(items):
        try:
            out[i] = to_ns(v)
        except MissingFieldError:
            _null_error(where, i)
        except (TypeError, ValueError) as exc:
            msg = f"{where}row {i}: {exc}"
            raise type(exc)(msg) from None
    return out
