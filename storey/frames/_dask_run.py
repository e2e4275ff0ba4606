"""The Dask engine's runs: reading plan, prefix pass, shuffle and per-partition tasks (spec §8.7).

`AggregateRun` drives `aggregate` and `build_state`; `as_of_frame`/`backfill_parts` drive `as_of` and
`backfill`. See `storey.frames.dask` for the user-facing description.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
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
from storey.frames._layout import POLICY_PERIOD

__all__ = [
    "METRIC_NAMES",
    "AggregateRun",
    "AsOfRun",
    "StepsRun",
    "attach_metrics",
    "lazy_result",
    "metrics_of",
    "write_dataset",
]

METRIC_NAMES = ("events", "late_events", "skipped_values", "rows", "skipped_rows")
_METRICS_ATTR = "_storey_metrics"  # on a lazy result: (per-partition metrics frame, names, CSV rows skipped)


def _dask() -> Any:
    return require("dask")


# ------------------------------------------------------------------------------------------ the run
class AggregateRun:
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

        check_options(batch_size, on_error)
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
        self.parts = read_plan(
            data, _needed(time_field, job.key_fields, job.value_fields), time_field, batch_size, on_error,
            storage_options,
        )  # fmt: skip
        (self.prefix,) = prefixes(self.parts)

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
            blob = pickle_driver(driver)
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
        from storey.frames._dask_partition import needs_clock

        clocked = task.output_schema is not None and needs_clock(self.job.layout)
        n_out = npartitions(len(self.parts))
        frames = shuffled(self.parts, self.prefix, self.key, self.where, n_out, clocked=clocked)
        return [dask.delayed(run_partition, pure=False)(p, task, i) for i, p in enumerate(frames)]

    # ------------------------------------------------------------------------------------ results
    def frame(self) -> Any:
        """The rows as a lazy Dask DataFrame (its metrics attached for `metrics_of`).

        With a Table the partitions are computed now (`dask.persist`: the rows stay in the workers'
        memory) so that the final states are written before this returns.
        """
        dd = require("dask.dataframe")
        pd = require("pandas")
        dask = _dask()
        schema = self._output_schema()
        meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
        names = METRIC_NAMES  # as the local engine's Table carries them
        if self.prefix.rows == 0:
            self._finish([])
            return attach_metrics(dd.from_pandas(meta, npartitions=1), [], names, self.prefix.skipped_rows)
        parts = self._partitions(self._task(schema, frame=True))
        if self.table_spec is not None:
            parts = list(dask.persist(*parts))
            self._install([s for states in dask.compute(*[p["states"] for p in parts]) for s in states])
        result = dd.from_delayed([p["rows"] for p in parts], meta=meta, verify_meta=False)
        return attach_metrics(result, [p["metrics"] for p in parts], names, self.prefix.skipped_rows)

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
        totals = sum_metrics([r["metrics"] for r in results], (*METRIC_NAMES, "rows_out"))
        totals["skipped_rows"] += self.prefix.skipped_rows
        self._install([s for r in results for s in r["states"]])
        return totals

    def _install(self, states: list[tuple[Any, list[bytes], int | None]]) -> None:
        from storey.frames.aggregate import run_sync

        spec = self.table_spec
        if spec is not None and spec.local:
            run_sync(self._persist(states))

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

        sample = first_rows(self.parts)
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


def pickle_driver(driver: Any) -> bytes:
    """`driver` pickled for the workers, with any event loop it remembers left out (a closed driver holds
    no connection; a loop belongs to the calling process, and each worker makes its own)."""
    import asyncio
    import io

    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, asyncio.AbstractEventLoop):
                return type(None), ()
            return NotImplemented

    buffer = io.BytesIO()
    _Pickler(buffer).dump(driver)
    return buffer.getvalue()


class _Exported:
    """Final states computed elsewhere, in the shape `AggregationJob.persist` reads from an engine."""

    def __init__(self, states: list[tuple[int, list[Any], int | None]]) -> None:
        self._states = states

    def export(self) -> Any:
        return iter(self._states)


# ------------------------------------------------------------------------------------------ shared steps
def read_plan(
    data: Any,
    needed: list[str],
    time_field: str,
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
) -> list[Any]:
    """The part readers of `data` (`storey.frames._dask_input.input_parts`) with the configured part size."""
    dask = _dask()
    return input_parts(
        data,
        needed=needed,
        time_field=time_field,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        partition_rows=rows_per_partition(dask.config.get("storey.partition-rows", PARTITION_ROWS)),
    )


def prefixes(*plans: list[Any]) -> list[Prefix]:
    """The prefix pass over the parts of one or several inputs (one Dask computation)."""
    dask = _dask()
    tasks = [
        [dask.delayed(part_stats, pure=False)(p) for p in delayed_parts(plan, times_only=True)]
        for plan in plans
    ]
    stats = dask.compute(*tasks)
    return [Prefix.of(s) for s in stats]


def shuffled(
    plan: list[Any], prefix: Prefix, key: Any, where: str, n_out: int, *, clocked: bool = False
) -> list[Any]:
    """The tagged rows of `plan`, shuffled by key hash into `n_out` partitions: one delayed pandas DataFrame
    per partition. Two inputs shuffled with the same `n_out` put equal keys in partitions of equal index.
    `clocked`: carry each row's time and step clock (for timers)."""
    dask = _dask()
    dd = require("dask.dataframe")
    tagged = [
        dask.delayed(tag_part, pure=False)(part, offset, clock_in, key, prefix.schema, where, clocked)
        for part, offset, clock_in in zip(
            delayed_parts(plan, times_only=False), prefix.offsets, prefix.clock_in, strict=True
        )
    ]
    if not tagged:
        tagged = [dask.delayed(tagged_meta, pure=False)(prefix.schema, clocked)]
    frame = dd.from_delayed(tagged, meta=tagged_meta(prefix.schema, clocked), verify_meta=False)
    return list(frame.shuffle(on=HASH, npartitions=n_out, method=_shuffle_method()).to_delayed())


def first_rows(plan: list[Any], n: int = 10_000) -> Any:
    """The first `n` rows of the first part that has rows (``None`` without rows)."""
    dask = _dask()
    for part in delayed_parts(plan, times_only=False):
        head = dask.compute(dask.delayed(_head, pure=False)(part, n))[0]
        if head.num_rows:
            return head
    return None


def sum_metrics(results: Sequence[Mapping[str, int]], names: Sequence[str]) -> dict[str, int]:
    totals = dict.fromkeys(names, 0)
    for r in results:
        for name in names:
            totals[name] += int(r.get(name, 0))
    return totals


def attach_metrics(result: Any, per_partition: list[Any], names: Sequence[str], skipped_rows: int) -> Any:
    """Attach the per-partition metrics (delayed dicts) to a lazy result, for `metrics_of`."""
    dask = _dask()
    dd = require("dask.dataframe")
    pd = require("pandas")
    meta = pd.DataFrame({name: pd.Series([], dtype="int64") for name in names})
    if per_partition:
        rows = [dask.delayed(_metrics_frame, pure=True)(m, tuple(names)) for m in per_partition]
        frame = dd.from_delayed(rows, meta=meta, verify_meta=False)
    else:
        frame = dd.from_pandas(meta, npartitions=1)
    setattr(result, _METRICS_ATTR, (frame, tuple(names), skipped_rows))
    return result


def metrics_of(result: Any) -> tuple[Any, tuple[str, ...], int]:
    """``(per-partition metrics frame, metric names, CSV rows skipped)`` of a lazy result."""
    try:
        return getattr(result, _METRICS_ATTR)
    except (AttributeError, TypeError, ValueError):
        msg = "storey.frames.dask: not a Dask DataFrame returned by storey.frames with engine='dask'"
        raise ValueError(msg) from None


def _head(part: Any, n: int) -> Any:
    return part.table.slice(0, n)


def _metrics_frame(metrics: Mapping[str, int], names: tuple[str, ...]) -> Any:
    pd = require("pandas")
    return pd.DataFrame({name: [int(metrics.get(name, 0))] for name in names})


def check_options(batch_size: int, on_error: str) -> None:
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


def npartitions(n_parts: int) -> int:
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


# ------------------------------------------------------------------------------------------ as_of
class AsOfRun:
    """`as_of` on Dask: labels and events shuffled by key into partitions of equal index."""

    where = "storey.frames.as_of"

    def __init__(
        self,
        labels: Any,
        data: Any,
        aggregates: Sequence[Any],
        *,
        options: dict[str, Any],
        on_error: str,
        storage_options: dict[str, Any] | None,
    ) -> None:
        from storey.frames._keys import KeyEncoder
        from storey.frames.io import _needed

        check_options(options["batch_size"], on_error)
        job = AggregationJob(
            aggregates, key=options["key"], time_field=options["time_field"], where=self.where
        )
        label_keys = KeyEncoder(options["label_key"], self.where)
        self.aggregates = list(aggregates)
        self.options = options
        self.storage_options = storage_options
        batch_size = options["batch_size"]
        self.events = read_plan(
            data, _needed(options["time_field"], job.key_fields, job.value_fields), options["time_field"],
            batch_size, on_error, storage_options,
        )  # fmt: skip
        label_needed = _needed(options["label_time"], label_keys.columns, None)
        self.labels = read_plan(
            labels, label_needed, options["label_time"], batch_size, on_error, storage_options
        )
        self.event_prefix, self.label_prefix = prefixes(self.events, self.labels)

    def output_schema(self) -> Any:
        """The local `as_of`'s columns: its result for one label over no events."""
        from storey.frames.asof import as_of

        pa = require("pyarrow")
        sample = first_rows(self.labels, 1)
        if sample is None:
            sample = (
                self.label_prefix.schema.empty_table() if self.label_prefix.schema.names else pa.table({})
            )
        empty = self.event_prefix.schema.empty_table()
        with _quiet():
            result = as_of(sample, empty, self.aggregates, **self.options)
        return result.schema.remove_metadata()

    def partitions(self, schema: Any, *, output: str | None = None, frame: bool = False) -> list[Any]:
        from storey.frames._dask_partition import AsOfTask, run_asof_partition

        dask = _dask()
        n = npartitions(max(len(self.events), len(self.labels)))
        events = shuffled(self.events, self.event_prefix, self.options["key"], self.where, n)
        labels = shuffled(self.labels, self.label_prefix, self.options["label_key"], self.where, n)
        task = AsOfTask(
            self.aggregates,
            self.options,
            self.event_prefix.schema,
            self.label_prefix.schema,
            schema,
            output,
            self.storage_options,
            frame,
        )
        return [
            dask.delayed(run_asof_partition, pure=False)(e, lb, task, i)
            for i, (e, lb) in enumerate(zip(events, labels, strict=True))
        ]


# ------------------------------------------------------------------------------------------ backfill
class StepsRun:
    """`backfill` of steps without `AggregateByKey` on Dask: every input part runs the steps, in order."""

    where = "storey.frames.backfill"

    def __init__(
        self,
        data: Any,
        steps: list[Any],
        *,
        options: dict[str, Any],
        on_error: str,
        storage_options: dict[str, Any] | None,
    ) -> None:
        from storey.frames.io import _needed

        check_options(options["batch_size"], on_error)
        self.steps = steps
        self.options = options
        self.storage_options = storage_options
        key = options["key_field"]
        keys = [key] if isinstance(key, str) else list(key or [])
        needed = _needed(options["time_field"], keys, [options["id_field"]] if options["id_field"] else None)
        self.parts = read_plan(
            data, needed, options["time_field"], options["batch_size"], on_error, storage_options
        )
        (self.prefix,) = prefixes(self.parts)

    def output_schema(self) -> Any:
        """The columns of the local `backfill` over the first rows."""
        import copy

        from storey.frames.plan import backfill

        sample = first_rows(self.parts)
        result = None
        if sample is not None:
            with _quiet():
                result = backfill(sample, copy.deepcopy(self.steps), **self.options)
        if result is None or not result.num_columns:
            msg = (
                f"{self.where}: engine='dask' takes the output columns from the steps' results for the first "
                "input rows, but there were none; use engine='local'"
            )
            raise ValueError(msg)
        return result.schema.remove_metadata()

    def partitions(self, schema: Any, *, output: str | None = None, frame: bool = False) -> list[Any]:
        from storey.frames._dask_partition import StepsTask, run_steps_part

        dask = _dask()
        task = StepsTask(self.steps, self.options, schema, output, self.storage_options, frame)
        parts = delayed_parts(self.parts, times_only=False)
        return [dask.delayed(run_steps_part, pure=False)(p, task, i) for i, p in enumerate(parts)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the `PerformanceWarning` of a sample run on the calling process (the workers' runs warn)."""
    import warnings

    from storey.errors import PerformanceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerformanceWarning)
        yield


def lazy_result(parts: list[Any], schema: Any, names: Sequence[str], skipped_rows: int) -> Any:
    """A lazy Dask DataFrame of the partitions' rows, with their metrics attached."""
    dd = require("dask.dataframe")
    pd = require("pandas")
    meta = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    if not parts:
        return attach_metrics(dd.from_pandas(meta, npartitions=1), [], names, skipped_rows)
    result = dd.from_delayed([p["rows"] for p in parts], meta=meta, verify_meta=False)
    return attach_metrics(result, [p["metrics"] for p in parts], names, skipped_rows)


def write_dataset(run: Any, output: str, names: Sequence[str], skipped_rows: int) -> dict[str, int]:
    """Run `run`'s partitions writing a Parquet dataset under `output`; the summed metrics."""
    from storey._utils._paths import makedirs_for
    from storey.frames.io import OutputSink

    dask = _dask()
    schema = run.output_schema()
    directory = output if output.endswith("/") else output + "/"
    makedirs_for(directory, run.storage_options, is_dir=True)
    results = dask.compute(*run.partitions(schema, output=directory))
    totals = sum_metrics([r["metrics"] for r in results], names)
    totals["skipped_rows"] = totals.get("skipped_rows", 0) + skipped_rows
    if totals["rows_out"] == 0:
        with OutputSink(directory, storage_options=run.storage_options) as sink:
            sink.write(schema.empty_table())
    return totals
