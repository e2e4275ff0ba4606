"""Parquet files and in-memory data (Arrow, pandas, polars) as bounded `InputBatch`es.

Parquet files are read in `ReadParquet`'s order and with its column rules (STEPS.md §5.4): the files of a
list of paths and directories are expanded by `storey._utils._paths.expand_paths` (lexicographic, names
starting with ``.``/``_`` skipped), hive partition columns are typed by `hive_partitions` and come after the
file's columns, and each file is read with `ParquetFile.iter_batches` and column projection, without any
per-row Python. In-memory data keeps its row order; a pandas DataFrame has the columns `DataframeSource`
builds bodies from (named index levels first, then the column labels as they are).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from storey._utils._imports import require
from storey._utils._paths import DataFile, expand_paths, hive_partitions
from storey.frames._io_batch import InputBatch, checked_time_ns, require_columns
from storey.sources.dataframe import _labels
from storey.sources.parquet import open_parquet

__all__ = [
    "is_arrow_stream",
    "memory_batches",
    "pandas_to_table",
    "parquet_batches",
    "polars_to_table",
    "select_names",
]


def select_names(available: Sequence[str], columns: Sequence[str] | None, needed: Sequence[str]) -> list[str]:
    """The output columns: all `available` ones (or `columns`), followed by the `needed` ones not among them.

    A needed column that is not available stays in the list, so that `require_columns` reports it.
    """
    return list(dict.fromkeys([*(available if columns is None else columns), *needed]))


def timed_batches(
    batches: Iterable[Any], source: str, time_field: str | None, first_row: int = 0
) -> Iterator[InputBatch]:
    """`InputBatch`es of record batches of one source, with their times checked.

    A null or unconvertible time ends the input: the rows before it are yielded, then the error is raised
    (AGGREGATIONS.md §8.8), as the stream would have processed them before failing.
    """
    offset = first_row
    for rb in batches:
        n = rb.num_rows
        if time_field is None:
            yield InputBatch(rb, source, offset)
            offset += n
            continue
        ns, bad, error = checked_time_ns(
            rb.column(time_field), time_field, lambda i, o=offset: f"(input {source!r}, row {o + i})"
        )
        if bad is not None:
            if bad:
                yield InputBatch(rb.slice(0, bad), source, offset, time_field=time_field, time_ns=ns[:bad])
            raise error  # type: ignore[misc]
        yield InputBatch(rb, source, offset, time_field=time_field, time_ns=ns)
        offset += n


# ------------------------------------------------------------------------------------------------ Parquet
def parquet_batches(
    paths: Sequence[str],
    *,
    columns: Sequence[str] | None,
    needed: Sequence[str],
    batch_size: int,
    storage_options: dict[str, Any] | None,
    time_field: str | None,
) -> Iterator[InputBatch]:
    """The rows of Parquet files and directories, in `ReadParquet`'s file order."""
    files = expand_paths(list(paths), storage_options)
    partitions = hive_partitions(files)
    for file, values in zip(files, partitions.values, strict=True):
        batches = _file_batches(file, partitions.fields, values, columns, needed, batch_size, storage_options)
        yield from timed_batches(batches, file.path, time_field)


def _file_batches(
    file: DataFile,
    part_fields: list[tuple[str, Any]],
    part_values: dict[str, Any],
    columns: Sequence[str] | None,
    needed: Sequence[str],
    batch_size: int,
    storage_options: dict[str, Any] | None,
) -> Iterator[Any]:
    pa = require("pyarrow")
    pf = open_parquet(file.path, storage_options)
    try:
        file_names = list(pf.schema_arrow.names)
        parts = {name: t for name, t in part_fields if name not in file_names}
        names = select_names(file_names + list(parts), columns, needed)
        require_columns(file_names + list(parts), names, file.path)
        read = [n for n in names if n not in parts]
        rows = pf.iter_batches(batch_size=batch_size, columns=read, use_threads=True)
        while True:
            try:
                rb = next(rows)
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                msg = f"storey.frames: cannot read {file.path!r} as Parquet: {exc}"
                raise ValueError(msg) from exc
            if parts:
                arrays = [
                    _constant(pa, part_values.get(name), parts[name], rb.num_rows)
                    if name in parts
                    else rb.column(name)
                    for name in names
                ]
                rb = pa.RecordBatch.from_arrays(arrays, names=names)
            yield rb
    finally:
        pf.close()


def _constant(pa: Any, value: Any, type_: Any, n: int) -> Any:
    """A column holding `value` (``None`` is null) `n` times, typed as the hive partition field."""
    if value is None:
        return pa.nulls(n, type_)
    return pa.repeat(pa.scalar(value, type_), n)


# -------------------------------------------------------------------------------------------- in memory
def is_arrow_stream(obj: Any) -> bool:
    """Whether `obj` is an in-memory input handled by `memory_batches` (not a path, not a list of inputs)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(obj, pa.Table | pa.RecordBatch | pa.RecordBatchReader):
        return True
    return _is_pandas(obj) or _is_polars(obj)


def _is_pandas(obj: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


def _is_polars(obj: Any) -> bool:
    pl = sys.modules.get("polars")
    return pl is not None and isinstance(obj, pl.DataFrame)


def memory_batches(
    obj: Any,
    source: str,
    *,
    columns: Sequence[str] | None,
    needed: Sequence[str],
    batch_size: int,
    time_field: str | None,
) -> Iterator[InputBatch]:
    """The rows of one in-memory input, in row order, in batches of at most `batch_size` rows.

    `obj` is a `pyarrow.Table`, `RecordBatch`, `RecordBatchReader`, pandas or polars DataFrame, or an
    iterable of record batches (or tables), which is one input.
    """
    pa = require("pyarrow")
    if _is_pandas(obj):
        obj = pandas_to_table(obj, source)
    elif _is_polars(obj):
        obj = polars_to_table(obj)
    if isinstance(obj, pa.Table | pa.RecordBatch):
        names = select_names(obj.schema.names, columns, needed)
        require_columns(obj.schema.names, names, source)
        if obj.schema.names != names:
            obj = obj.select(names)
        return timed_batches(_bounded(obj, batch_size), source, time_field)
    if isinstance(obj, pa.RecordBatchReader):
        names = select_names(obj.schema.names, columns, needed)
        require_columns(obj.schema.names, names, source)
        return timed_batches(_stream(iter(obj), names, source, batch_size), source, time_field)
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | dict | os.PathLike):
        return timed_batches(
            _stream(iter(obj), None, source, batch_size, columns, needed), source, time_field
        )
    msg = (
        "storey.frames: an input must be a pyarrow Table, RecordBatch or RecordBatchReader, an iterable of "
        f"record batches, a pandas or polars DataFrame, or paths; input {source!r} is a {type(obj).__name__}"
    )
    raise TypeError(msg)


def _bounded(data: Any, batch_size: int) -> Iterator[Any]:
    """Record batches of at most `batch_size` rows of a Table or RecordBatch (zero-copy slices)."""
    pa = require("pyarrow")
    if isinstance(data, pa.RecordBatch):
        for start in range(0, data.num_rows, batch_size):
            yield data.slice(start, batch_size)
        return
    yield from data.to_batches(max_chunksize=batch_size)


def _stream(
    items: Iterator[Any],
    names: list[str] | None,
    source: str,
    batch_size: int,
    columns: Sequence[str] | None = None,
    needed: Sequence[str] = (),
) -> Iterator[Any]:
    """Bounded, projected record batches of a stream of record batches or tables (one input)."""
    pa = require("pyarrow")
    for item in items:
        if not isinstance(item, pa.RecordBatch | pa.Table):
            msg = (
                f"storey.frames: input {source!r} is an iterable of record batches, but an item is a "
                f"{type(item).__name__}"
            )
            raise TypeError(msg)
        wanted = names if names is not None else select_names(item.schema.names, columns, needed)
        require_columns(item.schema.names, wanted, source)
        if item.schema.names != wanted:
            item = item.select(wanted)
        yield from _bounded(item, batch_size)


def polars_to_table(df: Any) -> Any:
    """A polars DataFrame as a `pyarrow.Table` (polars' own Arrow export)."""
    return df.to_arrow()


def pandas_to_table(df: Any, source: str) -> Any:
    """A pandas DataFrame as a `pyarrow.Table` with the columns `DataframeSource` builds bodies from.

    Named index levels come first, then the columns, under their labels as they are (they must be
    strings). Float columns keep ``NaN`` (``DataframeSource`` gives ``NaN``); other missing values
    (``None``, ``NaT``, ``pd.NA``) are null.

    Raises
    ------
    TypeError
        A label that is not a str (Arrow column names are strings).
    ValueError
        An index level named like a column, or a label given twice (as `DataframeSource` raises).
    """
    pa = require("pyarrow")
    labels, _ = _labels(df, "storey.frames")
    bad = next((label for label in labels if not isinstance(label, str)), None)
    if bad is not None:
        msg = (
            f"storey.frames: input {source!r} has the column label {bad!r} ({type(bad).__name__}); column "
            "labels must be strings (rename the columns)"
        )
        raise TypeError(msg)
    arrays = []
    columns = list(df.columns)
    for level, name in enumerate(df.index.names):
        if name is not None:
            arrays.append(_pandas_array(pa, df.index.get_level_values(level)))
    arrays.extend(_pandas_array(pa, df.iloc[:, position]) for position in range(len(columns)))
    return pa.Table.from_arrays(arrays, names=labels)


def _pandas_array(pa: Any, values: Any) -> Any:
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return pa.array(values.to_numpy(), from_pandas=False)  # keep NaN, as DataframeSource does
    return pa.array(values, from_pandas=True)
