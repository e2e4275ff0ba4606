"""``engine='dask'``: `storey.frames` functions on Dask (AGGREGATIONS.md §8.7).

Needs ``storey[dask]``. The work runs on the active `dask.distributed` client if there is one, else on Dask's
default scheduler (threads). The functions here are what ``engine='dask'`` calls in `storey.frames.aggregate`,
`build_state`, `backfill` and `as_of`; `compute` and `metrics` take their lazy results.

How it runs
-----------
1. **Parts.** The input is cut into parts in arrival order (`storey.frames._dask_input`): Parquet row
   groups are read by the workers, a ``dask.dataframe.DataFrame`` gives one part per partition (arrival
   order: partitions in order, then rows), CSV files are parsed by one task, in-memory data is read by the
   calling process. Every part is read with the local engine's readers, so the values are the same.
2. **Prefix pass.** One pass over the parts (Parquet: the time column only) gives the row count, first and
   maximum time of each: so each row gets its arrival sequence number and the step clock ``C`` at that row
   (the running maximum of time in arrival order, carried from part to part), and the run gets the first
   event time and the final ``C``.
3. **Shuffle.** Rows, tagged with their sequence number and a hash of the key (and, for policies with
   timers, their time and ``C``), are shuffled by the hash with Dask's shuffle (p2p on a cluster;
   `storey.frames._dask_shuffle`), so each key's rows are in one partition.
4. **Per partition** (`storey.frames._dask_partition`): rows are sorted back by sequence number and the
   *local* engine runs over them (same state machine, same kernels, compiled when numba is installed).
   Timer emissions (§6) see the carried ``C``, the first event time and the final ``C`` through clock
   events (at most one per row, only where ``C`` passed a due time the partition's own times have not
   reached), so the emitted rows are exactly the local engine's.

Results
-------
- `aggregate` without ``output=`` returns a lazy ``dask.dataframe.DataFrame`` of Arrow-backed columns
  (``pandas.ArrowDtype``): every feature column, then the input columns (``key`` and ``time`` for period and
  window policies; with an ``augmentation_fn``, the columns its results have on the first rows). Rows of
  one key keep stream order; **the order across keys is not stream order** (sort by an input column, e.g.
  an event id, to compare with the local engine). `compute` gives a `pyarrow.Table` and the metrics in one
  pass; `metrics` gives the per-partition metrics lazily.
- With ``output=`` (a directory path or fsspec URL, reachable from the workers and the caller) the workers
  write a Parquet dataset of ``part-*.parquet`` files (existing files are kept, as with the local engine);
  the summed metrics are returned, with ``rows_out``.
- `build_state` returns the summed metrics. Drivers are pickled to the workers (closed, without the
  calling process's event loop), which load and write their own keys (several processes may write one
  SQLite file: its lock serialises them). `NoopDriver` and ``SQLiteDriver(':memory:')`` live in the
  calling process: the workers start from a copy of a `NoopDriver` (an in-memory SQLite table must not
  hold state yet), and the final states are written by the calling process. The calling process's
  `Table` is closed; its cache is not updated with the states the workers wrote (open a new `Table` to
  read them).
- `aggregate` with ``table=`` (and `backfill` of a lone `AggregateByKey`, whose Table holds the state)
  computes the partitions before it returns, so that the states are written: without ``output=`` the rows
  are then held in the workers' memory (``dask.persist``) behind the returned Dask DataFrame.
- `as_of`: labels and events are shuffled by key into partitions of equal index; each partition runs the
  local `as_of`. Labels of one key keep their order; the order across keys is not label order. Metrics:
  ``events``, ``labels``, ``skipped_rows`` (and ``rows_out`` with ``output=``).
- `backfill`: a lone `AggregateByKey` that the batch engine can run is `aggregate` above (exact, timers
  included). A list of steps without `AggregateByKey` runs on every input part, in order (no shuffle; the
  result is in stream order): **steps are copied to every part, so a step that keeps state across events
  sees only its part's events**. Other lists (an `AggregateByKey` among other steps) raise
  `NotImplementedError`: run them with ``engine='local'``. The columns are those the steps give for the
  first rows.

Differences from the local engine
---------------------------------
- Bad columns and times (§8.8) are raised by the prefix pass, before anything is written (parts are read
  twice in all, instead of being held in memory between the passes); a non-numeric value is raised by the
  partition that meets it (files other partitions wrote stay).
- ``progress`` is called once, with the rows read, when an eager call ends (never for a lazy result).
- User callables (``key``, fields, filters, ``augmentation_fn``) run on the workers; they must be
  picklable on a distributed cluster. A callable ``key`` is called twice per row (for the shuffle hash and
  in the engine).
- Output is Parquet only (no CSV); the output columns are fixed up front (a feature column is present even
  when no row has it; with user functions, the columns of the results for the first rows).
- A ``dask.dataframe.DataFrame`` input is computed twice (prefix pass and shuffle): persist it first if
  it is expensive.

Settings (``dask.config``): ``storey.partition-rows`` (input rows per part, default 262 144) and
``storey.npartitions`` (partitions after the shuffle; default: the number of parts, and at least the
number of worker threads). A shuffled partition then holds about ``partition-rows`` rows: smaller parts
lower each worker's peak memory (README workload, 10 M events, one worker: about 0.7 GB at the default,
1.7 GB with parts of 1 M rows), larger ones lower the per-task overhead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from storey._utils._imports import require
from storey.frames._dask_run import (
    AggregateRun,
    AsOfRun,
    StepsRun,
    lazy_result,
    metrics_of,
    write_dataset,
)
from storey.frames._layout import NoEmit

__all__ = ["aggregate", "as_of", "backfill", "build_state", "compute", "metrics"]


def _check_output(output: Any, where: str) -> str | None:
    if output is None:
        return None
    path = os.fspath(output)
    if path.endswith(".csv"):
        msg = f"{where}: engine='dask' writes a Parquet dataset; got a CSV output {output!r}"
        raise ValueError(msg)
    return path


# ------------------------------------------------------------------------------------------ public
def aggregate(
    data: Any,
    aggregates: Sequence[Any],
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    emit_policy: Any = None,
    augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    table: Any = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Any:
    """`storey.frames.aggregate` on Dask: a lazy Dask DataFrame, or the metrics with ``output=``.

    The parameters are `storey.frames.aggregate`'s; `data` may also be a ``dask.dataframe.DataFrame`` (or
    a list of inputs including some).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows
    >>> events = pa.table({"user": ["a", "b", "a"], "t": [0, 60_000, 120_000], "x": [1.0, 2.0, 4.0]})
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> rows = aggregate(events, [agg], key="user", time_field="t")
    >>> table, counts = compute(rows)
    >>> table.sort_by("t").column("x_sum_1h").to_pylist(), counts["events"]
    ([1.0, 2.0, 5.0], 3)
    """
    where = "storey.frames.aggregate"
    path = _check_output(output, where)
    run = AggregateRun(
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
        storage_options=storage_options,
        where=where,
    )
    if path is None:
        return run.frame()
    metrics = run.write(path)
    if progress is not None:
        progress(metrics["rows"])
    return metrics


def build_state(
    data: Any,
    aggregates: Sequence[Any],
    table: Any,
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    batch_size: int = 65536,
    on_error: str = "raise",
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, int]:
    """`storey.frames.build_state` on Dask: the workers build the final states of their keys.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, NoopDriver, SlidingWindows, Table
    >>> events = pa.table({"user": ["a", "b", "a"], "t": [0, 60_000, 120_000], "x": [1.0, 2.0, 4.0]})
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> table = Table("users", NoopDriver())
    >>> build_state(events, [agg], table, key="user", time_field="t")["events"]
    3
    >>> table.get_state("a", "x").values(120_000_000_000)
    (5.0,)
    """
    where = "storey.frames.build_state"
    run = AggregateRun(
        data,
        aggregates,
        key=key,
        time_field=time_field,
        emit_policy=NoEmit(),
        augmentation_fn=None,
        aliases=None,
        table=table,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        where=where,
    )
    metrics = run.states()
    if progress is not None:
        progress(metrics["rows"])
    return metrics


def as_of(
    labels: Any,
    data: Any,
    aggregates: Sequence[Any],
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    label_key: str | Sequence[str] | None = None,
    label_time: str | None = None,
    inclusive: bool = True,
    fixed_window_type: Any = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """`storey.frames.as_of` on Dask: a lazy Dask DataFrame (label columns, then features), or the metrics
    with ``output=``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows
    >>> events = pa.table({"user": ["a", "a", "a"], "t": [0, 60_000, 120_000], "x": [1.0, 2.0, 4.0]})
    >>> labels = pa.table({"user": ["a", "a", "b"], "t": [60_000, 59_999, 60_000]})
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> table, _ = compute(as_of(labels, events, [agg], key="user", time_field="t"))
    >>> sorted(zip(table.column("user").to_pylist(), table.column("x_sum_1h").to_pylist()))
    [('a', 1.0), ('a', 3.0), ('b', 0.0)]
    """
    from storey.aggregations.windows import FixedWindowType

    path = _check_output(output, AsOfRun.where)
    options = {
        "key": key,
        "time_field": time_field,
        "label_key": key if label_key is None else label_key,
        "label_time": time_field if label_time is None else label_time,
        "inclusive": inclusive,
        "fixed_window_type": FixedWindowType.CurrentOpenWindow
        if fixed_window_type is None
        else fixed_window_type,
        "batch_size": batch_size,
    }
    run = AsOfRun(
        labels, data, aggregates, options=options, on_error=on_error, storage_options=storage_options
    )
    names = ("events", "labels", "skipped_rows")
    skipped = run.label_prefix.skipped_rows
    if path is not None:
        return write_dataset(run, path, (*names, "rows_out"), skipped)
    schema = run.output_schema()
    return lazy_result(run.partitions(schema, frame=True), schema, names, skipped)


def backfill(
    data: Any,
    steps: Sequence[Any],
    *,
    key_field: str | list[str] | None = None,
    time_field: str | None = None,
    id_field: str | None = None,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """`storey.frames.backfill` on Dask (see the module docstring for which step lists run).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import Filter, Map
    >>> events = pa.table({"user": ["a", "b", "a"], "x": [1.0, 2.0, 4.0]})
    >>> steps = [Filter(lambda b: b["x"] > 1), Map(lambda b: {"user": b["user"], "y": 2 * b["x"]})]
    >>> table, _ = compute(backfill(events, steps, key_field="user"))
    >>> table.to_pylist()
    [{'user': 'b', 'y': 4.0}, {'user': 'a', 'y': 8.0}]
    """
    from storey.aggregations.step import AggregateByKey
    from storey.frames.plan import _check_steps, _frames_capable, fresh_steps

    where = StepsRun.where
    path = _check_output(output, where)
    steps = fresh_steps(_check_steps(steps))
    if len(steps) == 1 and _frames_capable(steps[0], key_field, time_field):
        step = steps[0]
        key = step.key if step.key is not None else key_field
        return aggregate(
            data,
            step.aggregates,
            key=list(key) if isinstance(key, list) else key,
            time_field=step.time_field if step.time_field is not None else time_field,
            emit_policy=step.emit_policy,
            augmentation_fn=step._augmentation_fn,
            aliases=step._aliases,
            table=step._table_spec,
            batch_size=batch_size,
            on_error=on_error,
            output=path,
            storage_options=storage_options,
        )
    if any(isinstance(s, AggregateByKey) for s in steps):
        msg = (
            f"{where}: engine='dask' runs a lone AggregateByKey (that the batch engine can run) or steps "
            "without AggregateByKey; run these steps with engine='local'"
        )
        raise NotImplementedError(msg)
    options = {
        "key_field": key_field,
        "time_field": time_field,
        "id_field": id_field,
        "batch_size": batch_size,
    }
    run = StepsRun(data, steps, options=options, on_error=on_error, storage_options=storage_options)
    names = ("rows", "rows_out")
    if path is not None:
        totals = write_dataset(run, path, names, 0)
        del totals["skipped_rows"]
        return totals
    schema = run.output_schema()
    return lazy_result(run.partitions(schema, frame=True), schema, names, 0)


def metrics(result: Any) -> Any:
    """The metrics of a lazy result: a Dask DataFrame with one row per partition.

    Computing it with the result (``dask.compute(result, metrics(result))``) runs the work once; `compute`
    does that and sums the rows.
    """
    return metrics_of(result)[0]


def compute(result: Any) -> tuple[Any, dict[str, int]]:
    """Compute a lazy result of this module: ``(pyarrow.Table, metrics)`` in one pass.

    The table also holds the metrics as JSON under the schema metadata key ``b"storey.metrics"``, as the
    local engine's result does. Its rows are grouped by partition (see the module docstring for the order).
    """
    import json

    dask = require("dask")
    pa = require("pyarrow")
    frame, names, skipped = metrics_of(result)
    rows, per_partition = dask.compute(result, frame)
    totals = {name: int(per_partition[name].sum()) if len(per_partition) else 0 for name in names}
    if "skipped_rows" in totals:
        totals["skipped_rows"] += skipped
    table = pa.Table.from_pandas(rows, preserve_index=False)
    meta = {b"storey.metrics": json.dumps(totals).encode()}
    return table.replace_schema_metadata(meta), totals
