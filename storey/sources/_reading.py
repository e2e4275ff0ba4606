"""Helpers shared by the file and dataframe sources: error wrapping, row-dict builders, event batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from storey._time import now_ns, to_ns, to_ns_array
from storey.errors import FlowError, MissingFieldError
from storey.event import Event
from storey.flow.batch import EventBatch

__all__ = [
    "EVENT_CHUNK",
    "checked_times",
    "dict_rows",
    "event_chunks",
    "guard_reading",
    "make_events",
    "read_error",
]

_from_ns = Event._from_ns
#: Events handed to the flow at once. Small lists keep few new objects alive at a time, which keeps the
#: garbage collector's work (a large share of the cost per row) low; larger ones pay more GC than they save.
EVENT_CHUNK = 256
_MAX_GENERATED = 255  # columns above this use dict(zip(...)) instead of a generated dict display


def read_error(step: str, exc: BaseException) -> FlowError:
    """The `FlowError` of a source that failed while reading (no event yet), with `exc` as the cause."""
    err = FlowError(f"step {step!r} failed while reading: {exc!r}", step=step, event_id=None)
    err.__cause__ = exc
    return err


def guard_reading(step: str, batches: Iterator[list[Event]]) -> Iterator[list[Event]]:
    """Re-raise errors of a reading generator as the `FlowError` of the source step (spec §3.4)."""
    try:
        yield from batches
    except FlowError:
        raise
    except Exception as exc:
        raise read_error(step, exc) from exc


def dict_rows(names: Sequence[Any]) -> Callable[[Sequence[Sequence[Any]]], list[dict[Any, Any]]]:
    """A function turning columns (one sequence per name) into row dicts ``{name: value}``.

    The function is generated once per column list: a dict display per row is about twice as fast as
    ``dict(zip(names, row))``. Names are bound as variables, never pasted into the code.

    Examples
    --------
    >>> build = dict_rows(["a", "b c"])
    >>> build([[1, 2], ["x", "y"]])
    [{'a': 1, 'b c': 'x'}, {'a': 2, 'b c': 'y'}]
    """
    names = list(names)
    n = len(names)
    if n == 0:
        return lambda columns: []
    if n > _MAX_GENERATED:
        return lambda columns: [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    values = [f"v{i}" for i in range(n)]
    items = ", ".join(f"k{i}: v{i}" for i in range(n))
    src = f"def build(columns):\n    return [{{{items}}} for ({', '.join(values)},) in zip(*columns)]\n"
    namespace: dict[str, Any] = {f"k{i}": name for i, name in enumerate(names)}
    exec(src, namespace)  # the code holds indices only; names are bound as variables
    return namespace["build"]


def make_events(
    bodies: Sequence[Any],
    keys: Sequence[Any] | None,
    times_ns: Sequence[int] | None,
    path: Any,
    positions: Sequence[int],
    ids: Sequence[Any] | None = None,
) -> list[Event]:
    """Events for one batch of rows: ``origin=(path, position)``; no times means now."""
    n = len(bodies)
    events = list(
        map(
            _from_ns,
            bodies,
            repeat(None, n) if keys is None else keys,
            repeat(now_ns(), n) if times_ns is None else times_ns,
            zip(repeat(path, n), positions, strict=True),
        )
    )
    if ids is not None:
        for ev, i in zip(events, ids, strict=True):
            if i is not None:
                ev.id = i
    return events


def event_chunks(
    build: Callable[[Sequence[Sequence[Any]]], list[Any]],
    columns: Sequence[Sequence[Any]],
    keys: Sequence[Any] | None,
    times_ns: Sequence[int] | None,
    path: Any,
    positions: Sequence[int],
    ids: Sequence[Any] | None = None,
    size: int = EVENT_CHUNK,
) -> Iterator[EventBatch]:
    """`EventBatch`es of `size` rows (`make_events` semantics); bodies are built per slice by ``build``."""
    for a in range(0, len(positions), size):
        b = a + size
        yield EventBatch.of(
            build([c[a:b] for c in columns]),
            None if keys is None else keys[a:b],
            None if times_ns is None else times_ns[a:b],
            path,
            positions[a:b],
            None if ids is None else ids[a:b],
        )


def checked_times(
    column: Any, name: str, where: Callable[[int], str]
) -> tuple[np.ndarray, int | None, BaseException | None]:
    """Epoch ns of a time column (Arrow array, pandas Series or sequence), converted per AGGREGATIONS.md §1.

    Returns ``(ns, None, None)``, or on a bad value ``(ns of the rows before it, its index, error)`` where
    the error is `MissingFieldError` (null) or `TypeError`/`ValueError` and its message ends with
    ``where(index)`` (file and row).
    """
    try:
        return to_ns_array(column), None, None
    except (MissingFieldError, TypeError, ValueError):
        pass
    values = column.to_pylist() if hasattr(column, "to_pylist") else list(column)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        try:
            out[i] = to_ns(v)
        except MissingFieldError:
            msg = f"time field {name!r} is null {where(i)}"
            return out[:i], i, MissingFieldError(msg)
        except (TypeError, ValueError) as exc:
            msg = f"time field {name!r}: {exc} {where(i)}"
            return out[:i], i, type(exc)(msg)
    return out, None, None  # pragma: no cover - to_ns_array and to_ns agree
