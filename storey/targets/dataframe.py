"""`ToDataFrame` and `ReduceToDataFrame` (spec STEPS.md §8.2). pandas is imported when a step is built."""

from __future__ import annotations

import copy as _copy
from collections.abc import Awaitable, Sequence
from typing import Any

from storey._utils._imports import require
from storey.event import Event
from storey.flow.runtime import Run
from storey.flow.step import Flow

__all__ = ["ReduceToDataFrame", "ToDataFrame"]


class ToDataFrame(Flow):
    """Replace each body (e.g. a `Batch` list of dicts) with ``pandas.DataFrame(body, columns=columns)``.

    Parameters
    ----------
    index
        Column(s) to set as the index.
    columns
        Columns of the DataFrame (passed to the `DataFrame` constructor).

    Examples
    --------
    >>> from storey import build_flow, Source, Batch, Reduce
    >>> c = build_flow([Source(), Batch(2), ToDataFrame(index="k"), Reduce([], lambda a, df: a + [df])]).run()
    >>> for i in range(2):
    ...     _ = c.emit({"k": f"u{i}", "v": i})
    >>> print(c.terminate(wait=True)[0])
        v
    k
    u0  0
    u1  1
    """

    def __init__(
        self, index: str | Sequence[str] | None = None, columns: Sequence[Any] | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self._pd = require("pandas")
        self._index = index
        self._columns = columns

    def _do(self, event: Event) -> Awaitable[Any] | None:
        df = self._pd.DataFrame(event.body, columns=self._columns)
        if self._index is not None:
            df = df.set_index(self._index)
        out = _copy.copy(event)
        out.body = df
        return self._forward(out)


class ReduceToDataFrame(Flow):
    """Collect dict or list bodies into one DataFrame, returned as the termination result. Terminal.

    Parameters
    ----------
    index
        Column(s) to set as the index, after the key/time/id columns were added.
    columns
        Columns of the DataFrame (passed to the `DataFrame` constructor).
    insert_key_column_as, insert_time_column_as, insert_id_column_as
        Append the event key, time or id as a column with this name, after the data columns.

    Examples
    --------
    >>> from storey import build_flow, Source
    >>> c = build_flow([Source(), ReduceToDataFrame(insert_key_column_as="key")]).run()
    >>> _ = c.emit({"v": 1}, key="a")
    >>> _ = c.emit({"v": 2}, key="b")
    >>> print(c.terminate(wait=True))
       v key
    0  1   a
    1  2   b
    """

    _is_terminal = True

    def __init__(
        self,
        index: str | Sequence[str] | None = None,
        columns: Sequence[Any] | None = None,
        insert_key_column_as: str | None = None,
        insert_time_column_as: str | None = None,
        insert_id_column_as: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._pd = require("pandas")
        self._index = index
        self._columns = None if columns is None else list(columns)
        self._inserts = [
            (name, attr)
            for name, attr in (
                (insert_key_column_as, "key"),
                (insert_time_column_as, "time"),
                (insert_id_column_as, "id"),
            )
            if name is not None
        ]
        self._rows: list[Any] = []
        self._meta: list[list[Any]] = []

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self._rows = []
        self._meta = [[] for _ in self._inserts]

    def _do(self, event: Event) -> Awaitable[Any] | None:
        body = event.body
        if not isinstance(body, dict | list | tuple):
            got = type(body).__name__
            msg = f"step {self.name!r}: expected a dict or list body, got {got} in event {event.id!r}"
            raise ValueError(msg)
        self._rows.append(body)
        for values, (_, attr) in zip(self._meta, self._inserts, strict=True):
            values.append(getattr(event, attr))
        return None

    def _termination_result(self) -> Any:
        pd = self._pd
        if self._rows:
            df = pd.DataFrame(self._rows, columns=self._columns)
        else:
            df = pd.DataFrame(columns=self._columns)
        for values, (name, _) in zip(self._meta, self._inserts, strict=True):
            df[name] = pd.Series(values, index=df.index, dtype=None if values else object)
        if self._index is not None:
            df = df.set_index(self._index)
        return df
