"""`OutputSink`: where `storey.frames` streams its result rows with ``output=`` (AGGREGATIONS.md §8.1).

A path ending in ``.csv`` is written as `WriteToCSV` writes (with a header); any other path is Parquet: one
file, or a dataset directory when the path ends in ``/`` or names an existing directory. Rows are written in
bounded batches, so memory does not grow with the output.
"""

from __future__ import annotations

import csv
import os
import uuid
from types import TracebackType
from typing import Any

from storey._utils._imports import require
from storey._utils._paths import is_url, join_path, makedirs_for, open_output, url_to_fs
from storey.sources._arrow import column_to_pylist
from storey.sources.parquet import open_parquet
from storey.targets.files import write_csv_rows

__all__ = ["OutputSink"]

_ROWS_PER_FILE = 1 << 20


class OutputSink:
    """Write record batches to a Parquet file, a Parquet dataset directory or a CSV file.

    Parameters
    ----------
    output
        Local path or fsspec URL. ``*.csv``: a CSV file with a header line, written as `WriteToCSV` writes
        (Python `csv` quoting, ``'\\n'`` line ends, ``None`` as an empty field, datetimes in ISO 8601,
        floats with `repr` so that they read back the same). A path ending in ``/`` or naming an existing
        directory: a Parquet dataset of ``part-{n:05d}-{uuid}.parquet`` files (a new file every
        `rows_per_file` rows; existing files are kept). Anything else: one Parquet file (truncated).
    storage_options
        fsspec options for URLs.
    batch_size
        Rows per write (Parquet row group, CSV chunk): larger inputs are split, smaller ones gathered.
    rows_per_file
        Rows per file of a dataset directory.

    Notes
    -----
    The first batch fixes the schema (Parquet) or the header (CSV); later batches are matched by column
    name and, for Parquet, cast to it (an impossible cast raises `TypeError` naming the column). Two
    promotions are made instead of failing, because `iter_batches` gives them for CSV columns: a ``null``
    column takes the type of its first values, and an integer column becomes float64 when a later batch
    holds floats that do not cast back; what was written is then rewritten with the promoted schema (the
    file, or every part file of a dataset), so a target always has one schema. A column missing from a
    later batch is written as null; a column that the first batch did not have raises `ValueError`.

    The target is opened (created or truncated) by the first `write`, even of zero rows; without any
    `write` nothing is created. `close` writes what is buffered and is idempotent; the sink is
    a context manager that closes on error too, so the rows written before an error stay readable.

    Examples
    --------
    >>> import os, tempfile
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "out.parquet")
    >>> with OutputSink(path) as sink:
    ...     sink.write(pa.table({"k": ["a"], "n": [1]}))
    ...     sink.write(pa.table({"n": [2.0], "k": ["b"]}))
    >>> pq.read_table(path).to_pydict()
    {'k': ['a', 'b'], 'n': [1, 2]}
    """

    def __init__(
        self,
        output: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        batch_size: int = 65536,
        rows_per_file: int = _ROWS_PER_FILE,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"storey.frames: batch_size must be an int of at least 1, got {batch_size!r}"
            raise ValueError(msg)
        if isinstance(rows_per_file, bool) or not isinstance(rows_per_file, int) or rows_per_file < 1:
            msg = f"storey.frames: rows_per_file must be an int of at least 1, got {rows_per_file!r}"
            raise ValueError(msg)
        self.path = os.fspath(output)
        self.storage_options = storage_options
        self.batch_size = batch_size
        self.rows_per_file = rows_per_file
        self.format = "csv" if self.path.endswith(".csv") else "parquet"
        self.dataset = self.format == "parquet" and _is_directory(self.path, storage_options)
        self.rows_written = 0
        self.schema: Any = None
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._closed = False
        self._opened = False
        self._file: Any = None
        self._writer: Any = None
        self._file_rows = 0
        self._files = 0
        self._parts: list[str] = []

    # --------------------------------------------------------------------------------------------- public
    def write(self, data: Any) -> None:
        """Write a `pyarrow.Table` or `RecordBatch` (split into batches of at most `batch_size` rows).

        Raises
        ------
        TypeError
            A column cannot be cast to the type the first batch fixed (Parquet), or `data` is not Arrow.
        ValueError
            A column the first batch did not have, or the sink is closed.
        """
        pa = require("pyarrow")
        if self._closed:
            msg = f"storey.frames: the output {self.path!r} is closed"
            raise ValueError(msg)
        if not isinstance(data, pa.Table | pa.RecordBatch):
            msg = f"storey.frames: an output sink writes pyarrow Tables or RecordBatches, not {type(data)}"
            raise TypeError(msg)
        if self.schema is None:
            self.schema = data.schema.remove_metadata()
        if not self._opened:
            self._open()
        if data.num_rows == 0:
            return
        conformed = self._conform(data)
        for rb in _batches(conformed, self.batch_size):
            self._pending.append(rb)
            self._pending_rows += rb.num_rows
            if self._pending_rows >= self.batch_size:
                self._flush(whole_batches=True)

    def close(self) -> None:
        """Write the buffered rows and close the target (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._opened:
                self._flush()
        finally:
            self._close_file()

    def __enter__(self) -> OutputSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "dataset" if self.dataset else self.format
        return f"OutputSink({self.path!r}, {kind}, rows_written={self.rows_written})"

    # ----------------------------------------------------------------------------------------- internals
    def _conform(self, data: Any) -> Any:
        """`data` with the schema's columns, in its order and (Parquet) types; may promote the schema."""
        schema = self.schema
        if data.schema.remove_metadata().equals(schema):
            return data
        extra = [n for n in data.schema.names if n not in schema.names]
        if extra:
            msg = (
                f"storey.frames: column {extra[0]!r} of a batch written to {self.path!r} is not among the "
                f"columns {schema.names} that the first batch fixed"
            )
            raise ValueError(msg)
        if self.format == "csv":  # CSV keeps each batch's types: only the column order matters
            return _arrange(data, schema, cast=False)
        try:
            return _arrange(data, schema, cast=True, where=repr(self.path))
        except TypeError:
            promoted = _promoted(schema, data.schema)
            if promoted is None:
                raise
        self._promote(promoted)
        return _arrange(data, promoted, cast=True, where=repr(self.path))

    def _promote(self, schema: Any) -> None:
        """Rewrite what was written with `schema`, a promotion of the current one (null → a type, int → float:
        the types `iter_batches` gives a CSV column can change so), and go on with it."""
        self._flush()
        self._close_file()
        self.schema = schema
        if self.dataset:
            for path in self._parts:
                _rewrite(path, schema, self.storage_options, self.batch_size)
            self._file_rows = self.rows_per_file  # the next rows start a new part file
            return
        tmp = _hidden_sibling(self.path)
        _move(self.path, tmp, self.storage_options)
        self._open_parquet(self.path)
        _copy_rows(tmp, self._writer, schema, self.storage_options, self.batch_size)
        _remove(tmp, self.storage_options)

    def _open(self) -> None:
        self._opened = True
        if self.format == "csv":
            self._file = open_output(self.path, "w", self.storage_options)
            self._writer = csv.writer(self._file, lineterminator="\n")
            write_csv_rows(self._file, [list(self.schema.names)], self._writer)
        elif self.dataset:
            makedirs_for(self.path, self.storage_options, is_dir=True)
        else:
            self._open_parquet(self.path)

    def _open_parquet(self, path: str) -> None:
        pq = require("pyarrow.parquet")
        if is_url(path) or self.storage_options:
            self._file = open_output(path, "wb", self.storage_options)
            self._writer = pq.ParquetWriter(self._file, self.schema)
        else:
            makedirs_for(path)
            self._writer = pq.ParquetWriter(path, self.schema)
        self._file_rows = 0

    def _flush(self, whole_batches: bool = False) -> None:
        """Write the buffered rows (with `whole_batches`, only multiples of `batch_size`; the rest waits)."""
        pa = require("pyarrow")
        if not self._pending:
            if self.dataset and self._files == 0 and self._writer is None:
                self._next_part()  # a dataset written only empty batches: one file with the schema
            return
        if self.format == "csv":
            batches, self._pending, self._pending_rows = self._pending, [], 0
            for rb in batches:
                self._write_csv(rb)
            self.rows_written += sum(rb.num_rows for rb in batches)
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        n = table.num_rows - table.num_rows % self.batch_size if whole_batches else table.num_rows
        rest = table.slice(n)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows
        self._write_parquet(table.slice(0, n))
        self.rows_written += n

    def _write_parquet(self, table: Any) -> None:
        if not self.dataset:
            self._writer.write_table(table, row_group_size=self.batch_size)
            return
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._file_rows >= self.rows_per_file:
                self._next_part()
            take = min(table.num_rows - start, self.rows_per_file - self._file_rows)
            self._writer.write_table(table.slice(start, take), row_group_size=self.batch_size)
            self._file_rows += take
            start += take

    def _next_part(self) -> None:
        self._close_file()
        name = f"part-{self._files:05d}-{uuid.uuid4().hex}.parquet"
        self._files += 1
        path = join_path(self.path, name)
        self._parts.append(path)
        self._open_parquet(path)

    def _write_csv(self, rb: Any) -> None:
        columns = [column_to_pylist(rb.column(i)) for i in range(rb.num_columns)]
        rows = zip(*columns, strict=True) if columns else ([] for _ in range(rb.num_rows))
        write_csv_rows(self._file, rows, self._writer)

    def _close_file(self) -> None:
        writer, self._writer = self._writer, None
        f, self._file = self._file, None
        try:
            if writer is not None and self.format == "parquet":
                writer.close()
        finally:
            if f is not None:
                f.close()


def _arrange(data: Any, schema: Any, *, cast: bool, where: str = "the output") -> Any:
    """`data` with the columns of `schema` in its order (absent ones null), cast to its types if `cast`.

    Raises
    ------
    TypeError
        A column cannot be cast (safely) to its type in `schema`.
    """
    pa = require("pyarrow")
    n = data.num_rows
    arrays = []
    for field in schema:
        if field.name not in data.schema.names:
            arrays.append(pa.nulls(n, field.type))
            continue
        column = data.column(field.name)
        if cast and column.type != field.type:
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                msg = (
                    f"storey.frames: column {field.name!r} has type {column.type} in a batch written to "
                    f"{where}, which cannot be cast to {field.type} fixed by the first batch: {exc}"
                )
                raise TypeError(msg) from exc
        arrays.append(column)
    if cast:
        if isinstance(data, pa.Table):
            return pa.Table.from_arrays(arrays, schema=schema)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    if isinstance(data, pa.Table):
        return pa.Table.from_arrays(arrays, names=schema.names)
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


def _promoted(schema: Any, other: Any) -> Any:
    """`schema` with null columns typed and int columns made float as `other` needs, or ``None``.

    Only these two promotions are made (``pyarrow.unify_schemas(promote_options='permissive')`` decides the
    result); any other difference stays a `TypeError`.
    """
    pa = require("pyarrow")
    fields = []
    changed = False
    for field in schema:
        if field.name not in other.names:
            fields.append(field)
            continue
        theirs = other.field(field.name).type
        ours = field.type
        allowed = pa.types.is_null(ours) or (pa.types.is_integer(ours) and pa.types.is_floating(theirs))
        if not allowed or theirs == ours:
            fields.append(field)
            continue
        try:
            unified = pa.unify_schemas(
                [pa.schema([field]), pa.schema([(field.name, theirs)])], promote_options="permissive"
            ).field(field.name)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        fields.append(unified)
        changed = True
    return pa.schema(fields) if changed else None


def _hidden_sibling(path: str) -> str:
    head, _, name = path.rpartition("/") if "/" in path else ("", "", path)
    hidden = f".{name}.storey-rewrite-{uuid.uuid4().hex}"
    return f"{head}/{hidden}" if head else hidden


def _move(src: str, dst: str, storage_options: dict[str, Any] | None) -> None:
    if not is_url(src):
        os.replace(src, dst)
        return
    fs, p = url_to_fs(src, storage_options)
    fs.mv(p, url_to_fs(dst, storage_options)[1])


def _remove(path: str, storage_options: dict[str, Any] | None) -> None:
    if not is_url(path):
        os.remove(path)
        return
    fs, p = url_to_fs(path, storage_options)
    fs.rm(p)


def _copy_rows(
    src: str, writer: Any, schema: Any, storage_options: dict[str, Any] | None, batch_size: int
) -> None:
    """Stream the rows of Parquet file `src` into `writer`, cast to `schema` (int → float may round)."""
    pa = require("pyarrow")
    pf = open_parquet(src, storage_options)
    try:
        for rb in pf.iter_batches(batch_size=batch_size):
            arrays = [rb.column(f.name).cast(f.type, safe=False) for f in schema]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=batch_size)
    finally:
        pf.close()


def _rewrite(path: str, schema: Any, storage_options: dict[str, Any] | None, batch_size: int) -> None:
    """Rewrite a closed Parquet file with `schema` (through a hidden temporary file)."""
    pq = require("pyarrow.parquet")
    tmp = _hidden_sibling(path)
    _move(path, tmp, storage_options)
    with open_output(path, "wb", storage_options) as f, pq.ParquetWriter(f, schema) as writer:
        _copy_rows(tmp, writer, schema, storage_options, batch_size)
    _remove(tmp, storage_options)


def _batches(data: Any, batch_size: int) -> list[Any]:
    pa = require("pyarrow")
    if isinstance(data, pa.RecordBatch):
        return [data.slice(a, batch_size) for a in range(0, data.num_rows, batch_size)]
    return [rb for rb in data.to_batches(max_chunksize=batch_size) if rb.num_rows]


def _is_directory(path: str, storage_options: dict[str, Any] | None) -> bool:
    """Whether a Parquet output is a dataset directory: a path ending in ``/`` or an existing directory."""
    if path.endswith("/"):
        return True
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = url_to_fs(path, storage_options)
    return bool(fs.isdir(p))
