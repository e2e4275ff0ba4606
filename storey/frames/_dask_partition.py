"""One shuffled partition of the Dask engine: the local engine over a subset of the keys (§8.7).

A partition holds every row of its keys, sorted back into arrival order, so the local engine's per-key
state machine and kernels (`AggregationJob` with the compiled or the reference engine) compute exactly the
local results for them. What a partition cannot see is the rest of the stream, which matters only for timer
emissions (§6.2): they fire when the step clock ``C`` (the maximum time of *all* events so far) passes their
due time, and boundaries start after the stream's *first* event. The carried clock gives ``C`` at each row;
`clock_rows` turns it into a few **clock events** inserted before rows where ``C`` passed a due time that
the partition's own times have not reached:

- a clock event is an event of a private key (`CLOCK_KEY`) at time ``C``. It makes the engine's firing pass
  run with that ``C`` before the next row, exactly where the stream's firing pass ran relative to this
  partition's rows (no row of this partition arrived in between);
- for period and window policies one is put first, at the stream's first event time (the boundaries start
  there), and one last at the final ``C`` when it changes the last boundary flushed (§6.5);
- they are filtered out by every aggregator (no tile, no skipped value, never late), and the private key's
  emissions, metrics and state are removed.

Policies without timers (`EmitEveryEvent`, `EmitAfterMaxEvent` without timeout, `build_state`) need none.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storey._utils._imports import require
from storey.frames._batch import SKIP, Batch
from storey.frames._dask_input import NO_TIME, conform_rows
from storey.frames._dask_shuffle import CLOCK, SEQ, TAGS, TIME
from storey.frames._emissions import Emissions
from storey.frames._job import AggregationJob
from storey.frames._layout import POLICY_DELAY, POLICY_MAX, POLICY_PERIOD

__all__ = [
    "CLOCK_KEY",
    "AsOfTask",
    "PartitionJob",
    "PartitionOutput",
    "PartitionTask",
    "StepsTask",
    "TableSpec",
    "arrival_rows",
    "clock_rows",
    "needs_clock",
    "run_asof_partition",
    "run_partition",
    "run_steps_part",
]


class _ClockKey:
    """The key of clock events: equal only to itself, never a user key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<storey clock>"


CLOCK_KEY = _ClockKey()
_CLOCK_ROW: dict[str, Any] = {}  # the row dict of a clock event (for user callables, which never see it)


# ------------------------------------------------------------------------------------------ clock events
def _period_clock_rows(
    t: np.ndarray,
    c: np.ndarray,
    step: int,
    delay: int,
    first: int,
    final: int,
    before: np.ndarray,
    at: np.ndarray,
) -> int:
    k = 0
    before[k] = 0
    at[k] = first
    k += 1
    e = first  # the engine's clock
    for j in range(t.shape[0]):
        x = t[j] if t[j] > e else e
        if (c[j] - delay) // step > (x - delay) // step:  # a boundary is due at C but not at the own clock
            before[k] = j
            at[k] = c[j]
            k += 1
            e = c[j]
        else:
            e = x
    if final // step > e // step:  # the last boundary flushed depends on the final C (§6.5)
        before[k] = t.shape[0]
        at[k] = final
        k += 1
    return k


def _timer_clock_rows(
    t: np.ndarray, c: np.ndarray, dues: np.ndarray, before: np.ndarray, at: np.ndarray
) -> int:
    k = 0
    e = np.iinfo(np.int64).min
    for j in range(t.shape[0]):
        x = t[j] if t[j] > e else e
        if c[j] > x and np.searchsorted(dues, c[j], side="right") > np.searchsorted(dues, x, side="right"):
            before[k] = j  # some timer may be due at C but not at the own clock
            at[k] = c[j]
            k += 1
            e = c[j]
        else:
            e = x
    return k


_COMPILED: dict[str, Callable[..., int]] = {}


def _loop(name: str) -> Callable[..., int]:
    fn = _COMPILED.get(name)
    if fn is None:
        from storey.aggregations.kernels.base import _numba_enabled

        fn = {"period": _period_clock_rows, "timer": _timer_clock_rows}[name]
        if _numba_enabled():
            from storey.aggregations.kernels.compiled import njit

            fn = njit(fn)
        _COMPILED[name] = fn
    return fn


def needs_clock(layout: Any) -> bool:
    """Whether the policy has timers (period, window, delay, max-events with a timeout)."""
    kind = layout.policy_kind
    return kind in (POLICY_PERIOD, POLICY_DELAY) or (
        kind == POLICY_MAX and layout.policy.timeout_ns is not None
    )


def clock_rows(
    layout: Any, times: np.ndarray, clock: np.ndarray, first_time: int, final_clock: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where clock events go: ``(before, at)``, a clock event at time ``at[i]`` before row ``before[i]``
    (``len(times)``: after the last row). Empty for policies without timers.

    Examples
    --------
    >>> from storey import EmitAfterPeriod, FieldAggregator, SlidingWindows
    >>> from storey.frames._layout import StepLayout
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> layout = StepLayout([agg], None, EmitAfterPeriod())
    >>> m = 60 * 10**9
    >>> before, at = clock_rows(layout, np.array([5, 8]) * m, np.array([25, 26]) * m, 0, 40 * m)
    >>> before.tolist(), (at // m).tolist()
    ([0, 0, 2], [0, 25, 40])
    """
    kind = layout.policy_kind
    policy = layout.policy
    m = len(times)
    before = np.empty(m + 2, dtype=np.int64)
    at = np.empty(m + 2, dtype=np.int64)
    t = np.ascontiguousarray(times, dtype=np.int64)
    c = np.ascontiguousarray(clock, dtype=np.int64)
    if not needs_clock(layout):
        k = 0
    elif kind == POLICY_PERIOD:
        k = _loop("period")(t, c, layout.boundary_step, policy.delay_ns, first_time, final_clock, before, at)
    else:
        timeout = policy.delay_ns if kind == POLICY_DELAY else policy.timeout_ns
        dues = np.sort(t + np.int64(timeout))
        k = _loop("timer")(t, c, dues, before, at)
    return before[:k].copy(), at[:k].copy()


def _with_clock_rows(batch: Batch, pos: np.ndarray, at: np.ndarray, kid: int) -> Batch:
    """`batch` with clock events (key id `kid`, times `at`) inserted before its rows `pos`."""
    import pyarrow as pa

    n, d = batch.n, len(pos)
    dummy = pos + np.arange(d, dtype=np.int64)
    is_clock = np.zeros(n + d, dtype=bool)
    is_clock[dummy] = True
    src = np.empty(n + d, dtype=np.int64)
    src[~is_clock] = np.arange(n, dtype=np.int64)
    src[dummy] = np.minimum(pos, n - 1)  # any row of the batch: its values are never read
    out = Batch(batch.data.take(pa.array(src)), batch.source, batch.row_offset)
    out.kids = batch.kids[src]
    out.kids[dummy] = kid
    out.times = batch.times[src]
    out.times[dummy] = at
    out.values = [None if v is None else v[src] for v in batch.values]
    out.status = []
    for s in batch.status:
        if s is not None:
            s = s[src]
            s[dummy] = SKIP
        out.status.append(s)
    keep = ~is_clock
    callables = False
    for f in batch.filters:
        if f is None:
            out.filters.append(keep)
        elif isinstance(f, np.ndarray):
            out.filters.append(f[src] & keep)
        else:
            callables = True
            out.filters.append(_NotOnClockRows(f))
    if callables or any(v is None for v in batch.values):
        rows = batch.rows()
        out._rows = [
            _CLOCK_ROW if c else rows[i] for i, c in zip(src.tolist(), is_clock.tolist(), strict=True)
        ]
    return out


class _NotOnClockRows:
    """A user filter that clock events never reach (they are filtered out first)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, body: Any) -> Any:
        return body is not _CLOCK_ROW and self.fn(body)


def _drop_key(em: Emissions, kid: int) -> Emissions:
    keep = em.kid != kid
    if keep.all():
        return em
    idx = np.flatnonzero(keep)
    return Emissions(
        em.src[idx], em.kid[idx], em.time[idx], [f[idx] for f in em.features], [p[idx] for p in em.present]
    )


class _WithoutClockKey:
    """An engine whose emissions and exported states leave out the clock events' key."""

    def __init__(self, engine: Any, kid: int) -> None:
        self._engine = engine
        self._kid = kid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def process(self, batch: Batch, first_row: int) -> tuple[Emissions, BaseException | None]:
        em, error = self._engine.process(batch, first_row)
        return _drop_key(em, self._kid), error

    def finish(self) -> Emissions:
        return _drop_key(self._engine.finish(), self._kid)

    def export(self) -> Any:
        return ((kid, st, t) for kid, st, t in self._engine.export() if kid != self._kid)


# ------------------------------------------------------------------------------------------ the job
class PartitionJob(AggregationJob):
    """`AggregationJob` over one shuffled partition: clock events, and the caller's live states.

    Parameters
    ----------
    clock
        ``(times, clock)`` of the partition's rows (arrival order), or ``None`` for no clock events.
    first_time, final_clock
        The stream's first event time and final step clock.
    live
        ``{aggregator name: [(key, blob), ...]}``: states live in the caller's Table (installed as live
        states of the partition's Table before any key is loaded).
    """

    def __init__(
        self,
        aggregates: Sequence[Any],
        *,
        clock: tuple[np.ndarray, np.ndarray] | None = None,
        first_time: int = NO_TIME,
        final_clock: int = NO_TIME,
        live: dict[str, list[tuple[Any, bytes]]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(aggregates, **options)
        self._clock = clock
        self._first_time = first_time
        self._final_clock = final_clock
        self._live = live or {}
        self._before = np.empty(0, dtype=np.int64)
        self._at = np.empty(0, dtype=np.int64)
        self._rows = 0
        self._clock_kid = -1
        self.clock_events = 0

    async def start(self, table: Any = None) -> None:
        await super().start(table)
        layout = self.layout
        assert layout is not None
        if table is not None and self._live:
            from storey.aggregations.blob import decode_state

            plans = dict(zip(layout.names, layout.plans, strict=True))
            for name, items in self._live.items():
                if name in plans:
                    for key, blob in items:
                        table.set_state(key, name, decode_state(plans[name], blob))
        if self._clock is None:
            return
        times, clock = self._clock
        self._rows = len(times)
        self._before, self._at = clock_rows(layout, times, clock, self._first_time, self._final_clock)
        if not len(self._before):
            return
        self._clock_kid = self.keys._id(CLOCK_KEY)  # before any row: no table lookup for it
        self.engine.add_keys(len(self.keys))
        self.engine.install(self._clock_kid, [p.new_state() for p in layout.plans])
        self._n_keys = len(self.keys)
        self.engine = _WithoutClockKey(self.engine, self._clock_kid)

    def normalise(self, ib: Any) -> Batch:
        batch = super().normalise(ib)
        if self._clock_kid < 0:
            return batch
        lo = ib.row_offset
        hi = lo + batch.n
        a = int(np.searchsorted(self._before, lo, side="left"))
        b = int(np.searchsorted(self._before, hi, side="right" if hi >= self._rows else "left"))
        if a == b:
            return batch
        self.clock_events += b - a
        return _with_clock_rows(batch, self._before[a:b] - lo, self._at[a:b], self._clock_kid)

    @property
    def metrics(self) -> dict[str, int]:
        out = super().metrics
        out["events"] -= self.clock_events
        out["rows"] -= self.clock_events
        return out


# ------------------------------------------------------------------------------------------ tables
@dataclass
class TableSpec:
    """How a partition reaches the caller's Table.

    Attributes
    ----------
    table_path
        The Table's name.
    driver
        The pickled driver (each partition unpickles its own copy), or ``None``: a private `NoopDriver`
        holding only `doc`.
    local
        The driver lives in the calling process (`NoopDriver`, ``SQLiteDriver(':memory:')``): the final
        states are returned to it instead of being written by the partition.
    doc
        The schema document (already saved by the calling process).
    live
        States live in the caller's Table, as `PartitionJob` takes them.
    """

    table_path: str
    driver: bytes | None
    local: bool
    doc: dict[str, Any]
    live: dict[str, list[tuple[Any, bytes]]] = field(default_factory=dict)

    async def open(self) -> Any:
        from storey.drivers import NoopDriver
        from storey.table import Table

        if self.driver is not None:
            driver = pickle.loads(self.driver)
        else:
            driver = NoopDriver()
            await driver.save_schema(self.table_path, self.doc)
        return Table(self.table_path, driver)


# ------------------------------------------------------------------------------------------ the task
@dataclass
class PartitionTask:
    """Everything a partition needs (pickled to the workers)."""

    aggregates: list[Any]
    key: Any
    time_field: str
    emit_policy: Any
    augmentation_fn: Any
    aliases: dict[str, str] | None
    batch_size: int
    where: str
    input_schema: Any
    output_schema: Any  # None: nothing is emitted (build_state)
    first_time: int
    final_clock: int
    output: str | None = None
    storage_options: dict[str, Any] | None = None
    table: TableSpec | None = None
    frame: bool = False  # return the rows as a pandas DataFrame


class PartitionOutput:
    """Where a partition's result tables go: a Parquet dataset directory (``output``), the rows returned
    as a pandas DataFrame (``frame``), or nowhere; every table is conformed to `schema` first."""

    def __init__(
        self,
        schema: Any,
        *,
        output: str | None,
        frame: bool,
        storage_options: dict[str, Any] | None,
        batch_size: int,
        where: str,
    ) -> None:
        self.schema = schema
        self.frame = frame
        self.where = where
        self.rows_out = 0
        self._tables: list[Any] = []
        self._sink = None
        if output is not None and schema is not None:
            from storey.frames.io import OutputSink

            self._sink = OutputSink(output, storage_options=storage_options, batch_size=batch_size)

    def write(self, table: Any) -> None:
        table = conform_rows(table, self.schema, self.where)
        self.rows_out += table.num_rows
        if self._sink is not None:
            self._sink.write(table)
        elif self.frame:
            self._tables.append(table)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()

    def rows(self) -> Any:
        """The rows as a pandas DataFrame of Arrow-backed columns (``None`` unless `frame`)."""
        if not self.frame:
            return None
        pa = require("pyarrow")
        pd = require("pandas")
        tables = self._tables
        result = (
            (pa.concat_tables(tables) if len(tables) > 1 else tables[0])
            if tables
            else self.schema.empty_table()
        )
        return result.to_pandas(types_mapper=pd.ArrowDtype)


def arrival_rows(df: Any, schema: Any, where: str, *, in_order: bool = False) -> Any:
    """A shuffled partition's rows in arrival order as a `pyarrow.Table` with exactly `schema`
    (`in_order`: `df` is already sorted by `SEQ`)."""
    pa = require("pyarrow")
    if not in_order:
        df = df.sort_values(SEQ, kind="stable")
    tags = [c for c in TAGS if c in df.columns]
    rows = pa.Table.from_pandas(df.drop(columns=tags), preserve_index=False).replace_schema_metadata(None)
    return conform_rows(rows, schema, where)


def run_partition(df: Any, task: PartitionTask, index: int) -> dict[str, Any]:
    """Run the local engine over one shuffled partition.

    Returns ``{'rows': pandas DataFrame or None, 'metrics': dict, 'states': [(key, blobs, last time)]}``
    (states only for a Table whose driver lives in the calling process).
    """
    from storey.frames.aggregate import run_job, run_sync

    df = df.sort_values(SEQ, kind="stable")
    carried = None
    if CLOCK in df.columns:
        carried = (df[TIME].to_numpy(dtype=np.int64), df[CLOCK].to_numpy(dtype=np.int64))
    rows = arrival_rows(df, task.input_schema, f" (partition {index})", in_order=True)
    del df
    emitting = task.output_schema is not None
    job = PartitionJob(
        task.aggregates,
        key=task.key,
        time_field=task.time_field,
        emit_policy=task.emit_policy if emitting else _no_emit(),
        augmentation_fn=task.augmentation_fn,
        aliases=task.aliases,
        where=task.where,
        clock=carried if emitting else None,
        first_time=task.first_time,
        final_clock=task.final_clock,
        live=task.table.live if task.table is not None else None,
    )
    out = PartitionOutput(
        task.output_schema,
        output=task.output,
        frame=task.frame,
        storage_options=task.storage_options,
        batch_size=task.batch_size,
        where=f" (partition {index}, output)",
    )

    async def go() -> dict[str, int]:
        table = await task.table.open() if task.table is not None else None
        return await run_job(
            job,
            rows,
            table=table,
            write=out.write if emitting else None,
            batch_size=task.batch_size,
            on_error="raise",
            storage_options=None,
            progress=None,
        )

    try:
        metrics = run_sync(go())
    finally:
        out.close()
    metrics["rows_out"] = out.rows_out
    result: dict[str, Any] = {"rows": out.rows(), "metrics": metrics, "states": []}
    if task.table is not None and task.table.local:
        from storey.aggregations.blob import encode_state

        values = job.keys.values
        result["states"] = [
            (values[kid], [encode_state(s) for s in states], last_t)
            for kid, states, last_t in job.engine.export()
        ]
    return result


def _no_emit() -> Any:
    from storey.frames._layout import NoEmit

    return NoEmit()


# ------------------------------------------------------------------------------------------ as_of, backfill
@dataclass
class AsOfTask:
    """What an `as_of` partition needs: the local `as_of` arguments and the schemas."""

    aggregates: list[Any]
    options: dict[
        str, Any
    ]  # key, time_field, label_key, label_time, inclusive, fixed_window_type, batch_size
    event_schema: Any
    label_schema: Any
    output_schema: Any
    output: str | None = None
    storage_options: dict[str, Any] | None = None
    frame: bool = False


def run_asof_partition(events: Any, labels: Any, task: AsOfTask, index: int) -> dict[str, Any]:
    """The local `as_of` over the labels and the events of one partition's keys (both in input order)."""
    import json

    from storey.frames.asof import as_of

    event_rows = arrival_rows(events, task.event_schema, f" (partition {index}, events)")
    label_rows = arrival_rows(labels, task.label_schema, f" (partition {index}, labels)")
    del events, labels
    result = as_of(label_rows, event_rows, task.aggregates, on_error="raise", **task.options)
    metrics = json.loads(result.schema.metadata[b"storey.metrics"])
    out = PartitionOutput(
        task.output_schema,
        output=task.output,
        frame=task.frame,
        storage_options=task.storage_options,
        batch_size=task.options["batch_size"],
        where=f" (partition {index}, output)",
    )
    try:
        if result.num_rows or not label_rows.num_rows:
            out.write(result.replace_schema_metadata(None))
    finally:
        out.close()
    metrics["rows_out"] = out.rows_out
    return {"rows": out.rows(), "metrics": metrics}


@dataclass
class StepsTask:
    """What a `backfill` part needs: the steps, the source's fields and the output schema."""

    steps: list[Any]
    options: dict[str, Any]  # key_field, time_field, id_field, batch_size
    output_schema: Any
    output: str | None = None
    storage_options: dict[str, Any] | None = None
    frame: bool = False


def run_steps_part(part: Any, task: StepsTask, index: int) -> dict[str, Any]:
    """The local `backfill` of one input part, with its own copies of the steps."""
    import copy

    from storey.frames.plan import backfill

    steps = copy.deepcopy(task.steps)  # a step that keeps state sees this part only (on any scheduler)
    result = backfill(part.table, steps, **task.options)
    out = PartitionOutput(
        task.output_schema,
        output=task.output,
        frame=task.frame,
        storage_options=task.storage_options,
        batch_size=task.options["batch_size"],
        where=f" (part {index}, output)",
    )
    try:
        if result.num_rows:
            out.write(result)
    finally:
        out.close()
    return {"rows": out.rows(), "metrics": {"rows": part.table.num_rows, "rows_out": out.rows_out}}
