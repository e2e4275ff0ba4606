"""`check_parity`: run the streaming flow and `storey.frames` on the same data and compare (spec §8.6, §9.1).

The streaming side is the flow of spec §8.2: a source reading `data` as the stream reads it (`ReadParquet`
for Parquet files, `ReadCSV(header=True, build_dict=True)` for CSV, `DataframeSource` for pandas, and rows
built as `ReadParquet` builds them for Arrow and polars data), then `AggregateByKey` (or the given steps),
then a step collecting the emitted events. Both engines start from empty state, each with its own private
`NoopDriver`. Rows are compared in stream order: the body keys (a key absent from the stream's body equals
a null in frames) and every value (floats: ``a == b`` or both NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from storey.aggregations.field import FieldAggregator
from storey.event import Event

__all__ = ["ParityReport", "check_parity", "stream_events"]

_FORBIDDEN = ("table", "output", "engine")
_AGG_OPTIONS = ("emit_policy", "augmentation_fn", "aliases", "batch_size", "on_error", "storage_options")
_STEP_OPTIONS = ("id_field", "batch_size", "on_error", "storage_options")


@dataclass
class ParityReport:
    """The result of `check_parity`.

    Attributes
    ----------
    ok
        Both engines gave the same rows (also the report's truth value).
    rows_stream, rows_frames, rows_compared
        Row counts (compared: the rows both produced, in stream order).
    mismatches
        ``{column: number of differing rows}`` for every compared column.
    examples
        ``{column: [(row, key, time, stream_value, frames_value), ...]}``: the first differences.
    metrics
        ``{'stream': ..., 'frames': ...}``: each engine's metrics.
    """

    ok: bool
    rows_stream: int
    rows_frames: int
    rows_compared: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = "parity OK" if self.ok else "parity FAILED"
        counts = f"stream {self.rows_stream}, frames {self.rows_frames}"
        lines = [f"{head}: {self.rows_compared} rows compared ({counts})"]
        bad = {c: n for c, n in self.mismatches.items() if n}
        if self.rows_stream != self.rows_frames:
            lines.append(f"  row counts differ: stream {self.rows_stream}, frames {self.rows_frames}")
        for col, n in bad.items():
            lines.append(f"  {col}: {n} mismatching rows")
            for row, key, time, a, b in self.examples.get(col, []):
                lines.append(f"    row {row} key={key!r} time={time}: stream={a!r} frames={b!r}")
        if not bad and self.ok:
            lines.append(f"  {len(self.mismatches)} columns equal")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise `AssertionError` with the summary unless the engines agree."""
        if not self.ok:
            raise AssertionError(str(self))


# ------------------------------------------------------------------------------------------- the stream
def _is_csv(item: Any) -> bool:
    import os

    return isinstance(item, str | os.PathLike) and os.fspath(item).endswith(".csv")


def _is_path(item: Any) -> bool:
    import os

    return isinstance(item, str | os.PathLike)


def _source(
    data: Any,
    *,
    time_field: str | None,
    key_field: Any = None,
    id_field: str | None = None,
    on_error: str = "raise",
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """The streaming source that reads `data` as spec §8.2 says."""
    from storey.sources import DataframeSource, ReadCSV, ReadParquet

    items = list(data) if isinstance(data, list | tuple) else [data]
    if items and all(_is_csv(i) for i in items):
        return ReadCSV(
            [str(i) for i in items],
            header=True,
            build_dict=True,
            key_field=key_field,
            timestamp_field=time_field,
            id_field=id_field,
            on_error=on_error,
            storage_options=storage_options,
        )
    if items and all(_is_path(i) and not _is_csv(i) for i in items):
        return ReadParquet(
            [str(i) for i in items],
            key_field=key_field,
            time_field=time_field,
            id_field=id_field,
            storage_options=storage_options,
        )
    if len(items) == 1 and type(items[0]).__module__.startswith("pandas"):
        return DataframeSource(items[0], key_column=key_field, time_column=time_field, id_column=id_field)
    return _ArrowRowsSource(
        data, key_field=key_field, time_field=time_field, id_field=id_field, storage_options=storage_options
    )


def _arrow_rows_source_class() -> type:
    from storey.sources._arrow import rows_from_batch
    from storey.sources._reading import guard_reading, make_events
    from storey.sources.base import ReaderSource

    class ArrowRowsSource(ReaderSource):
        """Events with bodies built as `ReadParquet` builds them, from any `storey.frames.io` input."""

        def __init__(
            self, data: Any, *, key_field: Any, time_field: Any, id_field: Any, **kwargs: Any
        ) -> None:
            storage_options = kwargs.pop("storage_options", None)
            super().__init__(**kwargs)
            self._data = data
            self._key_field = key_field
            self._time_field = time_field
            self._id_field = id_field
            self._storage_options = storage_options

        def _read_batches(self) -> Iterator[list[Event]]:
            return guard_reading(self.name, self._events())

        def _events(self) -> Iterator[list[Event]]:
            from storey.frames.io import iter_batches

            kf = self._key_field
            key_fields = kf if isinstance(kf, list) else ([kf] if kf is not None else None)
            for ib in iter_batches(
                self._data,
                time_field=self._time_field,
                key_fields=key_fields,
                storage_options=self._storage_options,
            ):
                if ib.num_rows == 0:
                    continue
                bodies = rows_from_batch(ib.batch)
                keys = None
                if kf is not None:
                    keys = (
                        [[b[k] for k in kf] for b in bodies]
                        if isinstance(kf, list)
                        else [b[kf] for b in bodies]
                    )
                ids = None if self._id_field is None else [b[self._id_field] for b in bodies]
                times = None if ib.time_ns is None else ib.time_ns.tolist()
                positions = list(range(ib.row_offset, ib.row_offset + ib.num_rows))
                yield make_events(bodies, keys, times, ib.source, positions, ids)

    return ArrowRowsSource


def _ArrowRowsSource(data: Any, **kwargs: Any) -> Any:
    return _arrow_rows_source_class()(data, **kwargs)


def stream_events(
    data: Any,
    steps: Sequence[Any],
    *,
    key_field: Any = None,
    time_field: str | None = None,
    id_field: str | None = None,
    on_error: str = "raise",
    storage_options: dict[str, Any] | None = None,
) -> list[Event]:
    """Run ``[<source>(data), *steps, <collect>]`` with the real streaming runtime; the emitted events."""
    from storey.flow.graph import build_flow
    from storey.steps import Reduce

    def collect(acc: list[Event], event: Event) -> list[Event]:
        acc.append(event)
        return acc

    source = _source(
        data,
        time_field=time_field,
        key_field=key_field,
        id_field=id_field,
        on_error=on_error,
        storage_options=storage_options,
    )
    flow = build_flow([source, *steps, Reduce([], collect, full_event=True)])
    return flow.run().await_termination()


# ------------------------------------------------------------------------------------------- comparison
def _nullish(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return type(v).__name__ in ("NaTType", "NAType")


def _same(a: Any, b: Any, strict: bool) -> bool:
    if a is None or b is None:
        return (a is None and b is None) or (not strict and _nullish(a) and _nullish(b))
    if isinstance(a, tuple) and isinstance(b, Mapping):
        b = tuple(b.values())
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    try:
        eq = a == b
        if isinstance(eq, bool) and eq:
            return type(a) is not bool or type(b) is bool
    except Exception:
        return False
    return bool(not strict and _nullish(a) and _nullish(b))


def _frames_rows(table: Any) -> tuple[list[str], list[dict[str, Any]]]:
    from storey.sources._arrow import rows_from_batch

    names = list(table.schema.names)
    return names, rows_from_batch(table)


def compare(
    stream: list[Event], frames: Any, features: set[str], max_examples: int
) -> tuple[dict[str, int], dict[str, list[tuple[Any, ...]]], int]:
    """Per-column mismatch counts and examples of stream events vs a frames table (rows in order)."""
    names, rows = _frames_rows(frames)
    columns: dict[str, None] = {}
    for ev in stream:
        body = ev.body
        if isinstance(body, Mapping):
            for k in body:
                columns.setdefault(k)
    for n in names:
        columns.setdefault(n)
    mismatches = dict.fromkeys(columns, 0)
    examples: dict[str, list[tuple[Any, ...]]] = {}
    compared = min(len(stream), len(rows))
    for r in range(compared):
        ev = stream[r]
        body = ev.body if isinstance(ev.body, Mapping) else {}
        row = rows[r]
        for col in columns:
            a = body.get(col)
            b = row.get(col)
            if not _same(a, b, col in features):
                mismatches[col] += 1
                ex = examples.setdefault(col, [])
                if len(ex) < max_examples:
                    ex.append((r, ev.key, ev.time, a, b))
    return mismatches, examples, compared


def check_parity(
    steps_or_aggregates: Sequence[Any],
    data: Any,
    *,
    key: Any = None,
    time_field: str | None = None,
    max_examples: int = 5,
    **options: Any,
) -> ParityReport:
    """Run the streaming flow and `storey.frames` on `data` and compare their outputs row by row.

    Parameters
    ----------
    steps_or_aggregates
        `FieldAggregator`s (or dicts): checked as ``aggregate(data, aggs, key=key, time_field=time_field,
        **options)``; or a list of steps: checked as ``backfill(data, steps, key_field=key,
        time_field=time_field, **options)``.
    data
        Test-sized data (both outputs are held in memory).
    key, time_field
        Required for aggregates.
    max_examples
        Differences kept per column.
    options
        ``emit_policy``, ``augmentation_fn``, ``aliases``, ``batch_size``, ``on_error``, ``storage_options``
        (and ``id_field`` for steps). ``table``, ``output`` and ``engine`` are not accepted.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows
    >>> events = pa.table({"user": ["a", "a", "b"], "t": [0, 60_000, 120_000], "x": [1.0, None, 4.0]})
    >>> aggs = [FieldAggregator("x", "x", ["avg", "count"], SlidingWindows(["1h"], "10m"))]
    >>> report = check_parity(aggs, events, key="user", time_field="t")
    >>> report.ok, report.rows_compared, report.mismatches["x_avg_1h"]
    (True, 3, 0)
    """
    for name in _FORBIDDEN:
        if name in options:
            msg = f"check_parity: `{name}` is not accepted (both engines use their own private NoopDriver)"
            raise TypeError(msg)
    items = list(steps_or_aggregates)
    is_aggs = bool(items) and all(isinstance(i, FieldAggregator | Mapping) for i in items)
    if is_aggs:
        unknown = sorted(set(options) - set(_AGG_OPTIONS))
        if unknown:
            msg = f"check_parity: unexpected option(s) {unknown}; accepted: {list(_AGG_OPTIONS)}"
            raise TypeError(msg)
        if key is None or time_field is None:
            msg = "check_parity: `key` and `time_field` are required for a list of aggregators"
            raise TypeError(msg)
        stream, stream_metrics = _stream_aggregate(items, data, key, time_field, options)
        from storey.frames.aggregate import aggregate

        frames = aggregate(data, items, key=key, time_field=time_field, **options)
        frames_metrics = _table_metrics(frames)
        features = _feature_names(items, options.get("aliases"))
    else:
        unknown = sorted(set(options) - set(_STEP_OPTIONS))
        if unknown:
            msg = f"check_parity: unexpected option(s) {unknown}; accepted: {list(_STEP_OPTIONS)}"
            raise TypeError(msg)
        from storey.frames.plan import backfill, fresh_steps

        stream_steps = fresh_steps(items, private_tables=True)
        stream = stream_events(
            data,
            stream_steps,
            key_field=key,
            time_field=time_field,
            id_field=options.get("id_field"),
            on_error=options.get("on_error", "raise"),
            storage_options=options.get("storage_options"),
        )
        stream_metrics = _steps_metrics(stream_steps)
        frames = backfill(
            data, fresh_steps(items, private_tables=True), key_field=key, time_field=time_field, **options
        )
        frames_metrics = _table_metrics(frames)
        features = set()
        for step in items:
            for agg in getattr(step, "aggregates", ()) or ():
                features |= set(agg.feature_names)
    mismatches, examples, compared = compare(stream, frames, features, max_examples)
    ok = len(stream) == frames.num_rows and not any(mismatches.values())
    return ParityReport(
        ok=ok,
        rows_stream=len(stream),
        rows_frames=frames.num_rows,
        rows_compared=compared,
        mismatches=mismatches,
        examples=examples,
        metrics={"stream": stream_metrics, "frames": frames_metrics},
    )


def _feature_names(aggregates: list[Any], aliases: Mapping[str, str] | None) -> set[str]:
    from storey.aggregations.field import normalize_aggregates

    aliases = aliases or {}
    return {
        aliases.get(f, f) for a in normalize_aggregates(aggregates, "check_parity") for f in a.feature_names
    }


def _table_metrics(table: Any) -> dict[str, Any]:
    import json

    meta = table.schema.metadata or {}
    raw = meta.get(b"storey.metrics")
    return json.loads(raw) if raw else {}


def _steps_metrics(steps: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for step in steps:
        metrics = getattr(step, "metrics", None)
        if isinstance(metrics, dict) and "events" in metrics:
            for k, v in metrics.items():
                out[k] = out.get(k, 0) + v
    return out


def _stream_aggregate(
    aggregates: list[Any], data: Any, key: Any, time_field: str, options: dict[str, Any]
) -> tuple[list[Event], dict[str, Any]]:
    from storey.aggregations.emit import EmitEveryEvent
    from storey.aggregations.step import AggregateByKey
    from storey.drivers import NoopDriver
    from storey.table import Table

    step = AggregateByKey(
        aggregates,
        Table("storey-parity", NoopDriver()),
        key=key,
        time_field=time_field,
        emit_policy=options.get("emit_policy") or EmitEveryEvent(),
        augmentation_fn=options.get("augmentation_fn"),
        aliases=options.get("aliases"),
    )
    events = stream_events(
        data,
        [step],
        time_field=time_field,
        on_error=options.get("on_error", "raise"),
        storage_options=options.get("storage_options"),
    )
    return events, dict(step.metrics)
