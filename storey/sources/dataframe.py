"""`DataframeSource`: a flow source reading pandas DataFrames (spec STEPS.md §5.5)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from storey.errors import MissingFieldError
from storey.flow.batch import EventBatch
from storey.flow.runtime import Run
from storey.sources._reading import checked_times, dict_rows, event_chunks, guard_reading
from storey.sources.base import ReaderSource
from storey.steps.batching import pop_synonym

__all__ = ["DataframeSource"]

_BATCH = 4096


class DataframeSource(ReaderSource):
    """Read pandas DataFrames into events, one event per row.

    Parameters
    ----------
    dfs
        One DataFrame or a list of them, read in order.
    key_column, time_column, id_column
        Columns (or named index levels) giving the event key, time and id; ``key_field``, ``time_field``
        and ``id_field`` are accepted as synonyms. A list of key columns gives a list key.

    Notes
    -----
    Each body is a dict keyed by the column labels exactly as they are (no renaming). Named index levels
    come first in the body; unnamed index levels (e.g. a default `RangeIndex`) are dropped. Values keep the
    scalar types pandas gives when iterating (`Timestamp`, ``NaN``, ...). A null (``NaT``) time fails with
    `MissingFieldError`. Each event's ``origin`` is ``(None, row position in its DataFrame)``.

    Examples
    --------
    >>> import pandas as pd
    >>> from storey import build_flow, Reduce
    >>> df = pd.DataFrame({"user id": ["a", "b"], "n": [1, 2]}).set_index("user id")
    >>> flow = build_flow([
    ...     DataframeSource(df, key_column="user id"),
    ...     Reduce([], lambda acc, e: acc + [(e.key, e.body)], full_event=True),
    ... ])
    >>> flow.run().await_termination()
    [('a', {'user id': 'a', 'n': 1}), ('b', {'user id': 'b', 'n': 2})]
    """

    def __init__(
        self,
        dfs: Any,
        key_column: Any = None,
        time_column: Any = None,
        id_column: Any = None,
        **kwargs: Any,
    ) -> None:
        key_column = pop_synonym(kwargs, "key_field", "key_column", key_column, None, "DataframeSource")
        time_column = pop_synonym(kwargs, "time_field", "time_column", time_column, None, "DataframeSource")
        id_column = pop_synonym(kwargs, "id_field", "id_column", id_column, None, "DataframeSource")
        super().__init__(**kwargs)
        from storey._utils._imports import require

        pd = require("pandas")
        self._dfs: list[Any] = [dfs] if isinstance(dfs, pd.DataFrame) else list(dfs)
        for df in self._dfs:
            if not isinstance(df, pd.DataFrame):
                msg = f"step {self.name!r}: expected pandas DataFrames, got {type(df).__name__}"
                raise TypeError(msg)
            _labels(df, self.name)  # collisions raise ValueError at construction
        self._key_column = key_column
        self._time_column = time_column
        self._id_column = id_column
        self.metrics: dict[str, int] = {"rows": 0}

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self.metrics = {"rows": 0}

    def _read_batches(self) -> Iterator[EventBatch]:
        return guard_reading(self.name, self._events())

    def _events(self) -> Iterator[EventBatch]:
        for number, df in enumerate(self._dfs):
            yield from self._frame_events(number, df)

    def _frame_events(self, number: int, df: Any) -> Iterator[EventBatch]:
        labels, getters = _labels(df, self.name)
        keys = self._key_column if isinstance(self._key_column, list) else [self._key_column]
        for field in (*keys, self._time_column, self._id_column):
            if field is not None and field not in labels:
                msg = f"step {self.name!r}: column {field!r} is missing in dataframe {number} ({labels})"
                raise MissingFieldError(msg)
        build = dict_rows(labels)
        for start in range(0, len(df), _BATCH):
            stop = min(start + _BATCH, len(df))
            columns = [get(start, stop) for get in getters]
            by_label = dict(zip(labels, columns, strict=True))
            positions = range(start, stop)
            error = None
            times = None
            if self._time_column is not None:
                ns, bad, error = checked_times(
                    by_label[self._time_column],
                    str(self._time_column),
                    lambda i, start=start, number=number: f"(dataframe {number}, row {start + i})",
                )
                times = ns.tolist()
                if bad is not None:
                    columns = [c[:bad] for c in columns]
                    by_label = dict(zip(labels, columns, strict=True))
                    positions = range(start, start + bad)
            if len(positions):
                ids = None if self._id_column is None else by_label[self._id_column]
                for events in event_chunks(build, columns, self._keys(by_label), times, None, positions, ids):
                    self.metrics["rows"] += len(events)
                    yield events
            if error is not None:
                raise error

    def _keys(self, by_label: dict[Any, list[Any]]) -> Sequence[Any] | None:
        kc = self._key_column
        if kc is None:
            return None
        if isinstance(kc, list):
            return list(map(list, zip(*(by_label[k] for k in kc), strict=True)))
        return by_label[kc]


def _labels(df: Any, step: str) -> tuple[list[Any], list[Any]]:
    """Body labels (named index levels, then columns) and, for each, ``get(start, stop) -> list``."""
    labels: list[Any] = []
    getters: list[Any] = []
    columns = list(df.columns)
    for level, name in enumerate(df.index.names):
        if name is None:
            continue
        if name in columns:
            msg = f"step {step!r}: index level {name!r} has the same name as a column"
            raise ValueError(msg)
        if name in labels:
            msg = f"step {step!r}: index level name {name!r} appears twice"
            raise ValueError(msg)
        labels.append(name)
        values = df.index.get_level_values(level)
        getters.append(lambda a, b, values=values: values[a:b].tolist())
    seen: set[Any] = set()
    for position, label in enumerate(columns):
        if label in seen:
            msg = f"step {step!r}: column label {label!r} appears twice"
            raise ValueError(msg)
        seen.add(label)
        labels.append(label)
        getters.append(lambda a, b, position=position: df.iloc[a:b, position].tolist())
    return labels, getters
