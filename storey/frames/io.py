"""Input and output of the batch engine `storey.frames` (AGGREGATIONS.md §8.1, §8.2, §8.4, §8.8).

`iter_batches` turns every accepted input into bounded `pyarrow.RecordBatch`es in arrival order, holding the
values the equivalent streaming source would put in event bodies: `ReadParquet` for Parquet, Arrow and polars
data, `DataframeSource` for pandas, `ReadCSV(header=True, build_dict=True)` for CSV. `times_ns` gives the
checked event times of a batch. `OutputSink` writes result tables to a Parquet file, a Parquet dataset
directory or a CSV file in bounded batches.

Examples
--------
>>> import os, tempfile
>>> import pyarrow as pa
>>> directory = tempfile.mkdtemp()
>>> with OutputSink(os.path.join(directory, "rows.csv")) as sink:
...     sink.write(pa.table({"k": ["a", "b"], "t": ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z"]}))
>>> [b] = iter_batches(os.path.join(directory, "rows.csv"), time_field="t")
>>> b.batch.column("k").to_pylist(), b.lines, times_ns(b, "t").tolist()
(['a', 'b'], range(2, 4), [1704067200000000000, 1704067201000000000])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from storey.frames._io_arrow import is_arrow_stream, memory_batches, parquet_batches
from storey.frames._io_batch import InputBatch, times_ns
from storey.frames._io_csv import csv_batches
from storey.frames._io_sink import OutputSink

__all__ = ["InputBatch", "OutputSink", "iter_batches", "times_ns"]


def iter_batches(
    data: Any,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    storage_options: dict[str, Any] | None = None,
    time_field: str | None = None,
    key_fields: Sequence[str] | None = None,
    value_fields: Sequence[str] | None = None,
) -> Iterator[InputBatch]:
    """Read `data` as bounded record batches in arrival order (input row order, inputs in the order given).

    Parameters
    ----------
    data
        A `pyarrow.Table`, `RecordBatch`, `RecordBatchReader` or iterable of record batches, a pandas or
        polars DataFrame, a path or fsspec URL, or a list or tuple of these (several inputs, read in order).
        A path ending in ``.csv`` is CSV; any other file, and every directory, is Parquet. Consecutive
        Parquet paths are read together in `ReadParquet`'s order (all their files sorted by path, hive
        partition columns typed across them); consecutive CSV paths are read in the order given by one
        parser, as one `ReadCSV` reads them (types are inferred across the files, headers must be equal).
    columns
        Restrict the columns (in this order); the key, time and value fields are appended when absent.
        ``None`` keeps every column (pandas: named index levels first, then the columns; Parquet: the
        file's columns, then hive partition columns).
    batch_size
        Maximum rows per batch.
    on_error
        ``'raise'`` or ``'skip'``: what a CSV row that cannot be parsed does (`ReadCSV`'s meaning).
    storage_options
        fsspec options for URLs.
    time_field
        The time column: its times are converted (AGGREGATIONS.md §1) and checked, and given as
        `InputBatch.time_ns`.
    key_fields, value_fields
        Other columns that must exist.

    Returns
    -------
    Iterator[InputBatch]
        Batches of at most `batch_size` rows. The schema of CSV batches may change from one batch to the
        next (a column of empty values is ``null`` until a value is seen; an int column widens to float
        where the parser widens it); other inputs keep their Arrow types. A zero-row CSV batch may come
        only to report `InputBatch.skipped_rows`.

    Raises
    ------
    MissingFieldError
        A needed column is absent from an input (before any of its rows), or a time is null.
    CSVParseError
        A CSV row cannot be parsed (``on_error='raise'``), an empty CSV file included (line 1).
    ValueError, TypeError
        A time cannot be converted; a file is not valid Parquet (`ValueError` naming it); bad arguments.
    FileNotFoundError
        A path does not exist.

    Errors about a row come after the batches of the rows before it, as the stream would have
    processed them first.

    Examples
    --------
    >>> import pyarrow as pa
    >>> table = pa.table({"k": ["a", "b", "c"], "t": [0, 1000, 2000]})
    >>> [(b.source, b.row_offset, b.num_rows) for b in iter_batches(table, batch_size=2, time_field="t")]
    [('<input 0>', 0, 2), ('<input 0>', 2, 1)]
    >>> next(iter_batches([table, table], columns=["t"])).batch.schema.names
    ['t']
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        msg = f"storey.frames: batch_size must be an int of at least 1, got {batch_size!r}"
        raise ValueError(msg)
    if on_error not in ("raise", "skip"):
        msg = f"storey.frames: on_error must be 'raise' or 'skip', got {on_error!r}"
        raise ValueError(msg)
    needed = _needed(time_field, key_fields, value_fields)
    cols = None if columns is None else _names("columns", columns)
    options: dict[str, Any] = {
        "columns": cols,
        "needed": needed,
        "batch_size": batch_size,
        "time_field": time_field,
    }
    readers: list[Callable[[], Iterator[InputBatch]]] = []
    for kind, index, item in _inputs(data):
        if kind == "csv":
            readers.append(
                _bind(csv_batches, item, on_error=on_error, storage_options=storage_options, **options)
            )
        elif kind == "parquet":
            readers.append(_bind(parquet_batches, item, storage_options=storage_options, **options))
        else:
            readers.append(_bind(memory_batches, item, f"<input {index}>", **options))
    return _chain(readers)


def _bind(
    fn: Callable[..., Iterator[InputBatch]], *args: Any, **kwargs: Any
) -> Callable[[], Iterator[InputBatch]]:
    return lambda: fn(*args, **kwargs)


def _chain(readers: list[Callable[[], Iterator[InputBatch]]]) -> Iterator[InputBatch]:
    for reader in readers:
        yield from reader()


def _names(what: str, names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = list(names)
    for name in out:
        if not isinstance(name, str):
            msg = f"storey.frames: {what} must be column names (str), got {type(name).__name__}: {name!r}"
            raise TypeError(msg)
    return out


def _needed(
    time_field: str | None, key_fields: Sequence[str] | None, value_fields: Sequence[str] | None
) -> list[str]:
    needed: list[str] = []  # in ReadParquet's order: key fields, then the time field
    if key_fields is not None:
        needed += _names("key_fields", key_fields)
    if time_field is not None:
        needed += _names("time_field", [time_field])
    if value_fields is not None:
        needed += _names("value_fields", value_fields)
    return list(dict.fromkeys(needed))


def _is_path(obj: Any) -> bool:
    return isinstance(obj, str | os.PathLike)


def _is_csv(path: str) -> bool:
    return path.endswith(".csv")


def _inputs(data: Any) -> Iterator[tuple[str, int, Any]]:
    """``(kind, index, item)``: runs of CSV or Parquet paths (kind ``'csv'``/``'parquet'``, item the list of
    paths) and in-memory inputs (kind ``'memory'``), with the position of the first item in `data`."""
    items = list(data) if isinstance(data, list | tuple) else [data]
    run: list[str] = []
    run_kind = ""
    run_index = 0
    for index, item in enumerate(items):
        if _is_path(item):
            path = os.fspath(item)
            kind = "csv" if _is_csv(path) else "parquet"
            if run and kind != run_kind:
                yield run_kind, run_index, run
                run = []
            if not run:
                run_kind, run_index = kind, index
            run.append(path)
            continue
        if run:
            yield run_kind, run_index, run
            run = []
        if isinstance(item, list | tuple) or not (is_arrow_stream(item) or isinstance(item, Iterable)):
            msg = (
                "storey.frames: an input must be a pyarrow Table, RecordBatch or RecordBatchReader, an "
                "iterable of record batches, a pandas or polars DataFrame, or a path; input "
                f"{index} is a {type(item).__name__}"
            )
            raise TypeError(msg)
        yield "memory", index, item
    if run:
        yield run_kind, run_index, run
