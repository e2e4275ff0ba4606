"""`ReadParquet` (alias `ParquetSource`): a flow source reading Parquet files (spec STEPS.md §5.4)."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from storey._time import to_ns, to_ns_array
from storey._utils._imports import require
from storey._utils._paths import DataFile, expand_paths, hive_partitions, is_url, url_to_fs
from storey.errors import MissingFieldError
from storey.flow.batch import EventBatch
from storey.flow.runtime import Run
from storey.sources._arrow import column_to_pylist
from storey.sources._reading import checked_times, dict_rows, event_chunks, guard_reading
from storey.sources.base import ReaderSource

__all__ = ["ParquetSource", "ReadParquet", "open_parquet"]

Field = str | list[str] | None


def open_parquet(path: str, storage_options: dict[str, Any] | None = None) -> Any:
    """A `pyarrow.parquet.ParquetFile` for a local path or fsspec URL.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file is not valid Parquet (the message names it).
    """
    pq = require("pyarrow.parquet")
    pa = require("pyarrow")
    try:
        if not is_url(path) and not storage_options:
            return pq.ParquetFile(path)
        fs, p = url_to_fs(path, storage_options)
        return pq.ParquetFile(fs.open(p, "rb"))
    except FileNotFoundError:
        msg = f"no such file: {path!r}"
        raise FileNotFoundError(msg) from None
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"{path!r} is not a valid Parquet file: {exc}"
        raise ValueError(msg) from exc


class ReadParquet(ReaderSource):
    """Read Parquet files (or directories of them) into events, one event per row.

    Parameters
    ----------
    paths
        A file, a directory or a list of them (local, or fsspec URLs with `storage_options`). Directories
        are expanded recursively (skipping names starting with ``.`` or ``_``) and all files are read in
        lexicographic path order. Hive directories (``name=value``) add their partition columns, typed as
        ``pyarrow.dataset`` types them.
    columns
        Restrict the columns read (the key, time, id and filter fields are added).
    key_field, time_field, id_field
        Columns giving the event key (a list of columns gives a list key), time and id.
    start_filter, end_filter
        Keep rows with ``start_filter <= t < end_filter`` (datetimes; naive means UTC; ``None`` is open).
    filter_column
        The column filtered on; defaults to `time_field`.
    batch_size
        Rows read per Arrow batch.

    Notes
    -----
    Bodies are dicts built with Arrow's Python conversion: null gives ``None``; timestamps give aware UTC
    datetimes (a `pandas.Timestamp` when sub-microsecond digits are present). The time column may have any
    timestamp unit or time zone (AGGREGATIONS.md §1); a null time fails with `MissingFieldError`. Each
    event's ``origin`` is ``(path, row index in the file)``.

    Examples
    --------
    >>> import os, tempfile, datetime
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> from storey import build_flow, Reduce
    >>> path = os.path.join(tempfile.mkdtemp(), "events.parquet")
    >>> t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    >>> times = [t0 + datetime.timedelta(minutes=i) for i in range(3)]
    >>> pq.write_table(pa.table({"user": ["a", "b", "a"], "time": times, "n": [1, 2, 3]}), path)
    >>> flow = build_flow([
    ...     ReadParquet(path, key_field="user", time_field="time", start_filter=times[1]),
    ...     Reduce([], lambda acc, e: acc + [(e.key, e.body["n"], e.origin[1])], full_event=True),
    ... ])
    >>> flow.run().await_termination()
    [('b', 2, 1), ('a', 3, 2)]
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        columns: Sequence[str] | None = None,
        key_field: Field = None,
        time_field: str | None = None,
        id_field: str | None = None,
        start_filter: Any = None,
        end_filter: Any = None,
        filter_column: str | None = None,
        storage_options: dict[str, Any] | None = None,
        batch_size: int = 65536,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self._paths = [os.fspath(p) for p in paths]
        self._columns = None if columns is None else list(columns)
        self._key_field = key_field
        self._time_field = time_field
        self._id_field = id_field
        self._filter_column = filter_column if filter_column is not None else time_field
        if (start_filter is not None or end_filter is not None) and self._filter_column is None:
            msg = f"step {self.name!r}: start_filter/end_filter need a filter_column or a time_field"
            raise ValueError(msg)
        self._start_ns = None if start_filter is None else _filter_ns(start_filter, "start_filter", self.name)
        self._end_ns = None if end_filter is None else _filter_ns(end_filter, "end_filter", self.name)
        self._storage_options = storage_options
        if batch_size < 1:
            msg = f"step {self.name!r}: batch_size must be at least 1, got {batch_size!r}"
            raise ValueError(msg)
        self._batch_size = int(batch_size)
        self.metrics: dict[str, int] = {"rows": 0}

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self.metrics = {"rows": 0}

    # ---------------------------------------------------------------------------------------- reading
    def _needed(self) -> list[str]:
        """Fields that must exist in every file (key, time, id, filter column)."""
        out: list[str] = []
        keys = self._key_field if isinstance(self._key_field, list) else [self._key_field]
        for f in (*keys, self._time_field, self._id_field, self._filter_column):
            if f is not None and f not in out:
                out.append(f)
        return out

    def _read_batches(self) -> Iterator[EventBatch]:
        return guard_reading(self.name, self._events())

    def _events(self) -> Iterator[EventBatch]:
        files = expand_paths(self._paths, self._storage_options)
        partitions = hive_partitions(files)
        part_names = [name for name, _ in partitions.fields]
        for file, part_values in zip(files, partitions.values, strict=True):
            yield from self._file_events(file, part_names, part_values)

    def _file_events(
        self, file: DataFile, part_names: list[str], part_values: dict[str, Any]
    ) -> Iterator[EventBatch]:
        pf = open_parquet(file.path, self._storage_options)
        file_names = list(pf.schema_arrow.names)
        parts = [p for p in part_names if p not in file_names]
        available = file_names + parts
        names = list(available) if self._columns is None else list(self._columns)
        for f in self._needed():
            if f not in names:
                names.append(f)
        missing = [n for n in names if n not in available]
        if missing:
            msg = (
                f"step {self.name!r}: column {missing[0]!r} is missing in {file.path!r} (columns {available})"
            )
            raise MissingFieldError(msg)
        read = [n for n in names if n in file_names]
        build = dict_rows(names)
        offset = 0
        for rb in pf.iter_batches(batch_size=self._batch_size, columns=read, use_threads=False):
            n = rb.num_rows
            positions = np.arange(offset, offset + n)
            offset += n
            chunks, error = self._batch_events(file.path, rb, names, parts, part_values, positions, build)
            for events in chunks:
                self.metrics["rows"] += len(events)
                yield events
            if error is not None:
                raise error

    def _batch_events(
        self,
        path: str,
        rb: Any,
        names: list[str],
        parts: list[str],
        part_values: dict[str, Any],
        positions: np.ndarray,
        build: Any,
    ) -> tuple[Iterator[EventBatch], BaseException | None]:
        """Event lists of one Arrow batch, and the error of its first bad row (rows before it are kept)."""
        error: BaseException | None = None
        times = None
        if self._time_field is not None:
            times, bad, error = checked_times(
                rb.column(self._time_field),
                self._time_field,
                lambda i: f"(file {path!r}, row {int(positions[i])})",
            )
            if bad is not None:
                rb, positions, times = rb.slice(0, bad), positions[:bad], times[:bad]
        if self._start_ns is not None or self._end_ns is not None:
            keep = self._keep(rb, times, path, positions)
            if not keep.all():
                idx = np.flatnonzero(keep)
                rb, positions = rb.take(idx), positions[idx]
                times = None if times is None else times[idx]
        n = rb.num_rows
        if n == 0:
            return iter(()), error
        columns = []
        for name in names:
            if name in parts and name not in rb.schema.names:
                columns.append([part_values.get(name)] * n)
            else:
                columns.append(column_to_pylist(rb.column(name)))
        by_name = dict(zip(names, columns, strict=True))
        keys = self._keys(by_name)
        ids = None if self._id_field is None else by_name[self._id_field]
        ns = None if times is None else times.tolist()
        first = int(positions[0])
        if int(positions[-1]) - first == n - 1:  # no row filtered out: a range, sliced and indexed as needed
            rows: Sequence[int] = range(first, first + n)
        else:
            rows = positions.tolist()
        return event_chunks(build, columns, keys, ns, path, rows, ids), error

    def _keys(self, by_name: dict[str, list[Any]]) -> list[Any] | None:
        kf = self._key_field
        if kf is None:
            return None
        if isinstance(kf, list):
            return list(map(list, zip(*(by_name[k] for k in kf), strict=True)))
        return by_name[kf]

    def _keep(self, rb: Any, times: np.ndarray | None, path: str, positions: np.ndarray) -> np.ndarray:
        if self._filter_column == self._time_field and times is not None:
            t = times
            valid = np.ones(len(t), dtype=bool)
        else:
            col = rb.column(self._filter_column)
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            t = np.zeros(len(col), dtype=np.int64)
            if valid.any():
                idx = np.flatnonzero(valid)
                t[idx] = to_ns_array(col.take(idx), column=self._filter_column, source=repr(path))
        keep = valid.copy()
        if self._start_ns is not None:
            keep &= t >= self._start_ns
        if self._end_ns is not None:
            keep &= t < self._end_ns
        return keep


def _filter_ns(value: Any, what: str, step: str) -> int:
    if not isinstance(value, _dt.datetime):
        msg = f"step {step!r}: {what} must be a datetime or None, got {type(value).__name__}: {value!r}"
        raise TypeError(msg)
    return to_ns(value)


ParquetSource = ReadParquet
