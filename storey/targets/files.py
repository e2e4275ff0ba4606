"""`WriteToCSV` and `WriteToParquet` (aliases `CSVTarget`, `ParquetTarget`) (spec STEPS.md §8.2).

Both writers build rows with the column notation of §8.1 (`storey.targets._columns.ColumnSelector`),
buffer them, and write them out in batches. Each event is forwarded unchanged once its row is buffered.
Buffered rows are written at termination and also when the flow fails: every run registers a closeable that
writes what was accepted and closes the file, so nothing already accepted is lost when a later event fails.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as _dt
import io
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from typing import IO, Any

from storey._utils._imports import require
from storey._utils._paths import hive_directory, is_url, join_path, makedirs_for, open_output
from storey.event import Event
from storey.flow.runtime import Run
from storey.flow.step import Flow
from storey.steps.batching import pop_synonym
from storey.targets._columns import ColumnSelector, parse_columns

__all__ = ["CSVTarget", "ParquetTarget", "WriteToCSV", "WriteToParquet", "csv_value", "write_csv_rows"]


class _Closer:
    """The run's closeable for a writer: writes the buffered rows and closes the file (idempotent)."""

    def __init__(self, writer: _BufferedWriter) -> None:
        self._writer = writer

    async def close(self) -> None:
        self._writer._close_files()


class _BufferedWriter(Flow):
    """Buffers rows; writes every `max_rows` rows, `max_seconds` wall-clock seconds after the first
    buffered row, and at termination."""

    def __init__(
        self,
        selector: ColumnSelector,
        max_rows: int | None,
        max_seconds: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        selector.step = self.name
        if max_rows is not None and max_rows < 1:
            msg = f"step {self.name!r}: the number of rows per write must be at least 1, got {max_rows!r}"
            raise ValueError(msg)
        if max_seconds is not None and max_seconds <= 0:
            msg = f"step {self.name!r}: the seconds between writes must be positive, got {max_seconds!r}"
            raise ValueError(msg)
        self._selector = selector
        self._max_rows = max_rows
        self._max_seconds = max_seconds
        self._rows: list[Any] = []
        self._timer: asyncio.TimerHandle | None = None
        self._generation = 0
        self._finished = False

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self._selector.reset()
        self._rows = []
        self._timer = None
        self._generation = 0
        self._finished = False
        self._reset_files()
        run.add_closeable(_Closer(self))

    def _do(self, event: Event) -> Awaitable[Any] | None:
        self._rows.append(self._row(event))
        if self._max_seconds is not None and len(self._rows) == 1:
            gen = self._generation
            self._timer = asyncio.get_running_loop().call_later(self._max_seconds, self._on_timer, gen)
        if self._max_rows is not None and len(self._rows) >= self._max_rows:
            self._write_buffer()
        return self._forward(event)

    def _row(self, event: Event) -> Any:
        return self._selector.row(event)

    def _write_buffer(self) -> None:
        rows, self._rows = self._rows, []
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if rows:
            self._write(rows)

    def _on_timer(self, gen: int) -> None:
        if gen != self._generation or self._finished:
            return
        try:
            self._write_buffer()
        except Exception as exc:
            if self._run is not None:
                self._run.fail(self._fail(exc, None))

    async def _flush(self) -> None:
        self._close_files()

    def _close_files(self) -> None:
        """Write what is buffered and close (at termination, or via the closeable after a failure)."""
        if self._finished:
            return
        self._finished = True
        try:
            self._write_buffer()
        finally:
            self._finish()

    def _failed(self) -> bool:
        """Whether the run failed (a failed run only writes what was accepted; it creates nothing else)."""
        return self._run is not None and self._run.error is not None

    # hooks ------------------------------------------------------------------------------------------
    def _reset_files(self) -> None:
        raise NotImplementedError

    def _write(self, rows: list[Any]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ CSV
def csv_value(value: Any) -> Any:
    """A value as `WriteToCSV` writes it: dates, datetimes and times in ISO 8601, anything else as the
    `csv` module writes it (``None`` empty, floats with `repr`)."""
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    return value


def write_csv_rows(f: IO[str], rows: Iterable[Sequence[Any]], writer: Any = None) -> None:
    r"""Write rows to a text file exactly as `WriteToCSV` does (reusable by `storey.frames` outputs).

    Python `csv` quoting with ``'\n'`` line endings; values converted by `csv_value`. Fields holding
    ``'\r'`` are quoted too (the csv module only quotes the characters of its line terminator).

    Examples
    --------
    >>> import io, datetime
    >>> buf = io.StringIO()
    >>> write_csv_rows(buf, [["a", None, 0.1], ["x\ry", datetime.date(2024, 1, 2), 1]])
    >>> buf.getvalue()
    'a,,0.1\n"x\ry",2024-01-02,1\n'
    """
    if writer is None:
        writer = csv.writer(f, lineterminator="\n")
    lines = [[csv_value(v) for v in row] for row in rows]
    if any(map(_has_cr, lines)):
        for line in lines:
            if _has_cr(line):
                f.write(_crlf_safe_line(line))
            else:
                writer.writerow(line)
    else:
        writer.writerows(lines)


def _has_cr(row: list[Any]) -> bool:
    return any(type(v) is str and "\r" in v for v in row)


def _crlf_safe_line(row: list[Any]) -> str:
    r"""One CSV line ending in ``'\n'`` whose fields holding ``'\r'`` are quoted (written with ``'\r\n'``,
    which quotes both, then the terminator is swapped)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(row)
    return buf.getvalue()[:-2] + "\n"


class WriteToCSV(_BufferedWriter):
    """Write events as CSV rows.

    Parameters
    ----------
    path
        Local path or fsspec URL. Parent directories are created, and the file is **truncated** when it is
        opened: at the first write, or at termination if no event came.
    columns
        Column entries (§8.1 notation: ``'name'``, ``'out=src'``, ``'$key'``, ``'out=$time'``, ...).
    header
        Write a header line (needs known columns, else `ValueError`).
    infer_columns_from_data
        Add the keys of the first dict body (in body order); defaults to ``True`` without `columns`.
    max_lines_before_flush
        Rows per write (synonym ``max_events``).
    max_seconds_before_flush
        Wall-clock seconds after the first buffered row before a write (synonym ``flush_after_seconds``).
    storage_options
        fsspec options for URLs.

    Notes
    -----
    Python `csv` quoting with ``'\\n'`` line endings. ``None`` is an empty field, dates and datetimes are
    written in ISO 8601 and floats with `repr` (so that `ReadCSV` reads back the same values). Events are
    forwarded unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> from storey import build_flow, Source
    >>> path = os.path.join(tempfile.mkdtemp(), "out", "rows.csv")
    >>> c = build_flow([Source(), WriteToCSV(path, columns=["$key", "v"], header=True)]).run()
    >>> _ = c.emit({"v": 0.1}, key="a")
    >>> _ = c.emit({"v": None}, key="b")
    >>> c.terminate(wait=True)
    >>> print(open(path).read(), end="")
    key,v
    a,0.1
    b,
    """

    def __init__(
        self,
        path: str,
        columns: Sequence[str] | None = None,
        header: bool = False,
        infer_columns_from_data: bool | None = None,
        max_lines_before_flush: int = 128,
        max_seconds_before_flush: float | None = 3,
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        max_lines_before_flush = pop_synonym(
            kwargs, "max_events", "max_lines_before_flush", max_lines_before_flush, 128, "WriteToCSV"
        )
        max_seconds_before_flush = pop_synonym(
            kwargs,
            "flush_after_seconds",
            "max_seconds_before_flush",
            max_seconds_before_flush,
            3,
            "WriteToCSV",
        )
        selector = ColumnSelector(columns, infer_columns_from_data=infer_columns_from_data)
        super().__init__(selector, max_lines_before_flush, max_seconds_before_flush, **kwargs)
        self._path = path
        self._header = bool(header)
        self._storage_options = storage_options
        self._file: Any = None
        self._writer: Any = None

    def _reset_files(self) -> None:
        self._file = None
        self._writer = None

    def _open(self) -> None:
        names = self._selector.names
        if self._header and names is None:
            msg = (
                f"step {self.name!r}: header=True but no column names are known "
                "(pass columns=, or send a dict body first)"
            )
            raise ValueError(msg)
        self._file = open_output(self._path, "w", self._storage_options)
        self._writer = csv.writer(self._file, lineterminator="\n")
        if self._header:
            write_csv_rows(self._file, [names], self._writer)  # type: ignore[list-item]

    def _write(self, rows: list[Any]) -> None:
        if self._file is None:
            self._open()
        write_csv_rows(self._file, rows, self._writer)
        self._file.flush()

    def _finish(self) -> None:
        try:
            if self._file is None and not self._failed():
                self._open()  # no event came: truncate (and write the header)
        finally:
            f, self._file = self._file, None
            if f is not None:
                f.close()


# -------------------------------------------------------------------------------------------- Parquet
class WriteToParquet(_BufferedWriter):
    """Write events to Parquet: appended to one file, or one file per batch in a directory.

    Parameters
    ----------
    path
        A path ending in ``.parquet`` (and no `partition_cols`) is a **single-file target**: every batch is
        appended to one open file. Any other path is a **directory target**: each batch becomes
        ``part-{n:05d}-{uuid}.parquet``, under hive directories ``name=value`` when `partition_cols` is set.
    index_cols
        Columns written first and stored as the pandas index.
    columns
        Column entries (§8.1 notation).
    partition_cols
        Partition columns (written columns, or further §8.1 entries such as ``'$key'``); they become
        directory names and are not stored in the files.
    infer_columns_from_data
        Add the keys of the first dict body (in body order); defaults to ``True`` without `columns`.
    max_events, timeout_secs
        Rows per batch, and wall-clock seconds after a batch's first row (synonym ``flush_after_seconds``).
        By default everything is written at termination.
    storage_options
        fsspec options for URLs.

    Notes
    -----
    ``$time`` columns are written as ``timestamp[ns, UTC]``; other columns get the types Arrow infers. The
    schema is fixed by the first batch: later batches are cast to it, and an impossible cast fails with
    `TypeError` naming the column. Events are forwarded unchanged.

    Examples
    --------
    >>> import os, tempfile
    >>> import pyarrow.parquet as pq
    >>> from storey import build_flow, Source
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.parquet")
    >>> c = build_flow([Source(), WriteToParquet(path, columns=["$key", "v"], max_events=2)]).run()
    >>> for i in range(3):
    ...     _ = c.emit({"v": i}, key=f"k{i}")
    >>> c.terminate(wait=True)
    >>> pq.read_table(path).to_pylist()
    [{'key': 'k0', 'v': 0}, {'key': 'k1', 'v': 1}, {'key': 'k2', 'v': 2}]
    """

    def __init__(
        self,
        path: str,
        index_cols: Sequence[str] | str | None = None,
        columns: Sequence[str] | None = None,
        partition_cols: Sequence[str] | str | None = None,
        infer_columns_from_data: bool | None = None,
        max_events: int | None = None,
        timeout_secs: float | None = None,
        storage_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        timeout_secs = pop_synonym(
            kwargs, "flush_after_seconds", "timeout_secs", timeout_secs, None, "WriteToParquet"
        )
        selector = ColumnSelector(
            columns, index_cols=index_cols, infer_columns_from_data=infer_columns_from_data, time_as_ns=True
        )
        super().__init__(selector, max_events, timeout_secs, **kwargs)
        self._path = path
        self._partitions = parse_columns(partition_cols)
        self._single_file = path.endswith(".parquet") and not self._partitions
        self._storage_options = storage_options
        self._reset_files()

    def _reset_files(self) -> None:
        self._schema: Any = None
        self._data_schema: Any = None
        self._writer: Any = None
        self._sink: Any = None
        self._n = 0
        self._extra: ColumnSelector | None = None
        self._part_names: list[str] = []

    # rows -------------------------------------------------------------------------------------------
    def _row(self, event: Event) -> Any:
        row = self._selector.row(event)
        if self._partitions:
            if self._extra is None:
                self._resolve_partitions()
            if self._extra is not None and self._extra.columns:
                row = row + self._extra.row(event)
        return row

    def _resolve_partitions(self) -> None:
        names = self._selector.names or []
        extra = [p.entry for p in self._partitions if p.name not in names]
        self._extra = ColumnSelector(
            extra or None, infer_columns_from_data=False, step=self.name, time_as_ns=True
        )
        self._part_names = [p.name for p in self._partitions]

    def _names(self) -> list[str]:
        names = self._selector.names
        if names is None:
            msg = (
                f"step {self.name!r}: Parquet needs column names: pass columns=, or send dict bodies "
                "(list bodies need columns)"
            )
            raise ValueError(msg)
        if self._extra is not None and self._extra.names:
            names = names + self._extra.names
        return names

    def _time_columns(self) -> set[str]:
        cols = list(self._selector.columns or [])
        if self._extra is not None:
            cols += self._extra.columns or []
        return {c.name for c in cols if c.meta and c.field == "time"}

    # tables -----------------------------------------------------------------------------------------
    def _table(self, rows: list[Any]) -> Any:
        pa = require("pyarrow")
        names = self._names()
        times = self._time_columns()
        width = len(names)
        for row in rows:
            if len(row) != width:
                msg = f"step {self.name!r}: a row has {len(row)} values for the {width} columns {names}"
                raise ValueError(msg)
        columns = list(zip(*rows, strict=True))
        arrays = []
        for name, values in zip(names, columns, strict=True):
            try:
                if name in times:
                    arrays.append(pa.array(values, pa.int64()).cast(pa.timestamp("ns", tz="UTC")))
                else:
                    arrays.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                msg = f"step {self.name!r}: column {name!r} cannot be converted to Arrow: {exc}"
                raise TypeError(msg) from exc
        table = pa.Table.from_arrays(arrays, names=names)
        if self._schema is None:
            self._schema = table.schema
            return table
        return self._conform(table)

    def _conform(self, table: Any) -> Any:
        """Cast `table` to the schema of the first batch (`TypeError` naming the column if impossible)."""
        pa = require("pyarrow")
        schema = self._schema
        if table.schema.equals(schema):
            return table
        arrays = []
        for field, column in zip(schema, table.columns, strict=True):
            if column.type == field.type:
                arrays.append(column)
                continue
            try:
                arrays.append(column.cast(field.type, safe=True))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                msg = (
                    f"step {self.name!r}: column {field.name!r} has type {column.type} in this batch, which "
                    f"cannot be cast to {field.type} fixed by the first batch: {exc}"
                )
                raise TypeError(msg) from exc
        return pa.Table.from_arrays(arrays, schema=schema)

    def _data(self, table: Any) -> Any:
        """Drop partition columns; put index columns last with pandas index metadata."""
        if self._part_names:
            table = table.drop_columns(self._part_names)
        if self._data_schema is None:
            self._data_schema = _index_schema(table.schema, [c.name for c in self._selector.index])
        schema = self._data_schema
        return table.select(schema.names).replace_schema_metadata(schema.metadata)

    # files ------------------------------------------------------------------------------------------
    def _write(self, rows: list[Any]) -> None:
        table = self._table(rows)
        if self._single_file:
            self._append(self._data(table))
        elif self._part_names:
            self._write_partitions(table)
        else:
            self._write_file(self._data(table), self._path)
        self._n += 1

    def _append(self, data: Any) -> None:
        pq = require("pyarrow.parquet")
        if self._writer is None:
            if is_url(self._path) or self._storage_options:
                self._sink = open_output(self._path, "wb", self._storage_options)
                self._writer = pq.ParquetWriter(self._sink, data.schema)
            else:
                makedirs_for(self._path)
                self._writer = pq.ParquetWriter(self._path, data.schema)
        self._writer.write_table(data)

    def _write_file(self, data: Any, directory: str) -> None:
        pq = require("pyarrow.parquet")
        path = join_path(directory, f"part-{self._n:05d}-{uuid.uuid4().hex}.parquet")
        with open_output(path, "wb", self._storage_options) as f:
            pq.write_table(data, f)

    def _write_partitions(self, table: Any) -> None:
        keys = [table.column(name).to_pylist() for name in self._part_names]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(zip(*keys, strict=True)):
            groups.setdefault(key, []).append(i)
        data = self._data(table)
        for key, rows in groups.items():
            directory = join_path(self._path, hive_directory(zip(self._part_names, key, strict=True)))
            self._write_file(data.take(rows), directory)

    def _finish(self) -> None:
        writer, self._writer = self._writer, None
        sink, self._sink = self._sink, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if sink is not None:
                sink.close()


def _index_schema(schema: Any, index: list[str]) -> Any:
    """`schema` with the index columns last and pandas metadata naming them as the index."""
    if not index:
        return schema
    pa = require("pyarrow")
    data = [n for n in schema.names if n not in index]
    ordered = pa.schema([schema.field(n) for n in data + index])
    frame = ordered.empty_table().to_pandas().set_index(index)
    metadata = pa.Schema.from_pandas(frame, preserve_index=True).metadata
    return ordered.with_metadata(metadata)


CSVTarget = WriteToCSV
ParquetTarget = WriteToParquet
