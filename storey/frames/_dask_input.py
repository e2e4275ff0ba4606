"""Inputs of the Dask engine: arrival-ordered partitions of rows and the prefix pass (AGGREGATIONS.md §8.7).

Every input becomes a list of *parts*, each computed by one Dask task, in arrival order. A part holds the rows
as the local engine reads them (the same readers: `memory_batches`, `csv_batches`, and Parquet row groups
with `ReadParquet`'s file order and hive columns), their checked event times in ns, and where they come from:

- a Parquet file or directory: one part per run of row groups of about ``partition_rows`` rows, read by
  the workers;
- CSV files: one part read by one task (one parser reads them in order, so types are inferred across files
  as `ReadCSV` infers them);
- a `dask.dataframe.DataFrame`: one part per partition, in order (each partition converted as the local
  engine converts a pandas DataFrame);
- in-memory data (Arrow, pandas, polars, record batch streams): read on the calling process as the local
  engine reads it and cut into parts of ``partition_rows`` rows.

The prefix pass (`part_stats` on every part, then `Prefix`) gives each part its first arrival sequence
number and the step clock ``C`` before it, the global first event time, the global final ``C`` and the
unified schema. Parts are computed twice (once for the statistics, once for the shuffle) instead of being
held in memory between the passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from storey._utils._imports import require

__all__ = [
    "NO_TIME",
    "PARTITION_ROWS",
    "Part",
    "Prefix",
    "conform_rows",
    "delayed_parts",
    "input_parts",
    "is_dask_collection",
    "part_stats",
]

NO_TIME = int(np.iinfo(np.int64).min)
"""The step clock before any event (minus infinity)."""

PARTITION_ROWS = 1 << 18
"""Default input rows per part (dask config ``storey.partition-rows``)."""


@dataclass
class Part:
    """The rows of one input partition, in arrival order.

    Attributes
    ----------
    table
        The rows (`pyarrow.Table`), with the values the local engine reads.
    times
        int64 epoch ns of the time field, checked (a null or bad time raised where the part was read).
    source, row_offset
        The input it comes from and the row of its first row there (for messages).
    skipped_rows
        CSV rows skipped with ``on_error='skip'``.
    """

    table: Any
    times: np.ndarray
    source: str
    row_offset: int = 0
    skipped_rows: int = 0


def is_dask_collection(obj: Any) -> bool:
    """Whether `obj` is a `dask.dataframe.DataFrame` (without importing dask when it is not loaded)."""
    import sys

    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(obj, dd.DataFrame)


def _from_input_batches(batches: Iterable[Any], source: str, row_offset: int = 0) -> Part:
    """One part from `InputBatch`es (schemas may differ between CSV batches: promoted as the local engine's
    output is)."""
    pa = require("pyarrow")
    tables = []
    times = []
    skipped = 0
    for ib in batches:
        skipped += int(ib.skipped_rows or 0)
        if ib.num_rows:
            tables.append(pa.Table.from_batches([ib.batch]))
            times.append(ib.time_ns if ib.time_ns is not None else np.zeros(ib.num_rows, dtype=np.int64))
    if not tables:
        return Part(pa.table({}), np.empty(0, dtype=np.int64), source, row_offset, skipped)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    return Part(table, np.concatenate(times), source, row_offset, skipped)


# ------------------------------------------------------------------------------------------ part readers
def _read_memory(obj: Any, source: str, needed: list[str], batch_size: int, time_field: str) -> Part:
    from storey.frames._io_arrow import memory_batches

    batches = memory_batches(
        obj, source, columns=None, needed=needed, batch_size=batch_size, time_field=time_field
    )
    return _from_input_batches(batches, source)


def _read_csv(
    paths: list[str],
    needed: list[str],
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
    time_field: str,
    times_only: bool = False,
) -> Part:
    from storey.frames._io_csv import csv_batches

    batches = csv_batches(
        paths,
        columns=None,
        needed=needed,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        time_field=time_field,
    )
    return _from_input_batches(batches, paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1})")


def _read_row_groups(
    path: str,
    row_groups: list[int],
    row_offset: int,
    part_fields: list[tuple[str, Any]],
    part_values: dict[str, Any],
    needed: list[str],
    storage_options: dict[str, Any] | None,
    time_field: str,
    times_only: bool = False,
) -> Part:
    """Row groups of one Parquet file, with `ReadParquet`'s columns (the file's, then hive partition
    columns), as `storey.frames._io_arrow.parquet_batches` reads the whole file.

    With `times_only` only the time column is read: the part has the times and an empty table with the
    schema (the prefix pass needs no more).
    """
    pa = require("pyarrow")
    from storey.frames._io_arrow import _constant, select_names, timed_batches
    from storey.frames._io_batch import require_columns
    from storey.sources.parquet import open_parquet

    pf = open_parquet(path, storage_options)
    try:
        file_names = list(pf.schema_arrow.names)
        parts = {name: t for name, t in part_fields if name not in file_names}
        names = select_names(file_names + list(parts), None, needed)
        require_columns(file_names + list(parts), names, path)
        read = [n for n in names if n not in parts]
        if times_only:
            schema = pa.schema(
                [pa.field(n, parts[n]) if n in parts else pf.schema_arrow.field(n) for n in names]
            )
            if time_field is None:  # rows only
                n = sum(pf.metadata.row_group(i).num_rows for i in row_groups)
                return Part(schema.empty_table(), np.zeros(n, dtype=np.int64), path, row_offset)
            names = [time_field]
            read = [n for n in names if n not in parts]
        try:
            table = pf.read_row_groups(row_groups, columns=read, use_threads=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            msg = f"storey.frames: cannot read {path!r} as Parquet: {exc}"
            raise ValueError(msg) from exc
    finally:
        pf.close()
    if parts:
        n = table.num_rows
        arrays = [
            _constant(pa, part_values.get(name), parts[name], n) if name in parts else table.column(name)
            for name in names
        ]
        table = pa.Table.from_arrays(arrays, names=names)
    batches = timed_batches(table.to_batches(), path, time_field, first_row=row_offset)
    part = _from_input_batches(batches, path, row_offset)
    if times_only:
        part.table = schema.empty_table()
    return part


def _read_pandas(
    pdf: Any, source: str, needed: list[str], batch_size: int, time_field: str, times_only: bool = False
) -> Part:
    return _read_memory(pdf, source, needed, batch_size, time_field)


def _given(part: Part, times_only: bool = False) -> Part:
    return part


PartReader = tuple[Callable[..., Part], tuple[Any, ...]]
"""How to compute one part: ``fn(*args, times_only=...)`` (args may hold Dask objects)."""


def delayed_parts(readers: Sequence[PartReader], *, times_only: bool) -> list[Any]:
    """One `dask.delayed` `Part` per reader; `times_only`: the prefix pass's cheaper read (Parquet reads the
    time column only)."""
    from dask import delayed

    return [delayed(fn, pure=False)(*args, times_only=times_only) for fn, args in readers]


# ------------------------------------------------------------------------------------------ planning
def input_parts(
    data: Any,
    *,
    needed: list[str],
    time_field: str,
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
    partition_rows: int,
) -> list[PartReader]:
    """How to compute the `Part`s of `data`, in arrival order (see `delayed_parts`)."""
    from storey.frames.io import _inputs

    items = list(data) if isinstance(data, list | tuple) else [data]
    out: list[PartReader] = []
    run: list[Any] = []
    run_start = 0

    def flush_run() -> None:
        if not run:
            return
        for kind, index, item in _inputs(list(run)):
            position = run_start + index
            if kind == "parquet":
                out.extend(_parquet_parts(item, needed, time_field, storage_options, partition_rows))
            elif kind == "csv":
                out.append((_read_csv, (item, needed, batch_size, on_error, storage_options, time_field)))
            else:
                part = _read_memory(item, f"<input {position}>", needed, batch_size, time_field)
                out.extend((_given, (p,)) for p in _cut(part, partition_rows))
        run.clear()

    for index, item in enumerate(items):
        if is_dask_collection(item):
            flush_run()
            for p, pdf in enumerate(item.to_delayed()):
                source = f"<input {index}> partition {p}"
                out.append((_read_pandas, (pdf, source, needed, batch_size, time_field)))
            continue
        if not run:
            run_start = index
        run.append(item)
    flush_run()
    return out


def _cut(part: Part, rows: int) -> list[Part]:
    """`part` in slices of at most `rows` rows (zero-copy)."""
    n = part.table.num_rows
    if n <= rows:
        return [part]
    return [
        Part(part.table.slice(s, rows), part.times[s : s + rows], part.source, part.row_offset + s)
        for s in range(0, n, rows)
    ]


def _parquet_parts(
    paths: list[str],
    needed: list[str],
    time_field: str,
    storage_options: dict[str, Any] | None,
    partition_rows: int,
) -> list[PartReader]:
    """One reader per run of row groups (about `partition_rows` rows) of each file, in `ReadParquet`'s
    file order."""
    from storey._utils._paths import expand_paths, hive_partitions
    from storey.sources.parquet import open_parquet

    files = expand_paths(list(paths), storage_options)
    partitions = hive_partitions(files)
    out: list[PartReader] = []
    for file, values in zip(files, partitions.values, strict=True):
        pf = open_parquet(file.path, storage_options)
        try:
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        finally:
            pf.close()
        groups: list[int] = []
        rows = 0
        offset = 0
        for i, size in enumerate([*sizes, None]):
            if groups and (size is None or rows + size > partition_rows):
                args = (
                    file.path,
                    groups,
                    offset,
                    partitions.fields,
                    values,
                    needed,
                    storage_options,
                    time_field,
                )
                out.append((_read_row_groups, args))
                offset += rows
                groups, rows = [], 0
            if size is not None:
                groups.append(i)
                rows += size
        if not sizes:  # a file without row groups still has a schema (and its column checks)
            args = (file.path, [], 0, partitions.fields, values, needed, storage_options, time_field)
            out.append((_read_row_groups, args))
    return out


# ------------------------------------------------------------------------------------------ prefix pass
def part_stats(part: Part) -> dict[str, Any]:
    """What the prefix pass needs of one part: rows, first time, maximum time, skipped rows, schema."""
    n = len(part.times)
    return {
        "rows": n,
        "first": int(part.times[0]) if n else None,
        "max": int(part.times.max()) if n else NO_TIME,
        "skipped_rows": part.skipped_rows,
        "schema": part.table.schema.remove_metadata() if n else None,
    }


@dataclass
class Prefix:
    """The prefix pass over all parts (arrival order).

    Attributes
    ----------
    offsets
        The arrival sequence number of each part's first row.
    clock_in
        The step clock ``C`` before each part's first row (`NO_TIME` for the first).
    first_time
        The time of the first event (``None`` without rows).
    final_clock
        ``C`` after the last event.
    schema
        The unified schema of all rows (columns in first-appearance order, types promoted as the local
        engine's output promotes them).
    rows, skipped_rows
        Totals.
    """

    offsets: list[int]
    clock_in: list[int]
    first_time: int | None
    final_clock: int
    schema: Any
    rows: int
    skipped_rows: int

    @classmethod
    def of(cls, stats: Sequence[dict[str, Any]]) -> Prefix:
        pa = require("pyarrow")
        offsets, clock_in = [], []
        seq, clock = 0, NO_TIME
        first = None
        for s in stats:
            offsets.append(seq)
            clock_in.append(clock)
            seq += s["rows"]
            clock = max(clock, s["max"])
            if first is None and s["first"] is not None:
                first = s["first"]
        schemas = [s["schema"] for s in stats if s["schema"] is not None]
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        skipped = sum(s["skipped_rows"] for s in stats)
        return cls(offsets, clock_in, first, clock, schema, seq, skipped)


def conform_rows(table: Any, schema: Any, where: str = "") -> Any:
    """`table` with exactly the columns of `schema`, in its order and types (absent columns null).

    Raises `ValueError` naming a column of `table` that `schema` lacks, or one that cannot be cast.
    """
    pa = require("pyarrow")
    names = table.schema.names
    if names == schema.names and table.schema.equals(schema):
        return table
    extra = [n for n in names if schema.get_field_index(n) < 0]
    if extra:
        msg = f"storey.frames (engine='dask'){where}: unexpected columns {extra} (expected {schema.names})"
        raise ValueError(msg)
    arrays = []
    for field in schema:
        if field.name in names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    msg = (
                        f"storey.frames (engine='dask'){where}: column {field.name!r} of type {col.type} "
                        f"cannot be cast to {field.type}: {exc}"
                    )
                    raise ValueError(msg) from exc
            arrays.append(col)
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_per_partition(value: Any) -> int:
    """The ``storey.partition-rows`` setting, checked."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"storey.frames: dask config 'storey.partition-rows' must be an int >= 1, got {value!r}"
        raise ValueError(msg)
    return value
