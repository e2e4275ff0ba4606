"""`backfill`: a linear list of steps over batch data (spec AGGREGATIONS.md §8.1, §8.2).

``backfill(data, steps, key_field=K, time_field=T, id_field=I)`` is defined as the bodies emitted by the flow
``[<source>(data, key_field=K, time_field=T, id_field=I), *steps, <collect>]``. Only `Filter`, `Map`,
`FlatMap`, `Extend`, `MapClass` and `AggregateByKey` are accepted (anything else raises `TypeError`: run it
in a flow).

Lowering: a lone `AggregateByKey` whose key and time the batch engine can read column-wise runs in
`storey.frames.aggregate` (compiled when its fields and filters are columns). Any chain with per-row steps
runs row by row in the streaming runtime itself, so user functions are called exactly as the stream calls
them (with a one-time `PerformanceWarning`). Either way the rows are the flow's.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from storey.aggregations.step import AggregateByKey
from storey.errors import PerformanceWarning
from storey.event import Event
from storey.steps.functional import Extend, Filter, FlatMap, Map, MapClass

__all__ = ["backfill", "fresh_steps"]

_ALLOWED = (Filter, Map, FlatMap, Extend, MapClass, AggregateByKey)


def fresh_steps(steps: Sequence[Any], *, private_tables: bool = False) -> list[Any]:
    """Unlinked shallow copies of `steps` (so that one list can be built into several flows).

    With `private_tables`, each `AggregateByKey` gets a new `Table` over its own `NoopDriver`.
    """
    from storey.drivers import NoopDriver
    from storey.table import Table

    out = []
    for step in steps:
        c = copy.copy(step)
        c._outlets = []
        c._inlets = []
        for name, value in list(vars(c).items()):  # methods of the original bound as attributes
            if getattr(value, "__self__", None) is step and hasattr(value, "__func__"):
                setattr(c, name, value.__func__.__get__(c))
        if private_tables and isinstance(c, AggregateByKey):
            c._table_spec = Table(f"storey-parity-{id(c)}", NoopDriver())
        out.append(c)
    return out


def _check_steps(steps: Sequence[Any]) -> list[Any]:
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence) or not steps:
        msg = "storey.frames.backfill: `steps` must be a non-empty list of steps"
        raise TypeError(msg)
    for step in steps:
        if not isinstance(step, _ALLOWED):
            msg = (
                f"storey.frames.backfill: step {getattr(step, 'name', step)!r} ({type(step).__name__}) "
                "cannot run in a backfill; only Filter, Map, FlatMap, Extend, MapClass and AggregateByKey "
                "can - run it in a flow"
            )
            raise TypeError(msg)
    return list(steps)


def _frames_capable(step: Any, key_field: Any, time_field: str | None) -> bool:
    """Whether a leading `AggregateByKey` can run in the batch engine with exactly the stream's semantics."""
    from storey.table import Table

    if not isinstance(step, AggregateByKey):
        return False
    if step._full_event or step._enrich_with or step._use_windows_from_schema:
        return False
    if not isinstance(getattr(step, "_table_spec", None), Table):
        return False
    key = step.key if step.key is not None else key_field
    if key is None:
        return False
    tf = step.time_field if step.time_field is not None else time_field
    return isinstance(tf, str)


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
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Run a linear list of steps over `data` and return the final bodies as rows.

    Parameters
    ----------
    data
        As for `storey.frames.aggregate`.
    steps
        `Filter`, `Map`, `FlatMap`, `Extend`, `MapClass` and `AggregateByKey` steps, in order.
    key_field, time_field, id_field
        The columns giving each event's key, time and id (as the streaming source's parameters).
    batch_size, on_error, storage_options
        As for `storey.frames.aggregate`.
    output
        Stream the rows to a Parquet/CSV target and return the metrics instead.
    engine
        ``'local'``, or ``'dask'`` (`storey.frames.dask`).

    Returns
    -------
    pyarrow.Table or dict
        The final bodies (dicts) as rows, columns in first-appearance order; with `output`, the metrics.

    Raises
    ------
    TypeError
        A step of another kind ("run it in a flow"), or a final body that is not a dict (naming the last
        step).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import AggregateByKey, FieldAggregator, Map, NoopDriver, SlidingWindows, Table
    >>> events = pa.table({"user": ["a", "a"], "t": [0, 60_000], "x": [1.0, 2.0]})
    >>> agg = AggregateByKey(
    ...     [FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))], Table("t", NoopDriver())
    ... )
    >>> steps = [agg, Map(lambda b: {"user": b["user"], "total": b["x_sum_1h"]})]
    >>> backfill(events, steps, key_field="user", time_field="t").to_pylist()
    [{'user': 'a', 'total': 1.0}, {'user': 'a', 'total': 3.0}]
    """
    from storey.frames.aggregate import _dask_call, check_engine

    if engine == "dask":
        return _dask_call("backfill", locals())
    check_engine(engine, "storey.frames.backfill")
    steps = fresh_steps(_check_steps(steps))
    last = steps[-1].name
    if len(steps) == 1 and _frames_capable(steps[0], key_field, time_field):
        rows: Iterator[Any] = _aggregate_rows(
            data,
            steps[0],
            key_field=key_field,
            time_field=time_field,
            batch_size=batch_size,
            on_error=on_error,
            storage_options=storage_options,
        )
    else:
        _warn_rows([s.name for s in steps])
        rows = _stream_rows(
            data,
            steps,
            key_field=key_field,
            time_field=time_field,
            id_field=id_field,
            on_error=on_error,
            storage_options=storage_options,
        )
    return _emit_rows(rows, last, output, storage_options, batch_size)


def _warn_rows(names: list[str]) -> None:
    warnings.warn(
        f"storey.frames.backfill: steps {names} run row by row in the streaming runtime",
        PerformanceWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------------------- row streams
def _stream_rows(data: Any, steps: list[Any], **source: Any) -> Iterator[Any]:
    """Yield the final events of the streaming flow (tables of the frames part are not involved)."""
    from storey.frames.parity import stream_events

    yield from stream_events(data, steps, **source)


def _aggregate_rows(
    data: Any,
    step: AggregateByKey,
    *,
    key_field: Any,
    time_field: str | None,
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
) -> Iterator[Any]:
    """A lone `AggregateByKey` in the batch engine: its output tables."""
    from storey.frames.aggregate import _aggregate

    key = step.key if step.key is not None else key_field
    if isinstance(key, list):
        key = list(key)
    tables: list[Any] = []
    step.metrics = _aggregate(
        data,
        step.aggregates,
        key=key,
        time_field=step.time_field if step.time_field is not None else time_field,
        emit_policy=step.emit_policy,
        augmentation_fn=step._augmentation_fn,
        aliases=step._aliases,
        table=step._table_spec,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        where=f"step {step.name!r}",
        collect=tables,
    )
    yield from tables


def _emit_rows(
    rows: Iterator[Any],
    last: str,
    output: str | None,
    storage_options: dict[str, Any] | None,
    batch_size: int,
) -> Any:
    """Collect the final rows (Arrow tables or events) into a table or an output target."""
    import pyarrow as pa

    tables: list[Any] = []
    pending: list[dict[str, Any]] = []
    n_rows = 0

    def flush_events() -> None:
        nonlocal pending
        if pending:
            names: dict[str, None] = {}
            for body in pending:
                names.update(dict.fromkeys(body))
            tables.append(pa.table({name: [b.get(name) for b in pending] for name in names}))
            pending = []

    for item in rows:
        if isinstance(item, Event):
            body = item.body
            if not isinstance(body, Mapping):
                kind = type(body).__name__
                msg = f"storey.frames.backfill: step {last!r} emitted a {kind} body; rows need dicts"
                raise TypeError(msg)
            pending.append(dict(body))
            if len(pending) >= batch_size:
                flush_events()
        else:
            tables.append(item)
        n_rows += 1 if isinstance(item, Event) else item.num_rows
    flush_events()
    order: dict[str, None] = {}
    for t in tables:
        for name in t.schema.names:
            order.setdefault(name)
    if output is not None:
        from storey.frames.io import OutputSink

        with OutputSink(output, storage_options=storage_options, batch_size=batch_size) as sink:
            for t in tables:
                sink.write(t)
        return {"rows_out": n_rows}
    if not tables:
        return pa.table({})
    result = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return result.select(list(order))
