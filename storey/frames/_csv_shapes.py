"""Numpy proofs that every value of an Arrow string column matches a pattern of `storey.frames._io_csv`.

The vectorised CSV path accepts a float or datetime column only when every value matches ``_FLOAT`` or
``_DATETIME`` (Arrow's RE2 regex match costs ~40–60 ns a value). The common layouts are proven here on the
raw Arrow buffers with a few numpy passes instead:

- `plain_decimals`: every value is an optional sign then ASCII digits with at most one ``.``, at least one
  digit and at most 30 bytes in all. Every such value matches ``_FLOAT`` (``[+-]?`` then
  ``[0-9]{1,30}\\.?[0-9]{0,30}`` or ``\\.[0-9]{1,30}``).
- `fixed_datetimes`: every value has the layout of the first one (same length, the same non-digit bytes at
  the same places, digits elsewhere), that first value matches ``_DATETIME``, and the month, day, hour,
  minute, second and offset fields are in range at their places in every value. The regex then takes the
  same path through every value, so every value matches.

Each returns ``True`` only when it has proven the match; ``False`` means "cannot tell" and the caller asks
the regex (so a ``False`` never changes a result, only its cost). Null slots are never looked at: a column
with nulls is left to the regex, except by `plain_decimals`, which skips them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from storey.sources._csvparse import same_layout

__all__ = ["fixed_datetimes", "plain_decimals"]

_DIGIT0, _DIGIT9, _DOT, _PLUS, _MINUS = 48, 57, 46, 43, 45
_LAYOUT = re.compile(
    r"[0-9]{4}-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-](?P<tzhour>[0-9]{2}):(?P<tzminute>[0-9]{2}))?)?",
    re.ASCII,
)
"""``_DATETIME``'s structure with its fields captured (the ranges are checked per value)."""
_RANGES = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
_RANGES |= {"tzhour": (0, 23), "tzminute": (0, 59)}


def _two_digits(value: int) -> int:
    """The big-endian 16-bit word of `value`'s two ASCII digits (they compare as the numbers do)."""
    return (_DIGIT0 + value // 10) << 8 | (_DIGIT0 + value % 10)


def _buffers(arr: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Value offsets (n + 1, from the array's own offset) and the data bytes of a `string` array."""
    import pyarrow as pa

    if arr.type != pa.string():
        return None
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=4 * arr.offset)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return offsets, data


def plain_decimals(arr: Any) -> bool:
    """Whether every non-null value of `arr` is proven to match ``_FLOAT`` (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa
    >>> plain_decimals(pa.array(["1.5", None, "-.25", "7", "+10."]))
    True
    >>> [plain_decimals(pa.array([v])) for v in ("1e5", ".", "1.2.3", "-", "1-2")]
    [False, False, False, False, False]
    """
    got = _buffers(arr)
    if got is None or len(arr) == 0:
        return False
    offsets, data = got
    lengths = np.diff(offsets)
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not valid.any():
            return False
    else:
        valid = None
    start = int(offsets[0])
    seg = data[start : int(offsets[-1])]
    is_dot = seg == _DOT
    is_sign = (seg == _PLUS) | (seg == _MINUS)
    if not (is_dot | is_sign | ((seg >= _DIGIT0) & (seg <= _DIGIT9))).all():
        return False  # another byte somewhere (maybe in a null slot: then the regex decides)
    dots = np.concatenate(([0], np.cumsum(is_dot, dtype=np.int32)))
    rel = offsets.astype(np.int64) - start
    n_dots = dots[rel[1:]] - dots[rel[:-1]]
    signed = np.zeros(len(arr), dtype=bool)
    nonempty = lengths > 0
    signed[nonempty] = is_sign[rel[:-1][nonempty]]
    if int(np.count_nonzero(is_sign)) != int(np.count_nonzero(signed)):
        return False  # a sign that is not the first byte of its value
    ok = (lengths <= 30) & (n_dots <= 1) & (lengths - n_dots - signed >= 1)
    return bool(ok.all() if valid is None else ok[valid].all())


def fixed_datetimes(arr: Any) -> bool:
    """Whether every value of `arr` (no nulls) is proven to match ``_DATETIME`` (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa
    >>> fixed_datetimes(pa.array(["2024-01-31T23:59:59.125Z", "1999-12-01T00:00:00.000Z"]))
    True
    >>> fixed_datetimes(pa.array(["2024-01-31T23:59:59Z", "2024-13-01T00:00:00Z"]))  # month 13
    False
    """
    got = _buffers(arr)
    n = len(arr)
    if got is None or n == 0 or arr.null_count:
        return False
    offsets, data = got
    length = int(offsets[1] - offsets[0])
    if length == 0 or not (np.diff(offsets) == length).all():
        return False
    start = int(offsets[0])
    rows = data[start : start + n * length].reshape(n, length)
    first = rows[0].tobytes().decode("ascii", errors="replace")
    match = _LAYOUT.fullmatch(first)
    if match is None:
        return False
    template = rows[0]
    if not same_layout(rows, (template >= _DIGIT0) & (template <= _DIGIT9)):
        return False  # a byte differs from the first value's, or a digit place holds a non-digit
    fields = [(match.start(f), bounds) for f, bounds in _RANGES.items() if match.start(f) >= 0]
    places = [p for a, _ in fields for p in (a, a + 1)]
    pairs = np.ascontiguousarray(rows[:, places]).view(">u2")  # two digits per field, compared as text
    low = np.array([_two_digits(bounds[0]) for _, bounds in fields])
    high = np.array([_two_digits(bounds[1]) for _, bounds in fields])
    return bool((pairs.min(axis=0) >= low).all() and (pairs.max(axis=0) <= high).all())
