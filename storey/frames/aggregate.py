"""`aggregate` and `build_state`: the batch form of `AggregateByKey` (spec AGGREGATIONS.md §8.1–8.4).

``aggregate(data, aggs, key=K, time_field=T, …)`` returns exactly the rows the flow
``[<source>(data), AggregateByKey(aggs, table, key=K, time_field=T, …), <collect bodies>]`` emits, in stream
order, with the same values bit for bit. See `storey.frames._job` for the pipeline and
`storey.frames._compiled` / `storey.frames._reference` for the two engines.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from storey.aggregations.emit import EmitEveryEvent, EmitPolicy
from storey.frames._job import AggregationJob
from storey.frames._layout import NoEmit

__all__ = ["aggregate", "build_state", "run_sync"]

T = TypeVar("T")
METRICS_KEY = b"storey.metrics"


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code (in a helper thread when a loop is running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="storey-frames")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _dask_call(name: str, args: dict[str, Any]) -> Any:
    """``engine='dask'``: `storey.frames.dask.<name>` with the caller's arguments (spec §8.7)."""
    import inspect

    from storey.frames import dask

    fn = getattr(dask, name)
    return fn(**{k: v for k, v in args.items() if k in inspect.signature(fn).parameters})


def check_engine(engine: str, where: str) -> None:
    """``'local'`` runs; ``'dask'`` is not implemented yet; anything else is a `ValueError`."""
    if engine == "local":
        return
    if engine == "dask":
        msg = f"{where}: engine='dask' is not implemented yet; use engine='local'"
        raise NotImplementedError(msg)
    msg = f"{where}: engine must be 'local' or 'dask', got {engine!r}"
    raise ValueError(msg)


async def run_job(
    job: AggregationJob,
    data: Any,
    *,
    table: Any,
    write: Callable[[Any], None] | None,
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
    progress: Callable[[int], Any] | None,
) -> dict[str, int]:
    """Drive `job` over `data`: every output table goes to `write`; returns the metrics."""
    from storey.frames.io import iter_batches

    await job.start(table)
    batches = iter_batches(
        data,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        time_field=job.time_field,
        key_fields=job.key_fields,
        value_fields=job.value_fields,
    )
    for ib in batches:
        out, error = await job.feed(ib)
        if out is not None and write is not None:
            write(out)
        if progress is not None:
            progress(ib.num_rows)
        if error is not None:
            raise error
    out = job.finish()
    if out is not None and write is not None:
        write(out)
    if job.assembler is not None and job.assembler.input_schema is None:
        job.assembler.input_schema = _schema_of(data)
    if table is not None:
        await job.persist()
        await table.close()
    return job.metrics


def _schema_of(data: Any) -> Any:
    """The Arrow schema of rowless in-memory data (for the columns of an empty result), or ``None``."""
    import pyarrow as pa

    if isinstance(data, pa.Table | pa.RecordBatch):
        return data.schema
    if type(data).__module__.startswith("polars"):
        return data.to_arrow().schema
    return None


def _check_table(table: Any, where: str) -> None:
    if table is None:
        return
    from storey.table import Table

    if not isinstance(table, Table):
        msg = f"{where}: `table` must be a storey Table, got {type(table).__name__}"
        raise TypeError(msg)


def aggregate(
    data: Any,
    aggregates: Sequence[Any],
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    emit_policy: EmitPolicy | Mapping[str, Any] | None = EmitEveryEvent(),  # noqa: B008 - immutable
    augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    table: Any = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Any:
    """Compute the rows the streaming `AggregateByKey` would emit over `data`, column-wise.

    Parameters
    ----------
    data
        A pyarrow Table/RecordBatch/RecordBatchReader (or iterable of record batches), a pandas or polars
        DataFrame, a CSV/Parquet path or fsspec URL, or a list of these (read in order). Arrival order is
        input row order.
    aggregates
        `FieldAggregator`s (or the upstream dict form).
    key
        The key column, a list of columns (tuple keys) or a callable on the row dict (called row by row).
    time_field
        The time column (converted as §1 of the spec says).
    emit_policy, augmentation_fn, aliases
        As for `AggregateByKey`.
    table
        A `storey.Table`: start from its stored state and persist the final state into it.
    batch_size
        Rows per input batch.
    on_error
        ``'raise'`` or ``'skip'`` (CSV rows that cannot be parsed).
    output
        A path or URL: stream the rows to Parquet (file or dataset directory) or CSV and return the metrics.
    engine
        ``'local'``, or ``'dask'`` (`storey.frames.dask`: a Dask DataFrame, or the metrics with `output`).
    storage_options
        fsspec options for URLs.
    progress
        Called with the number of rows read after each input batch.

    Returns
    -------
    pyarrow.Table or dict
        One row per emitted event, in stream order, with the metrics (``events``, ``late_events``,
        ``skipped_values``, ``rows``, ``skipped_rows``) as JSON under the schema metadata key
        ``b"storey.metrics"``; with `output`, the metrics dict (plus ``rows_out``).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows
    >>> events = pa.table({"user": ["a", "a", "b"], "t": [0, 60_000, 120_000], "x": [1.0, 2.0, 4.0]})
    >>> agg = FieldAggregator("x", "x", ["sum", "count"], SlidingWindows(["1h"], "10m"))
    >>> out = aggregate(events, [agg], key="user", time_field="t")
    >>> out.select(["user", "x_sum_1h", "x_count_1h"]).to_pylist()
    [{'user': 'a', 'x_sum_1h': 1.0, 'x_count_1h': 1}, {'user': 'a', 'x_sum_1h': 3.0, 'x_count_1h': 2}, {'user': 'b', 'x_sum_1h': 4.0, 'x_count_1h': 1}]
    >>> json.loads(out.schema.metadata[b"storey.metrics"])["events"]
    3
    """  # noqa: E501
    if engine == "dask":
        return _dask_call("aggregate", locals())
    return _aggregate(
        data,
        aggregates,
        key=key,
        time_field=time_field,
        emit_policy=emit_policy,
        augmentation_fn=augmentation_fn,
        aliases=aliases,
        table=table,
        batch_size=batch_size,
        on_error=on_error,
        output=output,
        engine=engine,
        storage_options=storage_options,
        progress=progress,
    )


def _aggregate(
    data: Any,
    aggregates: Sequence[Any],
    *,
    key: Any,
    time_field: str,
    emit_policy: Any = None,
    augmentation_fn: Any = None,
    aliases: Mapping[str, str] | None = None,
    table: Any = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    implementation: str = "auto",
    where: str = "storey.frames.aggregate",
    collect: list[Any] | None = None,
) -> Any:
    """`aggregate` with the engine implementation selectable (``'auto'``, ``'compiled'``, ``'reference'``);
    with `collect`, the per-batch output tables are appended to it and the metrics are returned."""
    import pyarrow as pa

    check_engine(engine, where)
    _check_table(table, where)
    job = AggregationJob(
        aggregates,
        key=key,
        time_field=time_field,
        emit_policy=emit_policy,
        augmentation_fn=augmentation_fn,
        aliases=aliases,
        engine=implementation,
        where=where,
    )
    options = {
        "table": table,
        "batch_size": batch_size,
        "on_error": on_error,
        "storage_options": storage_options,
        "progress": progress,
    }
    if output is not None:
        from storey.frames.io import OutputSink

        rows_out = 0

        with OutputSink(output, storage_options=storage_options, batch_size=batch_size) as sink:

            def write(t: Any) -> None:
                nonlocal rows_out
                if sink.schema is None:
                    t = _complete(job, t)
                sink.write(t)
                rows_out += t.num_rows

            metrics = run_sync(run_job(job, data, write=write, **options))  # type: ignore[arg-type]
            if sink.schema is None:
                assert job.assembler is not None
                sink.write(job.assembler.empty_table())
        return {**metrics, "rows_out": rows_out}
    tables: list[Any] = [] if collect is None else collect
    metrics = run_sync(run_job(job, data, write=tables.append, **options))  # type: ignore[arg-type]
    if collect is not None:
        if not any(t.num_rows for t in collect):
            assert job.assembler is not None
            collect[:] = [job.assembler.empty_table()]
        return metrics
    assert job.assembler is not None
    result = job.assembler.combine(tables)
    meta = dict(result.schema.metadata or {})
    meta[METRICS_KEY] = json.dumps(metrics).encode()
    return result.replace_schema_metadata(meta) if isinstance(result, pa.Table) else result


def _complete(job: AggregationJob, table: Any) -> Any:
    """The first table written to a sink, with null columns for the features it lacks (the sink's schema
    is fixed by its first table)."""
    import pyarrow as pa

    layout = job.layout
    if layout is None or job.augmentation_fn is not None:
        return table
    names = list(table.schema.names)
    for name, is_int in zip(layout.all_features, [f for fl in layout.int_features for f in fl], strict=True):
        if name not in names:
            table = table.append_column(
                name, pa.nulls(table.num_rows, pa.int64() if is_int else pa.float64())
            )
    return table


def build_state(
    data: Any,
    aggregates: Sequence[Any],
    table: Any,
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    batch_size: int = 65536,
    on_error: str = "raise",
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, int]:
    """Process `data` like `aggregate` and persist the final per-key state (and the schema) into `table`.

    A streaming flow started on the table afterwards continues exactly as if it had processed the data
    itself: the stored blobs are byte-identical to the stream's (spec §9.1). Nothing is emitted, so no
    features are computed.

    Returns
    -------
    dict
        The metrics (``events``, ``late_events``, ``skipped_values``, ``rows``, ``skipped_rows``).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows, Table, NoopDriver
    >>> events = pa.table({"user": ["a", "a"], "t": [0, 60_000], "x": [1.0, 2.0]})
    >>> table = Table("users", NoopDriver())
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> build_state(events, [agg], table, key="user", time_field="t")["events"]
    2
    >>> table.get_state("a", "x").values(60_000_000_000)
    (3.0,)
    """
    where = "storey.frames.build_state"
    if table is None:
        msg = f"{where}: `table` is required"
        raise TypeError(msg)
    if engine == "dask":
        return _dask_call("build_state", locals())
    return _build_state(
        data,
        aggregates,
        table,
        key=key,
        time_field=time_field,
        batch_size=batch_size,
        on_error=on_error,
        engine=engine,
        storage_options=storage_options,
        progress=progress,
    )


def _build_state(
    data: Any,
    aggregates: Sequence[Any],
    table: Any,
    *,
    key: Any,
    time_field: str,
    batch_size: int = 65536,
    on_error: str = "raise",
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    implementation: str = "auto",
) -> dict[str, int]:
    where = "storey.frames.build_state"
    check_engine(engine, where)
    _check_table(table, where)
    job = AggregationJob(
        aggregates, key=key, time_field=time_field, emit_policy=NoEmit(), engine=implementation, where=where
    )
    return run_sync(
        run_job(
            job,
            data,
            table=table,
            write=None,
            batch_size=batch_size,
            on_error=on_error,
            storage_options=storage_options,
            progress=progress,
        )
    )
