"""`InputBatch`, and the checks every input of `storey.frames` goes through (AGGREGATIONS.md §8.8).

An `InputBatch` is one bounded `pyarrow.RecordBatch` of one input, with what is needed to report a bad row:
the input's name, the row offset of the batch inside that input and, for CSV, the physical line of every
row. `require_columns` and `checked_time_ns` raise the §8.8 errors with those locations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from storey._time import to_ns_array
from storey.errors import MissingFieldError

__all__ = ["InputBatch", "checked_time_ns", "require_columns", "times_ns"]

_ROW_ZERO = re.compile(r"^row 0: |:? ?row 0$")  # to_ns_array locations of a one-row slice


@dataclass(frozen=True, slots=True, eq=False)
class InputBatch:
    """One bounded record batch of one input, in arrival order.

    Attributes
    ----------
    batch
        The rows, as a `pyarrow.RecordBatch` (at most ``batch_size`` rows; it may have zero rows when it
        only reports `skipped_rows`).
    source
        The input: its path or URL as given (files), or ``"<input i>"`` for in-memory data (``i`` is the
        position of the input among the inputs given).
    row_offset
        0-based row of the batch's first row within its source (a file, or one in-memory input). For CSV
        this counts the rows delivered (skipped rows are not counted); `lines` gives the physical lines.
    skipped_rows
        CSV rows skipped (``on_error='skip'``) since the previous batch of the same `iter_batches` call.
    lines
        CSV only: the 1-based physical line on which each row starts; ``None`` for other inputs.
    time_field
        The time column whose `time_ns` was computed (``None`` when no time field was given).
    time_ns
        int64 epoch nanoseconds of `time_field` for every row (AGGREGATIONS.md §1), already checked: a
        null or unconvertible time never reaches a batch.

    Examples
    --------
    >>> import pyarrow as pa
    >>> b = InputBatch(pa.record_batch({"v": [1, 2]}), "<input 0>", 10)
    >>> b.num_rows, b.where(1)
    (2, "(input '<input 0>', row 11)")
    """

    batch: Any
    source: str
    row_offset: int
    skipped_rows: int = 0
    lines: Sequence[int] | None = None
    time_field: str | None = None
    time_ns: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        """Rows in `batch`."""
        return int(self.batch.num_rows)

    def where(self, i: int) -> str:
        """Where row `i` of the batch comes from, for messages: its file and line (CSV) or input and row."""
        if self.lines is not None:
            return f"(file {self.source!r}, line {self.lines[i]})"
        return f"(input {self.source!r}, row {self.row_offset + i})"


def require_columns(names: Iterable[str], needed: Iterable[str | None], source: str) -> None:
    """Raise `MissingFieldError` naming the first needed column absent from `names` and the input."""
    available = list(names)
    have = set(available)
    for name in needed:
        if name is not None and name not in have:
            msg = f"storey.frames: column {name!r} is missing in input {source!r} (columns {available})"
            raise MissingFieldError(msg)


def checked_time_ns(
    column: Any, name: str, where: Callable[[int], str]
) -> tuple[np.ndarray, int | None, BaseException | None]:
    """Epoch ns of an Arrow time column, or the ns before its first bad row, that row and its error.

    Conversion is `storey._time.to_ns_array` (element-wise, so a prefix converts when the whole does not);
    ``where(i)`` gives the location of row ``i`` for the message. A null time gives `MissingFieldError`, an
    unconvertible one `ValueError` or `TypeError` (AGGREGATIONS.md §8.8).
    """
    try:
        return to_ns_array(column), None, None
    except (MissingFieldError, TypeError, ValueError, OverflowError):
        pass
    lo, hi = 0, len(column)  # the longest convertible prefix is column[:lo]; column[:hi] fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            to_ns_array(column.slice(0, mid))
            lo = mid
        except (MissingFieldError, TypeError, ValueError, OverflowError):
            hi = mid
    bad = lo
    ns = to_ns_array(column.slice(0, bad)) if bad else np.empty(0, dtype=np.int64)
    try:
        to_ns_array(column.slice(bad, 1))
    except MissingFieldError:
        msg = f"time field {name!r} is null {where(bad)}"
        return ns, bad, MissingFieldError(msg)
    except (TypeError, ValueError, OverflowError) as exc:
        reason = _ROW_ZERO.sub("", str(exc))
        msg = f"time field {name!r}: {reason} {where(bad)}"
        return ns, bad, (TypeError if isinstance(exc, TypeError) else ValueError)(msg)
    msg = f"time field {name!r}: the conversion failed {where(bad)}"  # pragma: no cover - element-wise
    return ns, bad, ValueError(msg)  # pragma: no cover


def times_ns(batch: InputBatch, time_field: str) -> np.ndarray:
    """int64 epoch ns of column `time_field` of `batch`, converted with `storey._time.to_ns_array`.

    Returns the times computed by `iter_batches` when it was given the same time field.

    Raises
    ------
    MissingFieldError
        The column is absent, or a time is null (the message names the column, the input and the row, or
        for CSV the line).
    ValueError, TypeError
        A time cannot be converted (same locations).

    Examples
    --------
    >>> import pyarrow as pa
    >>> b = InputBatch(pa.record_batch({"t": [1, None]}), "<input 0>", 0)
    >>> times_ns(InputBatch(b.batch.slice(0, 1), "<input 0>", 0), "t")
    array([1000000])
    >>> times_ns(b, "t")
    Traceback (most recent call last):
    ...
    storey.errors.MissingFieldError: time field 't' is null (input '<input 0>', row 1)
    """
    if batch.time_ns is not None and batch.time_field == time_field:
        return batch.time_ns
    require_columns(batch.batch.schema.names, [time_field], batch.source)
    ns, _, error = checked_time_ns(batch.batch.column(time_field), time_field, batch.where)
    if error is not None:
        raise error
    return ns
