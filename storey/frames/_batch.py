"""Column-wise normalisation of one input batch (spec AGGREGATIONS.md §8.3 step 1).

For each Arrow record batch: key ids (`KeyEncoder`), event times (`to_ns_array`, the stream's conversion),
and per aggregator a float64 value array with a status array and a filter mask. The conversions give the
values `AggregateByKey`'s `ValueReader` gives for the same rows:

- integer, floating and boolean columns are cast to float64 with numpy (``float(x)`` per element);
- decimals are converted element-wise with ``float()``;
- null and NaN are *skipped* (status `SKIP`);
- any other type is *invalid* (status `INVALID`, `TypeError` when such a value would be aggregated), except
  for count-only aggregators, where every non-null value counts as one (value ``0.0``).

`FieldEquals(field, value)` is evaluated once per distinct value of the column with Python's ``==``, so the
mask equals ``row[field] == value`` row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from storey.aggregations.field import FieldAggregator, FieldEquals
from storey.errors import MissingFieldError

__all__ = ["INVALID", "OK", "SKIP", "Batch", "equals_mask", "extract_values"]

OK = 0
SKIP = 1
INVALID = 2


def _numpy_of(column: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """numpy values of a primitive column (nulls filled with 0) and its null mask (``None``: no nulls)."""
    import pyarrow as pa

    nulls = None
    if column.null_count:
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        column = column.fill_null(pa.scalar(False) if pa.types.is_boolean(column.type) else 0)
    return column.to_numpy(zero_copy_only=False), nulls


def extract_values(column: Any, count_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(values, status)`` of one value column: float64 values and int8 `OK`/`SKIP`/`INVALID` codes."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = column.type
    n = len(column)
    status = np.zeros(n, dtype=np.int8)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        raw, nulls = _numpy_of(column)
        values = raw.astype(np.float64)
        if nulls is not None:
            status[nulls] = SKIP
        if pa.types.is_floating(t):
            status[np.isnan(values)] = SKIP
        return values, status
    if pa.types.is_null(t):
        return np.zeros(n, dtype=np.float64), np.full(n, SKIP, dtype=np.int8)
    nulls = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
    if pa.types.is_decimal(t):
        values = np.array([0.0 if v is None else float(v) for v in column.to_pylist()], dtype=np.float64)
        if nulls is not None:
            status[nulls] = SKIP
        status[np.isnan(values)] = SKIP
        return values, status
    values = np.zeros(n, dtype=np.float64)
    if not count_only:
        status[:] = INVALID
    if nulls is not None:
        status[nulls] = SKIP
    return values, status


def equals_mask(column: Any, value: Any) -> np.ndarray:
    """``row[field] == value`` for every row, evaluated once per distinct column value."""
    from storey.frames._keys import _encode_column

    codes, uniques = _encode_column(column)
    hits = np.fromiter((bool(u == value) for u in uniques), dtype=bool, count=len(uniques))
    return hits[codes] if len(codes) else np.zeros(0, dtype=bool)


class Batch:
    """One normalised input batch.

    Attributes
    ----------
    data
        The `pyarrow.RecordBatch` (the rows' bodies).
    source, row_offset
        Where the rows come from (for messages): the input name and the 0-based row of the first row.
    kids, times
        int64 key ids and event times (ns).
    values, status
        Per aggregator: float64 values and int8 codes, or ``None`` for a callable field.
    filters
        Per aggregator: a bool mask (`FieldEquals`), ``None`` (no filter), or the filter callable itself.
    """

    __slots__ = ("_rows", "data", "filters", "kids", "n", "row_offset", "source", "status", "times", "values")

    def __init__(self, data: Any, source: str, row_offset: int) -> None:
        self.data = data
        self.n = data.num_rows
        self.source = source
        self.row_offset = row_offset
        self._rows: list[dict[str, Any]] | None = None
        self.kids = np.empty(0, dtype=np.int64)
        self.times = np.empty(0, dtype=np.int64)
        self.values: list[np.ndarray | None] = []
        self.status: list[np.ndarray | None] = []
        self.filters: list[Any] = []

    def rows(self) -> list[dict[str, Any]]:
        """Row dicts as `ReadParquet` builds bodies (built once, for user callables)."""
        if self._rows is None:
            from storey.sources._arrow import rows_from_batch

            self._rows = rows_from_batch(self.data)
        return self._rows

    def where(self, i: int) -> str:
        """``input <source>, row <r>`` for row `i` of the batch."""
        return f"input {self.source}, row {self.row_offset + i}"

    def slice(self, stop: int) -> Batch:
        """The first `stop` rows (used when a row fails: the rows before it are still processed)."""
        out = Batch(self.data.slice(0, stop), self.source, self.row_offset)
        out.kids = self.kids[:stop]
        out.times = self.times[:stop]
        out.values = [None if v is None else v[:stop] for v in self.values]
        out.status = [None if s is None else s[:stop] for s in self.status]
        out.filters = [f[:stop] if isinstance(f, np.ndarray) else f for f in self.filters]
        if self._rows is not None:
            out._rows = self._rows[:stop]
        return out


def check_value_columns(aggregates: list[FieldAggregator], names: list[str], source: str, where: str) -> None:
    """`MissingFieldError` naming the column and the input for an absent value or filter column."""
    for agg in aggregates:
        cols = []
        if isinstance(agg.field, str):
            cols.append(("value", agg.field))
        if isinstance(agg.aggr_filter, FieldEquals):
            cols.append(("filter", agg.aggr_filter.field))
        for what, col in cols:
            if col not in names:
                msg = (
                    f"{where}: {what} column {col!r} of aggregator {agg.name!r} is missing in input {source} "
                    f"(columns {names})"
                )
                raise MissingFieldError(msg)


def fill_aggregator_columns(batch: Batch, aggregates: list[FieldAggregator]) -> None:
    """Set `batch.values`, `batch.status` and `batch.filters` for every aggregator."""
    data = batch.data
    cache: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
    masks: dict[tuple[str, Any], np.ndarray] = {}
    for agg in aggregates:
        if isinstance(agg.field, str):
            ck = (agg.field, agg.count_only)
            if ck not in cache:
                cache[ck] = extract_values(data.column(agg.field), agg.count_only)
            v, s = cache[ck]
            batch.values.append(v)
            batch.status.append(s)
        else:
            batch.values.append(None)
            batch.status.append(None)
        flt = agg.aggr_filter
        if isinstance(flt, FieldEquals):
            try:
                mk: tuple[str, Any] = (flt.field, flt.value)
                hash(mk)
            except TypeError:
                mk = (flt.field, id(flt))
            if mk not in masks:
                masks[mk] = equals_mask(data.column(flt.field), flt.value)
            batch.filters.append(masks[mk])
        else:
            batch.filters.append(flt)


def invalid_value_error(agg: FieldAggregator, batch: Batch, i: int, where: str) -> TypeError:
    """The `TypeError` for a non-numeric value of a not count-only aggregator (names feature, column,
    input and row)."""
    value = batch.data.column(agg.field).slice(i, 1).to_pylist()[0]
    msg = (
        f"{where}: aggregator {agg.name!r} needs numeric values in column {agg.field!r}, got "
        f"{type(value).__name__} {value!r} ({batch.where(i)})"
    )
    return TypeError(msg)


RowsFn = Callable[[], list[dict[str, Any]]]
