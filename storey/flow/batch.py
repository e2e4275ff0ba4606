"""`EventBatch`: a chunk of source rows travelling the batch lane of the runtime (spec STEPS.md §3).

Reader sources (`ReadCSV`, `ReadParquet`, `DataframeSource`) hand the runtime one `EventBatch` per chunk of
rows instead of a list of `Event` objects. A batch holds the bodies, and per source row the key, time (int
ns), origin and id; the `Event` of a row is only built when a step needs it (`event`, `events`). Steps that
can work on bodies alone (`Map`, `Filter`, `FlatMap`, `Reduce` with sync functions and ``full_event=False``)
override `Flow._do_batch`; every other step receives the materialised events one by one, exactly as on the
per-event path.

A step's output batch keeps the rows' metadata (`_Rows`) and says, for each new body, which source row it
came from (``rows``; ``None`` means body ``j`` is row ``j``): `Map` replaces bodies, `Filter` drops rows and
`FlatMap` repeats them. Events built from the same source row share one lazily drawn id, as copies of one
event do on the per-event path.

Examples
--------
>>> batch = EventBatch.of(["a", "b"], keys=["k1", "k2"], times_ns=[0, 1_000], path="f.csv", positions=[2, 3])
>>> [(e.body, e.key, e.time_ns, e.origin) for e in batch.events()]
[('a', 'k1', 0, ('f.csv', 2)), ('b', 'k2', 1000, ('f.csv', 3))]
>>> odd = batch.derive(["B"], [1])
>>> odd.event(0).body, odd.event(0).origin
('B', ('f.csv', 3))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import length_hint
from typing import Any

from storey._time import now_ns
from storey.event import Event, _LazyId

__all__ = ["EventBatch", "last_index"]

_from_ns = Event._from_ns


def last_index(it: Iterator[Any], items: list[Any]) -> int:
    """The index of the item a list iterator over `items` gave last (so loops need no counter).

    Examples
    --------
    >>> items = ["a", "b", "c"]
    >>> it = iter(items)
    >>> next(it), next(it), last_index(it, items)
    ('a', 'b', 1)
    """
    return len(items) - 1 - length_hint(it)


class _Rows:
    """Metadata of the source rows of one chunk: keys, times, origins, ids (shared by derived batches)."""

    __slots__ = ("ids", "keys", "path", "positions", "shared", "times_ns")

    def __init__(
        self,
        keys: Sequence[Any] | None,
        times_ns: Sequence[int] | int,
        path: Any,
        positions: Sequence[int],
        ids: Sequence[Any] | None,
    ) -> None:
        self.keys = keys
        self.times_ns = times_ns  # an int: the same time (now) for every row
        self.path = path
        self.positions = positions
        self.ids = ids
        self.shared: list[Any] | None = None  # per-row _LazyId once rows may repeat (FlatMap)

    def event(self, body: Any, r: int) -> Event:
        t = self.times_ns
        ev = _from_ns(
            body,
            None if self.keys is None else self.keys[r],
            t if type(t) is int else t[r],  # type: ignore[index]
            (self.path, self.positions[r]),
        )
        i = None if self.ids is None else self.ids[r]
        if i is None and self.shared is not None:
            i = self.shared[r]
            if i is None:
                i = self.shared[r] = _LazyId()
        if i is not None:
            ev._id = i
        return ev

    def share_ids(self) -> None:
        """Events of one row built more than once (FlatMap outputs) must share one id."""
        if self.shared is None:
            self.shared = [None] * len(self.positions)


class EventBatch:
    """Bodies of a chunk of source rows with their metadata; events are built on demand.

    ``rows[j]`` is the source row of body ``j`` (``None``: the identity).
    """

    __slots__ = ("bodies", "meta", "rows")

    def __init__(self, bodies: list[Any], meta: _Rows, rows: list[int] | None = None) -> None:
        self.bodies = bodies
        self.meta = meta
        self.rows = rows

    @classmethod
    def of(
        cls,
        bodies: list[Any],
        keys: Sequence[Any] | None = None,
        times_ns: Sequence[int] | None = None,
        path: Any = None,
        positions: Sequence[int] | None = None,
        ids: Sequence[Any] | None = None,
    ) -> EventBatch:
        """A batch of source rows: ``origin=(path, position)``; no times means now (one value per batch)."""
        if positions is None:
            positions = range(len(bodies))
        return cls(bodies, _Rows(keys, now_ns() if times_ns is None else times_ns, path, positions, ids))

    def __len__(self) -> int:
        return len(self.bodies)

    def row(self, j: int) -> int:
        """The source row of body `j`."""
        return j if self.rows is None else self.rows[j]

    def event(self, j: int) -> Event:
        """The `Event` of body `j` (a new object on each call; rows keep their ids)."""
        return self.meta.event(self.bodies[j], j if self.rows is None else self.rows[j])

    def events(self) -> list[Event]:
        """All events of the batch, in order."""
        m = self.meta
        if self.rows is not None or m.shared is not None or m.ids is not None:
            return [self.event(j) for j in range(len(self.bodies))]
        n = len(self.bodies)
        t = m.times_ns
        return list(
            map(
                _from_ns,
                self.bodies,
                repeat(None, n) if m.keys is None else m.keys,
                repeat(t, n) if type(t) is int else t,
                zip(repeat(m.path, n), m.positions, strict=True),
            )
        )

    def derive(self, bodies: list[Any], rows: list[int] | None) -> EventBatch:
        """A batch of new bodies over this batch's rows: body ``k`` comes from this batch's body ``rows[k]``
        (``None``: one new body per body, in order)."""
        if rows is None:
            return EventBatch(bodies, self.meta, self.rows)
        own = self.rows
        return EventBatch(bodies, self.meta, rows if own is None else [own[j] for j in rows])
