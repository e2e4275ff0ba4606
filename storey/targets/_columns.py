"""The column notation shared by every writer (spec STEPS.md §8.1).

An entry of ``columns`` / ``index_cols`` is one of:

==================  ============================================================
entry               column taken from
==================  ============================================================
``'name'``          body field ``name``, written as column ``name``
``'out=src'``       body field ``src``, written as column ``out``
``'$attr'``         Event attribute ``attr`` (``key``, ``time``, ``id``, ...)
``'out=$attr'``     Event attribute ``attr``, written as column ``out``
==================  ============================================================

`parse_column` parses one entry; `ColumnSelector` resolves the column list of a writer (including the
inference from the first dict body) and turns events into rows. Writers (`WriteToCSV`, `WriteToParquet`,
`WriteToTable`, `WriteToV3IOStream`, `WriteToTSDB`) all go through `ColumnSelector`, so the rules live here
only.

Examples
--------
>>> from storey.event import Event
>>> sel = ColumnSelector(["k=$key", "amount"], infer_columns_from_data=True)
>>> ev = Event({"amount": 3, "note": "x"}, key="u1")
>>> sel.row(ev)
['u1', 3, 'x']
>>> sel.names
['k', 'amount', 'note']
>>> sel.as_dict(ev)
{'k': 'u1', 'amount': 3, 'note': 'x'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from storey.errors import MissingFieldError
from storey.event import Event

__all__ = ["Column", "ColumnSelector", "missing_field_error", "parse_column", "parse_columns"]

#: Event attributes that a ``$`` column may name.
EVENT_ATTRIBUTES = frozenset(
    {"key", "time", "id", "body", "headers", "method", "path", "content_type", "processing_time", "time_ns"}
)


class Column(NamedTuple):
    """One parsed column entry.

    Attributes
    ----------
    name
        The column name written to the output.
    field
        The body field it is read from, or the Event attribute when `meta` is true.
    meta
        True for ``$attr`` entries (read from the Event, not from the body).
    """

    name: str
    field: str
    meta: bool

    @property
    def entry(self) -> str:
        """The entry in column notation (inverse of `parse_column`)."""
        src = f"${self.field}" if self.meta else self.field
        return src if self.name == self.field else f"{self.name}={src}"


def parse_column(entry: str) -> Column:
    """Parse one entry of the column notation.

    Raises
    ------
    TypeError
        `entry` is not a string.
    ValueError
        An empty name or field, or an unknown Event attribute after ``$``.

    Examples
    --------
    >>> parse_column("amount")
    Column(name='amount', field='amount', meta=False)
    >>> parse_column("t=$time")
    Column(name='t', field='time', meta=True)
    >>> parse_column("$key")
    Column(name='key', field='key', meta=True)
    """
    if not isinstance(entry, str):
        msg = f"a column entry must be a string, got {type(entry).__name__}: {entry!r}"
        raise TypeError(msg)
    name, sep, src = entry.partition("=")
    if not sep:
        src = name
        if src.startswith("$"):
            name = src[1:]
    meta = src.startswith("$")
    field = src[1:] if meta else src
    if not name or not field:
        msg = f"invalid column entry {entry!r}: expected 'name', 'out=src', '$attr' or 'out=$attr'"
        raise ValueError(msg)
    if meta and field not in EVENT_ATTRIBUTES:
        known = ", ".join(sorted(EVENT_ATTRIBUTES))
        msg = f"invalid column entry {entry!r}: {field!r} is not an Event attribute (one of {known})"
        raise ValueError(msg)
    return Column(name, field, meta)


def parse_columns(entries: Iterable[str] | str | None) -> list[Column]:
    """Parse a list of entries (a single string is one entry; ``None`` is no entry)."""
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    return [parse_column(e) for e in entries]


def missing_field_error(step: str, field: Any, event: Event) -> MissingFieldError:
    """The `MissingFieldError` for a body field that a step needs (names step, field, event and origin)."""
    msg = f"step {step!r}: field {field!r} is missing in event {event.id!r}"
    origin = event.origin
    if origin is not None and origin[0] is not None:
        msg += f" (file {origin[0]!r}, line/row {origin[1]})"
    elif origin is not None:
        msg += f" (row {origin[1]})"
    return MissingFieldError(msg)


class ColumnSelector:
    """Resolve a writer's columns (§8.1) and turn events into rows.

    Parameters
    ----------
    columns
        Column entries. ``None`` means "infer from the data" unless `infer_columns_from_data` is ``False``.
    index_cols
        Entries written first (as the index by writers that have one).
    infer_columns_from_data
        Add the keys of the first dict body that are not listed yet, in body key order. Defaults to ``True``
        when no `columns` are given.
    step
        The writer's name, used in error messages.
    time_as_ns
        Give ``$time`` columns as int epoch nanoseconds (``event.time_ns``) instead of datetimes.

    Notes
    -----
    The written column order is `index_cols` followed by `columns` (then the inferred keys). A list body
    fills the non-``$`` columns positionally in that order. Rows are lists in column order. While no column
    is known (inference off and no `columns`, or no dict body seen yet), a dict body is written as its
    values, a list as is and any other body as a single value.
    """

    def __init__(
        self,
        columns: Sequence[str] | str | None = None,
        *,
        index_cols: Sequence[str] | str | None = None,
        infer_columns_from_data: bool | None = None,
        step: str = "writer",
        time_as_ns: bool = False,
    ) -> None:
        self.step = step
        self.index = parse_columns(index_cols)
        explicit = parse_columns(columns)
        self._explicit = self.index + explicit
        self.infer = (not explicit) if infer_columns_from_data is None else bool(infer_columns_from_data)
        self._time_attr = "time_ns" if time_as_ns else "time"
        names = [c.name for c in self._explicit]
        dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if dup is not None:
            msg = f"step {step!r}: column {dup!r} is listed twice"
            raise ValueError(msg)
        self._columns: list[Column] | None = None
        self._names: list[str] = []
        self._plan: list[tuple[bool, str]] = []
        self._n_body = 0
        self._has_meta = False
        if not self.infer and self._explicit:
            self._set(list(self._explicit))

    # ------------------------------------------------------------------------------------ resolution
    def reset(self) -> None:
        """Forget inferred columns (a new run infers again)."""
        if self.infer:
            self._columns = None
            self._names = []
            self._plan = []

    @property
    def resolved(self) -> bool:
        """Whether the column list is known (given, or inferred from a dict body)."""
        return self._columns is not None

    @property
    def columns(self) -> list[Column] | None:
        """The written columns in order (index columns first), or ``None`` until resolved."""
        return self._columns

    @property
    def names(self) -> list[str] | None:
        """The written column names in order, or ``None`` until resolved."""
        return None if self._columns is None else list(self._names)

    @property
    def n_index(self) -> int:
        """How many leading columns are index columns."""
        return len(self.index)

    def observe(self, body: Any) -> None:
        """Resolve the columns from `body` if they are still unknown, inference is on and `body` is a dict."""
        if self._columns is None and self.infer and isinstance(body, Mapping):
            self._set(self.infer_from(body))

    def infer_from(self, body: Mapping[str, Any]) -> list[Column]:
        """The column list inferred from one dict body: explicit columns, then the unlisted body keys."""
        cols = list(self._explicit)
        listed = {c.name for c in cols} | {c.field for c in cols if not c.meta}
        for k in body:
            if k not in listed:
                cols.append(Column(k, k, False))
                listed.add(k)
        return cols

    def _set(self, cols: list[Column]) -> None:
        self._columns = cols
        self._names = [c.name for c in cols]
        attr = self._time_attr
        self._plan = [(c.meta, (attr if c.field == "time" else c.field) if c.meta else c.field) for c in cols]
        self._has_meta = any(c.meta for c in cols)
        self._n_body = sum(1 for c in cols if not c.meta)

    # ------------------------------------------------------------------------------------------ rows
    def row(self, event: Event) -> list[Any]:
        """The values of `event` in column order.

        Raises
        ------
        MissingFieldError
            A dict body lacks a column's field.
        ValueError
            A list body's length does not match the non-``$`` columns.
        TypeError
            A body that is neither a dict nor a list while columns are set.
        """
        body = event.body
        if self._columns is None:
            self.observe(body)
            if self._columns is None:
                return self._unresolved_row(body)
        if isinstance(body, dict):
            plan = self._plan
            if not self._has_meta:
                try:
                    return [body[f] for _, f in plan]
                except KeyError:
                    pass  # find the missing field below
            out = []
            for meta, f in plan:
                if meta:
                    out.append(getattr(event, f))
                else:
                    try:
                        out.append(body[f])
                    except KeyError:
                        raise missing_field_error(self.step, f, event) from None
            return out
        if isinstance(body, list | tuple):
            return self._list_row(event, body)
        if isinstance(body, Mapping):
            return self.row(_with_body(event, dict(body)))
        msg = (
            f"step {self.step!r}: columns {self.names} need a dict or list body, "
            f"got {type(body).__name__} in event {event.id!r}"
        )
        raise TypeError(msg)

    def _list_row(self, event: Event, body: Sequence[Any]) -> list[Any]:
        if len(body) != self._n_body:
            msg = (
                f"step {self.step!r}: list body of length {len(body)} does not match the "
                f"{self._n_body} body columns {[c.name for c in self._columns or [] if not c.meta]} "
                f"in event {event.id!r}"
            )
            raise ValueError(msg)
        if not self._has_meta:
            return list(body)
        items = iter(body)
        return [getattr(event, f) if meta else next(items) for meta, f in self._plan]

    @staticmethod
    def _unresolved_row(body: Any) -> list[Any]:
        if isinstance(body, Mapping):
            return list(body.values())
        if isinstance(body, list | tuple):
            return list(body)
        return [body]

    def rows(self, events: Iterable[Event]) -> list[list[Any]]:
        """`row` for each event."""
        return [self.row(e) for e in events]

    def as_dict(self, event: Event) -> dict[str, Any]:
        """The row of `event` as ``{column name: value}`` (for key-value writers).

        Raises
        ------
        TypeError
            No column is known and the body is not a dict.
        """
        body = event.body
        if self._columns is None:
            self.observe(body)
        if self._columns is None:
            if isinstance(body, Mapping):
                return dict(body)
            msg = (
                f"step {self.step!r}: no columns are set and the body is not a dict "
                f"({type(body).__name__}) in event {event.id!r}"
            )
            raise TypeError(msg)
        return dict(zip(self._names, self.row(event), strict=True))


def _with_body(event: Event, body: Any) -> Event:
    from copy import copy

    out = copy(event)
    out.body = body
    return out
