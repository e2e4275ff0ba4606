"""``engine='dask'``: `storey.frames.aggregate` and `build_state` on Dask (AGGREGATIONS.md §8.7).

Needs ``storey[dask]``. The work runs on the active `dask.distributed` client if there is one, else on Dask's
default scheduler (threads). The functions are called through `storey.frames.aggregate(..., engine='dask')`
and `storey.frames.build_state(..., engine='dask')`; this module also has two helpers for their results,
`compute` and `metrics`.

How it runs
-----------
1. **Parts.** The input is cut into parts in arrival order (`storey.frames._dask_input`): Parquet row
   groups are read by the workers, a ``dask.dataframe.DataFrame`` gives one part per partition (arrival
   order: partitions in order, then rows), CSV files are parsed by one task, in-memory data is read by the
   calling process. Every part is read with the local engine's readers, so the values are the same.
2. **Prefix pass.** One pass over the parts gives the row count, first and maximum time of each: so each
   row gets its arrival sequence number and the step clock ``C`` at that row (the running maximum of time
   in arrival order, carried from part to part), and the run gets the first event time and the final ``C``.
3. **Shuffle.** Rows, tagged with sequence number, time, ``C`` and a hash of the key, are shuffled by the
   hash with Dask's shuffle (`storey.frames._dask_shuffle`), so each key's rows are in one partition.
4. **Per partition** (`storey.frames._dask_partition`): rows are sorted back by sequence number and the
   *local* engine runs over them (same state machine, same kernels, compiled when numba is installed).
   Timer emissions (§6) see the carried ``C``, the first event time and the final ``C`` through clock
   events, so the emitted rows are exactly the local engine's.

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
- `build_state` returns the summed metrics. Drivers are pickled to the workers, which load and write
  their own keys (several processes may write one SQLite file: its lock serialises them). `NoopDriver`
  and ``SQLiteDriver(':memory:')`` live in the calling process: the workers start from a copy of a
  `NoopDriver` (an in-memory SQLite table must not hold state yet), and the final states are written by
  the calling process. The calling process's `Table` is closed; its cache is not updated with the
  states the workers wrote (open a new `Table` to read them).
- `aggregate` with ``table=`` needs ``output=`` (the state is written with the rows).

Differences from the local engine
---------------------------------
- Bad input (§8.8) is raised before anything is written: every part is read once by the prefix pass
  (parts are read twice in all, instead of being held in memory between the passes).
- ``progress`` is called once, with the rows read, when an eager call ends (never for a lazy result).
- User callables (``key``, fields, filters, ``augmentation_fn``) run on the workers; they must be
  picklable on a distributed cluster. A callable ``key`` is called twice per row (for the shuffle hash and
  in the engine).
- Output is Parquet only (no CSV); the output columns are fixed up front (a feature column is present even
  when no row has it).

Settings (``dask.config``): ``storey.partition-rows`` (input rows per part, default 1 048 576) and
``storey.npartitions`` (partitions after the shuffle; default: the number of parts, and at least the
number of worker threads).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from storey._utils._imports import require
from storey.frames._dask_input import (
    PARTITION_ROWS,
    Prefix,
    delayed_parts,
    input_parts,
    part_stats,
    rows_per_partition,
)
from storey.frames._dask_partition import PartitionTask, TableSpec, run_partition
from storey.frames._dask_shuffle import HASH, tag_part, tagged_meta
from storey.frames._job import AggregationJob
from storey.frames._layout import POLICY_PERIOD, NoEmit

__all__ = ["aggregate", "build_state", "compute", "metrics"]

METRIC_NAMES = ("events", "late_events", "skipped_values", "rows", "skipped_rows")
_METRICS_ATTR = "_storey_metrics"  # on a lazy result: (per-partition metrics frame, CSV rows skipped)


def _dask() -> Any:
    return require("dask")


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
    if output is not None and os.fspath(output).endswith(".csv"):
        msg = f"{where}: engine='dask' writes a Parquet dataset; got a CSV output {output!r}"
        raise ValueError(msg)
    if table is not None and output is None:
        msg = f"{where}: engine='dask' with a `table` needs `output=` (the state is written with the rows)"
        raise ValueError(msg)
    run = _Run(
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
    if output is None:
        return run.frame()
    metrics = run.write(os.fspath(output))
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
    run = _Run(
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


def metrics(result: Any) -> Any:
    """The metrics of a lazy `aggregate` result: a Dask DataFrame with one row per partition.

    Computing it with the result (``dask.compute(result, metrics(result))``) runs the work once; `compute`
    does that and sums the rows.
    """
    try:
        frame, _ = getattr(result, _METRICS_ATTR)
    except (AttributeError, TypeError, ValueError):
        msg = "storey.frames.dask.metrics: not a Dask DataFrame returned by aggregate(..., engine='dask')"
        raise ValueError(msg) from None
    return frame


def compute(result: Any) -> tuple[Any, dict[str, int]]:
    """Compute a lazy `aggregate` result: ``(pyarrow.Table, metrics)`` in one pass.

    The table also holds the metrics as JSON under the schema metadata key ``b"storey.metrics"``, as the
    local engine's result does. Its rows are grouped by partition (see the module docstring for the order).
    """
    import json

    dask = _dask()
    pa = require("pyarrow")
    frame = metrics(result)
    skipped = getattr(result, _METRICS_ATTR)[1]
    rows, per_partition = dask.compute(result, frame)
    totals = {name: int(per_partition[name].sum()) if len(per_partition) else 0 for name in METRIC_NAMES}
    totals["skipped_rows"] += skipped
    table = pa.Table.from_pandas(rows, preserve_index=False)
    meta = {b"storey.metrics": json.dumps(totals).encode()}
    return table.replace_schema_metadata(meta), totals


# ------------------------------------------------------------------------------------------ the run
class _Run:
    """One Dask run: the client-side start, the prefix pass, and the tasks of the shuffled partitions."""

    def __init__(
        self,
        data: Any,
        aggregates: Sequence[Any],
        *,
        key: Any,
        time_field: str,
        emit_policy: Any,
        augmentation_fn: Any,
        aliases: Mapping[str, str] | None,
        table: Any,
        batch_size: int,
        on_error: str,
        storage_options: dict[str, Any] | None,
        where: str,
    ) -> None:
        from storey.frames.aggregate import _check_table, run_sync
        from storey.frames.io import _needed

        dask = _dask()
        _check_options(batch_size, on_error)
        _check_table(table, where)
        self.where = where
        self.table = table
        self.batch_size = batch_size
        self.storage_options = storage_options
        self.job = AggregationJob(
            aggregates,
            key=key,
            time_field=time_field,
            emit_policy=emit_policy,
            augmentation_fn=augmentation_fn,
            aliases=aliases,
            where=where,
        )
        self.aggregates = list(aggregates)
        self.key = key
        self.emit_policy = emit_policy
        self.augmentation_fn = augmentation_fn
        self.aliases = dict(aliases) if aliases else None
        self.table_spec = run_sync(self._start(table))
        job = self.job
        partition_rows = rows_per_partition(dask.config.get("storey.partition-rows", PARTITION_ROWS))
        self.parts = input_parts(
            data,
            needed=_needed(time_field, job.key_fields, job.value_fields),
            time_field=time_field,
            batch_size=batch_size,
            on_error=on_error,
            storage_options=storage_options,
            partition_rows=partition_rows,
        )
        stats = dask.compute(
            *[dask.delayed(part_stats, pure=False)(p) for p in delayed_parts(self.parts, times_only=True)]
        )
        self.prefix = Prefix.of(stats)

    # ------------------------------------------------------------------------------------ client start
    async def _start(self, table: Any) -> TableSpec | None:
        """Reconcile and save the schema (as the local engine does), and describe the Table for the
        partitions."""
        from storey.aggregations.blob import encode_state
        from storey.drivers import NoopDriver, SQLiteDriver

        stored = await table.load_schema() if table is not None else None
        await self.job.start(table)
        if table is None:
            return None
        layout = self.job.layout
        assert layout is not None
        doc = await table.load_schema()
        live = {}
        for name in layout.names:
            items = [(k, encode_state(st)) for k, st in table.states(name)]
            if items:
                live[name] = items
        driver = table.storage
        memory_sqlite = isinstance(driver, SQLiteDriver) and getattr(driver, "_memory", False)
        if memory_sqlite:
            if stored is not None:
                msg = (
                    f"{self.where}: engine='dask' cannot read the state stored in an in-memory SQLite table "
                    f"({table.table_path!r}); use a SQLite file, or engine='local'"
                )
                raise NotImplementedError(msg)
            return TableSpec(table.table_path, None, True, doc or {}, live)
        local = isinstance(driver, NoopDriver)
        if not local:
            await table.close()  # the workers open their own connections (and pickling needs none open)
        try:
            blob = pickle.dumps(driver)
        except Exception as exc:
            msg = f"{self.where}: engine='dask' pickles the table's driver to the workers; {driver!r}: {exc}"
            raise TypeError(msg) from exc
        return TableSpec(table.table_path, blob, local, doc or {}, live)

    # ------------------------------------------------------------------------------------ tasks
    def _task(self, output_schema: Any, output: str | None = None, frame: bool = False) -> PartitionTask:
        prefix = self.prefix
        return PartitionTask(
            aggregates=self.aggregates,
            key=self.key,
            time_field=self.job.time_field,
            emit_policy=self.emit_policy,
            augmentation_fn=self.augmentation_fn,
            aliases=self.aliases,
            batch_size=self.batch_size,
            where=self.where,
            input_schema=prefix.schema,
            output_schema=output_schema,
            first_time=prefix.first_time if prefix.first_time is not None else 0,
            final_clock=prefix.final_clock,
            output=output,
            storage_options=self.storage_options,
            table=self.table_spec,
            frame=frame,
        )

    def _partitions(self, task: PartitionTask) -> list[Any]:
        """One delayed `run_partition` result per shuffled partition."""
        dask = _dask()
        dd = require("dask.dataframe")
        prefix = self.prefix
        parts = delayed_parts(self.parts, times_only=False)
        tagged = [
            dask.delayed(tag_part, pure=False)(part, offset, clock_in, self.key, prefix.schema, self.where)
            for part, offset, clock_in in zip(parts, prefix.offsets, prefix.clock_in, strict=True)
        ]
        frame = dd.from_delayed(tagged, meta=tagged_meta(prefix.schema), verify_meta=False)
        shuffled = frame.shuffle(on=HASH, npartitions=_npartitions(len(tagged)), method=_shuffle_method())
        return [
            dask.delayed(run_partition, pure=False)(p, task, i) for i, p in enumerate(shuffled.to_delayed())
        ]

    # ------------------------------------------------------------------------------------ results
    def frame(self) -> Any:
        """The rows as a lazy Dask DataFrame (its metrics registered for `metrics`)."""
        dd = require("dask.dataframe")
        pd = require("pandas")
        schema = self._output_schema()
        meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
        metrics_meta = pd.DataFrame(
            {name: pd.Series([], dtype="int64") for name in (*METRIC_NAMES, "rows_out")}
        )
        if self.prefix.rows == 0:
            result = dd.from_pandas(meta, npartitions=1)
            empty = dd.from_pandas(metrics_meta, npartitions=1)
            setattr(result, _METRICS_ATTR, (empty, self.prefix.skipped_rows))
            return result
        parts = self._partitions(self._task(schema, frame=True))
        dask = _dask()
        result = dd.from_delayed([p["rows"] for p in parts], meta=meta, verify_meta=False)
        per_partition = [dask.delayed(_metrics_frame, pure=True)(p["metrics"]) for p in parts]
        frame = dd.from_delayed(per_partition, meta=metrics_meta, verify_meta=False)
        setattr(result, _METRICS_ATTR, (frame, self.prefix.skipped_rows))
        return result

    def write(self, output: str) -> dict[str, int]:
        """Run and write the rows as a Parquet dataset under `output`; the summed metrics."""
        from storey._utils._paths import makedirs_for
        from storey.frames.io import OutputSink

        dask = _dask()
        schema = self._output_schema()
        directory = output if output.endswith("/") else output + "/"
        makedirs_for(directory, self.storage_options, is_dir=True)
        results = []
        if self.prefix.rows:
            results = list(dask.compute(*self._partitions(self._task(schema, output=directory))))
        totals = self._finish(results)
        if totals["rows_out"] == 0:
            with OutputSink(directory, storage_options=self.storage_options) as sink:
                sink.write(schema.empty_table())
        return totals

    def states(self) -> dict[str, int]:
        """Run `build_state`; the summed metrics."""
        dask = _dask()
        results = []
        if self.prefix.rows:
            results = list(dask.compute(*self._partitions(self._task(None))))
        totals = self._finish(results)
        del totals["rows_out"]
        return totals

    def _finish(self, results: list[dict[str, Any]]) -> dict[str, int]:
        """Sum the metrics; write the states returned for a Table living in this process."""
        from storey.frames.aggregate import run_sync

        totals = dict.fromkeys((*METRIC_NAMES, "rows_out"), 0)
        for r in results:
            for name in totals:
                totals[name] += int(r["metrics"].get(name, 0))
        totals["skipped_rows"] += self.prefix.skipped_rows
        spec = self.table_spec
        if spec is not None and spec.local:
            run_sync(self._persist([s for r in results for s in r["states"]]))
        return totals

    async def _persist(self, states: list[tuple[Any, list[bytes], int | None]]) -> None:
        """Install the final states in the caller's Table and close it, as the local engine's persist does."""
        from storey.aggregations.blob import decode_state

        job = self.job
        layout = job.layout
        assert layout is not None
        job.keys.values = [k for k, _, _ in states]
        job.engine = _Exported(
            [
                (i, [decode_state(p, b) for p, b in zip(layout.plans, blobs, strict=True)], last_t)
                for i, (_, blobs, last_t) in enumerate(states)
            ]
        )
        await job.persist()
        await self.table.close()

    # ------------------------------------------------------------------------------------ output schema
    def _output_schema(self) -> Any:
        """The columns of every output partition (§8.4 types)."""
        pa = require("pyarrow")
        job = self.job
        layout = job.layout
        assert layout is not None
        features: dict[str, Any] = {}
        for name, is_int in zip(
            layout.all_features, [f for fl in layout.int_features for f in fl], strict=True
        ):
            features[name] = pa.int64() if is_int else pa.float64()
        period = layout.policy_kind == POLICY_PERIOD
        if job.augmentation_fn is None and not (period and job.keys.callable is not None):
            fields = dict(features)
            body = [("key", self._key_type()), ("time", pa.timestamp("ns", tz="UTC"))] if period else None
            # body fields win, at the feature's position
            fields.update(body or [(f.name, f.type) for f in self.prefix.schema])
            return pa.schema(list(fields.items()))
        sample = self._sample_output()
        if job.augmentation_fn is not None:
            if not sample.num_columns:
                msg = (
                    f"{self.where}: engine='dask' with an augmentation_fn takes the output columns from the "
                    "rows emitted for the first input rows, but there were none"
                )
                raise ValueError(msg)
            return sample.schema.remove_metadata()
        fields = dict(features)
        key_type = sample.schema.field("key").type if "key" in sample.schema.names else pa.null()
        fields["key"] = key_type
        fields["time"] = pa.timestamp("ns", tz="UTC")
        return pa.schema(list(fields.items()))

    def _key_type(self) -> Any:
        """The Arrow type of the ``key`` column of boundary emissions (as `OutputAssembler` builds it)."""
        pa = require("pyarrow")
        schema = self.prefix.schema
        columns = self.job.keys.columns or []

        def value_type(name: str) -> Any:
            t = schema.field(name).type if name in schema.names else pa.null()
            return t.value_type if pa.types.is_dictionary(t) else t

        if self.job.keys.is_tuple:
            return pa.struct([(c, value_type(c)) for c in columns])
        return value_type(columns[0])

    def _sample_output(self) -> Any:
        """The local engine's output over the first rows (for columns only known from the rows)."""
        from storey.frames.aggregate import _aggregate

        dask = _dask()
        sample = None
        for part in delayed_parts(self.parts, times_only=False):
            head = dask.compute(dask.delayed(_head, pure=False)(part, 10_000))[0]
            if head.num_rows:
                sample = head
                break
        if sample is None:
            pa = require("pyarrow")
            return pa.table({})
        return _aggregate(
            sample,
            self.aggregates,
            key=self.key,
            time_field=self.job.time_field,
            emit_policy=self.emit_policy,
            augmentation_fn=self.augmentation_fn,
            aliases=self.aliases,
            batch_size=self.batch_size,
            where=self.where,
        )


class _Exported:
    """Final states computed elsewhere, in the shape `AggregationJob.persist` reads from an engine."""

    def __init__(self, states: list[tuple[int, list[Any], int | None]]) -> None:
        self._states = states

    def export(self) -> Any:
        return iter(self._states)


def _head(part: Any, n: int) -> Any:
    return part.table.slice(0, n)


def _metrics_frame(metrics: dict[str, int]) -> Any:
    pd = require("pandas")
    return pd.DataFrame({name: [int(metrics.get(name, 0))] for name in (*METRIC_NAMES, "rows_out")})


def _check_options(batch_size: int, on_error: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        msg = f"storey.frames: batch_size must be an int of at least 1, got {batch_size!r}"
        raise ValueError(msg)
    if on_error not in ("raise", "skip"):
        msg = f"storey.frames: on_error must be 'raise' or 'skip', got {on_error!r}"
        raise ValueError(msg)


def _client() -> Any:
    """The `dask.distributed` client ``dask.compute`` runs on here, or ``None``."""
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if type(owner).__name__ == "Client" else None


def _shuffle_method() -> str | None:
    """The user's ``dataframe.shuffle.method``; else ``'p2p'`` on a cluster and ``'tasks'`` on the local
    schedulers (Dask's own choice looks only for a default client, whichever scheduler runs)."""
    dask = _dask()
    if dask.config.get("dataframe.shuffle.method", None):
        return None
    return "p2p" if _client() is not None else "tasks"


def _npartitions(n_parts: int) -> int:
    """Partitions after the shuffle: ``storey.npartitions``, else the parts, at least the worker threads."""
    dask = _dask()
    configured = dask.config.get("storey.npartitions", None)
    if configured is not None:
        if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
            msg = f"storey.frames: dask config 'storey.npartitions' must be an int >= 1, got {configured!r}"
            raise ValueError(msg)
        return configured
    client = _client()
    if client is not None:
        threads = sum(client.nthreads().values())
    else:
        threads = int(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    return max(1, n_parts, threads)
