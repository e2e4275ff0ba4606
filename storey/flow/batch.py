"""`EventBatch`: a chunk of source rows travelling the batch lane of the runtime (spec STEPS.md §3).

Reader sources (`ReadCSV`, `ReadParquet`, `DataframeSource`) hand the runtime one `EventBatch` per chunk of
rows instead of a list of `Event` objects. A batch holds the bodies, and per source row the key, time (int
ns), origin and id; the `Event` of a row is only built when a step needs it (`event`, `events`). Events
emitted through a controller travel the same lane: plain bodies as `EventBatch.of_bodies` (no key, their
emit times, no origin), emitted `Event` objects as `EventBatch.of_events`, where a row's event is a shallow
copy of its emitted event (sharing its lazily drawn id) with the new body and an untouched batch hands on
the emitted events themselves. Steps that
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
>>> batch.keys(), batch.times_ns()
(['k1', 'k2'], [0, 1000])
>>> emitted = EventBatch.of_events([Event("x", key="k", time=0)])
>>> doubled = emitted.derive(["y", "z"], [0, 0])
>>> [(e.body, e.key, e.time_ns) for e in doubled.events()], doubled.event(0).id == doubled.event(1).id
([('y', 'k', 0), ('z', 'k', 0)], True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from operator import attrgetter, length_hint
from typing import Any

import numpy as np

from storey._time import now_ns
from storey.event import Event, _LazyId

__all__ = ["EventBatch", "last_index"]

_from_ns = Event._from_ns
_copy_event = Event.__copy__
_body_of = attrgetter("body")
_key_of = attrgetter("key")
_time_ns_of = attrgetter("time_ns")


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
    """Metadata of the source rows of one chunk: keys, times, origins, ids (shared by derived batches).

    ``positions`` ``None`` means rows without an origin (bodies emitted through a controller); then
    ``times_ns`` is a sequence with one time per row.
    """

    __slots__ = ("ids", "keys", "path", "positions", "shared", "times_ns")

    def __init__(
        self,
        keys: Sequence[Any] | None,
        times_ns: Sequence[int] | int,
        path: Any,
        positions: Sequence[int] | None,
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
            None if self.positions is None else (self.path, self.positions[r]),
        )
        i = None if self.ids is None else self.ids[r]
        if i is None and self.shared is not None:
            i = self.shared[r]
            if i is None:
                i = self.shared[r] = _LazyId()
        if i is not None:
            ev._id = i
        return ev

    def __len__(self) -> int:
        return len(self.times_ns if self.positions is None else self.positions)  # type: ignore[arg-type]

    def share_ids(self) -> None:
        """Events of one row built more than once (FlatMap outputs) must share one id."""
        if self.shared is None:
            self.shared = [None] * len(self)

    def row_id(self, r: int, fresh: Iterator[str]) -> str:
        """The id of row `r` (given, or drawn by an event of the row already), else the next of `fresh`,
        which every event of the row then carries."""
        ids = self.ids
        if ids is not None and ids[r] is not None:
            return ids[r]  # type: ignore[no-any-return]
        if self.shared is not None and self.shared[r] is not None:
            return self.shared[r].get()  # type: ignore[no-any-return]
        if type(ids) is not list:  # none yet, or a reader's sequence: a list the row's events then read
            ids = self.ids = [None] * len(self) if ids is None else list(ids)
        i = ids[r] = next(fresh)
        return i

    def key(self, r: int) -> Any:
        """The key of row `r`."""
        return None if self.keys is None else self.keys[r]

    def time_ns(self, r: int) -> int:
        """The time of row `r` in epoch ns."""
        t = self.times_ns
        return t if type(t) is int else t[r]  # type: ignore[index]

    def keys_of(self, batch: EventBatch) -> list[Any]:
        rows = batch.rows
        keys = self.keys
        if keys is None:
            return [None] * len(batch.bodies)
        if rows is None:
            return list(keys[: len(batch.bodies)])
        return [keys[r] for r in rows[: len(batch.bodies)]]

    def times_ns_of(self, batch: EventBatch) -> list[int]:
        rows = batch.rows
        t = self.times_ns
        if type(t) is int:
            return [t] * len(batch.bodies)
        if rows is None:
            return list(t[: len(batch.bodies)])  # type: ignore[index]
        return [t[r] for r in rows[: len(batch.bodies)]]  # type: ignore[index]

    def events_of(self, batch: EventBatch) -> list[Event]:
        if batch.rows is not None or self.shared is not None or self.ids is not None:
            event = self.event
            rows = batch.rows
            if rows is None:
                return [event(b, r) for r, b in enumerate(batch.bodies)]
            return list(map(event, batch.bodies, rows))  # a derived batch may keep only a prefix of rows
        n = len(batch.bodies)
        t = self.times_ns
        return list(
            map(
                _from_ns,
                batch.bodies,
                repeat(None, n) if self.keys is None else self.keys,
                repeat(t, n) if type(t) is int else t,
                repeat(None, n)
                if self.positions is None
                else zip(repeat(self.path, n), self.positions, strict=True),
            )
        )

    def event_of(self, batch: EventBatch, j: int) -> Event:
        return self.event(batch.bodies[j], j if batch.rows is None else batch.rows[j])


class _Emitted:
    """Metadata of a chunk of emitted events: the `Event` objects themselves (each is its row).

    ``bodies`` is the list of their bodies the chunk started with: a batch holding that very list with no
    ``rows`` is untouched, and its events are the emitted ones.
    """

    __slots__ = ("bodies", "events")

    def __init__(self, events: list[Event], bodies: list[Any]) -> None:
        self.events = events
        self.bodies = bodies

    def event(self, body: Any, r: int) -> Event:
        """A shallow copy of emitted event `r` (sharing its id) with `body`."""
        ev = _copy_event(self.events[r])
        ev.body = body
        return ev

    def share_ids(self) -> None:
        """Nothing to do: copies of one event always share its (lazily drawn) id."""

    def row_id(self, r: int, fresh: Iterator[str]) -> str:
        """The id of emitted event `r`: its own, else the next of `fresh` (which it and its copies then
        carry)."""
        ev = self.events[r]
        i = ev._id
        if i is None:
            i = ev._id = next(fresh)
        elif type(i) is _LazyId:
            i = i.get()
        return i  # type: ignore[no-any-return]

    def key(self, r: int) -> Any:
        """The key of row `r`."""
        return self.events[r].key

    def time_ns(self, r: int) -> int:
        """The time of row `r` in epoch ns."""
        return self.events[r].time_ns

    def keys_of(self, batch: EventBatch) -> list[Any]:
        rows = batch.rows
        events = self.events
        if rows is None:
            return list(map(_key_of, events[: len(batch.bodies)]))
        return [events[r].key for r in rows[: len(batch.bodies)]]

    def times_ns_of(self, batch: EventBatch) -> list[int]:
        rows = batch.rows
        events = self.events
        if rows is None:
            return list(map(_time_ns_of, events[: len(batch.bodies)]))
        return [events[r].time_ns for r in rows[: len(batch.bodies)]]

    def events_of(self, batch: EventBatch) -> list[Event]:
        rows = batch.rows
        if rows is None:
            if batch.bodies is self.bodies:
                return self.events  # untouched: the emitted events themselves
            return list(map(self.event, batch.bodies, range(len(batch.bodies))))
        return list(map(self.event, batch.bodies, rows))

    def event_of(self, batch: EventBatch, j: int) -> Event:
        if batch.rows is None:
            if batch.bodies is self.bodies:
                return self.events[j]
            return self.event(batch.bodies[j], j)
        return self.event(batch.bodies[j], batch.rows[j])


class EventBatch:
    """Bodies of a chunk of source rows with their metadata; events are built on demand.

    ``rows[j]`` is the source row of body ``j`` (``None``: the identity). ``rekeyed[j]``, when given, is the
    key of body ``j`` instead of its row's (a step that sets the event key, such as `AggregateByKey`).
    """

    __slots__ = ("bodies", "meta", "rekeyed", "rows")

    def __init__(
        self,
        bodies: list[Any],
        meta: _Rows | _Emitted,
        rows: list[int] | None = None,
        rekeyed: list[Any] | None = None,
    ) -> None:
        self.bodies = bodies
        self.meta = meta
        self.rows = rows
        self.rekeyed = rekeyed

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

    @classmethod
    def of_bodies(cls, bodies: list[Any], times_ns: list[int]) -> EventBatch:
        """A batch of bodies emitted through a controller at `times_ns` (no key, id drawn lazily, no origin):
        their events are built only when a step needs them, as ``Event(body)`` would have built them."""
        return cls(bodies, _Rows(None, times_ns, None, None, None))

    @classmethod
    def of_events(cls, events: list[Event]) -> EventBatch:
        """A batch of emitted events (the list is kept, not copied: do not change it afterwards)."""
        bodies = list(map(_body_of, events))
        return cls(bodies, _Emitted(events, bodies))

    def __len__(self) -> int:
        return len(self.bodies)

    def row(self, j: int) -> int:
        """The source row of body `j`."""
        return j if self.rows is None else self.rows[j]

    def event(self, j: int) -> Event:
        """The `Event` of body `j` (a new object on each call, except on an untouched batch of emitted
        events; the events of one row share its id)."""
        ev = self.meta.event_of(self, j)
        if self.rekeyed is not None:
            ev.key = self.rekeyed[j]
        return ev

    def events(self) -> list[Event]:
        """All events of the batch, in order (do not change the list)."""
        events = self.meta.events_of(self)
        if self.rekeyed is not None:
            for ev, key in zip(events, self.rekeyed, strict=True):
                ev.key = key
        return events

    def row_refs(self, bodies: np.ndarray) -> tuple[Any, np.ndarray]:
        """Where the ids of `bodies` (indices into this batch) come from, without drawing any: this batch's
        rows metadata ``meta`` and the rows ``at`` of the bodies in it. ``meta.row_id(at[i], fresh)`` is body
        ``i``'s id, which the row's events carry too, whether an event or the id is asked for first."""
        meta = self.meta
        meta.share_ids()  # events built from now on draw their rows' ids through the metadata
        rows = self.rows
        return meta, bodies if rows is None else np.asarray(rows, np.int64)[bodies]

    def keys(self) -> list[Any]:
        """The key of every body, in order (``keys()[j]`` is ``event(j).key``)."""
        if self.rekeyed is not None:
            return list(self.rekeyed)
        return self.meta.keys_of(self)

    def times_ns(self) -> list[int]:
        """The time of every body in epoch ns, in order (``times_ns()[j]`` is ``event(j).time_ns``)."""
        return self.meta.times_ns_of(self)

    def derive(self, bodies: list[Any], rows: list[int] | None, keys: list[Any] | None = None) -> EventBatch:
        """A batch of new bodies over this batch's rows: body ``k`` comes from this batch's body ``rows[k]``
        (``None``: one new body per body, in order); `keys` gives the new bodies' keys (default: their
        rows' keys)."""
        rekeyed = self.rekeyed
        if keys is None and rekeyed is not None:  # bodies may be a prefix (the rows accepted before an error)
            keys = rekeyed[: len(bodies)] if rows is None else [rekeyed[j] for j in rows]
        if rows is None:
            return EventBatch(bodies, self.meta, self.rows, keys)
        own = self.rows
        return EventBatch(bodies, self.meta, rows if own is None else [own[j] for j in rows], keys)
