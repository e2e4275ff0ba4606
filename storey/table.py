"""`Table`: a per-key cache in front of a `storey.drivers.Driver` (spec STEPS.md §9.1).

A Table holds, for each key, the key's **static attributes** (a dict) and the live **aggregation state** of
every aggregation step bound to it (AGGREGATIONS.md §7). Both live in one stored record per key; aggregation
state is the attribute ``_storey_a_<name>`` (opaque bytes), next to ``_storey_last_event_id`` and
``_storey_last_event_time_ns``. Attribute names starting with ``_storey_`` are reserved.

Keys
----
Keys are encoded for storage by `encode_key`: ``str`` as is, ``int`` in decimal, tuples and lists as their
encoded elements joined with ``'.'``; anything else fails with `TypeError` when it has to be stored (or
loaded). A list key is cached as the equal tuple. The ``None`` key lives in memory only: it is never loaded,
never dirty, and `persist_key` refuses it with `ValueError`. Two keys with the same encoding (``1`` and
``'1'``) share one stored record.

Writes and ordering
-------------------
Every write of a key's record is **one** driver call holding the key's dirty static attributes, its dirty
aggregation state and its last applied event, so the three are stored atomically together. The record is
taken from the cache when the write is *submitted* (a write waits for the previous write of the same key
to finish first), so writes of one key are applied in order and consecutive pending writes coalesce: a
write that finds nothing dirty any more returns once the earlier write that took its data has finished.
The state written is the live state at submission, so it may already include events applied after
the one whose write triggered it; the last event id/time written with it is always the latest event
applied to that state, so every stored record is a consistent prefix of the key's events (AGGREGATIONS.md
§7.3). A failed write puts its attributes back into the dirty set, so a later `flush` retries them.
`flush` writes all dirty keys in batches (`Driver.save_keys`). Attributes are never deleted from storage.

Closing
-------
``await close()`` flushes, waits for every write, then closes the driver (idempotent; the driver reopens
lazily if the Table is used again). ``await close(discard=True)`` is the runtime's path after a flow failure
(STEPS.md §3.4): writes already submitted to the driver are awaited, writes not yet submitted fail with
`StoreyError`, dirty state is **discarded** and the whole cache is dropped (so a later run in the same
process reloads the persisted prefix instead of counting the failed events twice), then the driver is
closed. Errors on that path are logged, not raised.

With ``flush_interval_secs`` set, dirty keys are also flushed every so many seconds: the periodic flush
starts when a key first becomes dirty inside a running event loop (or when the runtime calls
`start_background_flush`, which can also pass an ``on_error`` callback to fail the flow) and stops at
`close`. The runtime closes Tables through ``_close_after_run(discard=...)``.

Aggregation hooks
-----------------
An aggregation step keeps one live state object per ``(key, aggregator name)`` in the Table. A state object
is opaque to the Table except for ``encode() -> bytes`` (called when a write is submitted). The intended
per-event use::

    state = table.get_state(key, name)                 # sync, O(1)
    if state is None:
        record = await table.load_record(key)          # loaded from the driver once per key, then cached
        state = decode(record.get(state_attribute(name)))  # the step's codec; None -> new state
        table.set_state(key, name, state)
    ... update state ...
    table.mark_state_dirty(key, name, event.id, event.time_ns)

`load_record` (``refresh=True`` rereads the driver, as `QueryByKey` does for keys without live state),
`cached_record`, `get_state`, `set_state`, `mark_state_dirty`, `states`, `dirty_keys`, `is_dirty`,
`last_applied`, `load_schema` and `save_schema` are documented on the class.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from storey.drivers.base import Driver
from storey.errors import StoreyError
from storey.event import Event, fresh_ids

__all__ = [
    "LAST_EVENT_ID",
    "LAST_EVENT_TIME_NS",
    "STATE_PREFIX",
    "EncodableState",
    "MarkBoard",
    "Table",
    "encode_key",
    "state_attribute",
]

logger = logging.getLogger("storey.table")

RESERVED_PREFIX = "_storey_"
"""Attribute names starting with this are reserved for storey."""
STATE_PREFIX = "_storey_a_"
"""The attribute ``_storey_a_<name>`` holds the state of aggregator ``<name>`` (AGGREGATIONS.md §7.2)."""
LAST_EVENT_ID = "_storey_last_event_id"
"""The id of the last event applied to the record (AGGREGATIONS.md §7.3)."""
LAST_EVENT_TIME_NS = "_storey_last_event_time_ns"
"""The time, in epoch ns, of the last event applied to the record."""

_FLUSH_BATCH = 512  # records per Driver.save_keys call
_FLUSH_PARALLEL = 4  # save_keys calls in flight during a flush
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_DRIVER_METHODS = ("load_schema", "save_schema", "load_key", "save_key", "save_keys", "close")


class EncodableState(Protocol):
    """What the Table needs from a live aggregation state object."""

    def encode(self) -> bytes:
        """The state as bytes (the ``_storey_a_<name>`` attribute)."""
        ...


def state_attribute(name: str) -> str:
    """The record attribute that holds aggregator ``name``'s state.

    Examples
    --------
    >>> state_attribute("purchases")
    '_storey_a_purchases'
    """
    return STATE_PREFIX + name


def encode_key(key: Any) -> str:
    """Encode a key for storage (STEPS.md §9.1).

    Raises
    ------
    TypeError
        The key (or an element of it) is not a ``str``, ``int``, tuple or list; ``bool`` and ``None`` are
        refused too.

    Examples
    --------
    >>> encode_key("u1"), encode_key(42), encode_key(("a", 7, ["b", 8]))
    ('u1', '42', 'a.7.b.8')
    """
    kind = type(key)
    if kind is str:
        return key
    if kind is int:
        return str(key)
    if isinstance(key, bool | np.bool_):
        pass
    elif isinstance(key, str):
        return str.__str__(key)
    elif isinstance(key, int | np.integer):
        return str(int(key))
    elif isinstance(key, tuple | list):
        return ".".join(encode_key(element) for element in key)
    msg = f"cannot encode key {key!r} of type {kind.__name__} (expected str, int or a tuple of them)"
    raise TypeError(msg)


def _cache_key(key: Any) -> Hashable:
    """Lists become tuples (recursively), so that list keys can be cached."""
    if type(key) is list:
        return tuple(_cache_key(element) for element in key)
    return key


def _resolved(entry: _Entry) -> tuple[Any, int | None]:
    """``(id, time_ns)`` of an entry's last-event mark: a row of its `MarkBoard`, else its ``last_ref``: the
    `Event` (whose id is drawn only when needed) or the id itself."""
    board = entry.board
    if board is not None:
        row = entry.board_row
        return board.id_of(row), int(board.times[row])
    ref = entry.last_ref
    return (ref.id if isinstance(ref, Event) else ref), entry.last_time


class _FreshIds:
    """An endless iterator of fresh ids, drawn 256 at a time (`MarkBoard.id_of` draws one per key written)."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def __iter__(self) -> _FreshIds:
        return self

    def __next__(self) -> str:
        while True:
            ids = self._ids
            if not ids:
                ids = self._ids = fresh_ids(256)
            try:
                return ids.pop()
            except IndexError:  # another thread took the last one meanwhile
                continue


_FRESH = _FreshIds()


class MarkBoard:
    """The last-event marks (AGGREGATIONS.md §7.3) of many keys, kept column-wise by the step that writes them
    (the batch lane of `AggregateByKey`) rather than per key: the id and ``times[row]`` (int64) of the last
    event of the key the writer gave that row.

    The id is ``ids[row]`` unless ``sources[row]`` is set: then it is ``sources[row].row_id(at[row], fresh)``,
    the id of row ``at[row]`` of a batch's rows (`storey.flow.batch`), drawn only when the table first needs
    it (`id_of`), and carried by that row's events too whichever asks first. The writer thus names its keys'
    last rows with two numpy scatters and no id per row; only the ids of the rows still last when their key
    is written are drawn.

    `Table.mark_board` attaches a key to its row and marks its states ``names`` and its last event dirty;
    ``fresh[row]`` then stays true while they stay dirty, and the writer only updates the columns for it.
    The table clears ``fresh[row]`` when it takes the key's dirty marks (a write) or when another mark
    replaces the board's (`mark_keys_dirty`): the writer then calls `Table.mark_board` again.
    """

    __slots__ = ("at", "fresh", "ids", "names", "rows", "sources", "times")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.rows = 0  # rows in use (the arrays may hold more)
        self.ids = np.full(256, None, object)
        self.sources = np.full(256, None, object)
        self.at = np.zeros(256, np.int64)
        self.times = np.zeros(256, np.int64)
        self.fresh = np.zeros(256, bool)

    def add_row(self) -> int:
        """A new row (for a new key)."""
        row = self.rows
        self.rows += 1
        if row == len(self.times):
            self.ids = np.concatenate([self.ids, np.full(row, None, object)])
            self.sources = np.concatenate([self.sources, np.full(row, None, object)])
            self.at = np.concatenate([self.at, np.zeros(row, np.int64)])
            self.times = np.concatenate([self.times, np.zeros(row, np.int64)])
            self.fresh = np.concatenate([self.fresh, np.zeros(row, bool)])
        return row

    def id_of(self, row: int) -> Any:
        """The id of `row`'s last event (drawn now if its source has none yet)."""
        source = self.sources[row]
        if source is not None:
            self.ids[row] = source.row_id(int(self.at[row]), _FRESH)
            self.sources[row] = None  # the id is kept; the source's rows need not stay alive for it
        return self.ids[row]


def _leave_board(entry: _Entry) -> None:
    """A mark of its own replaces the board's: the key's board row must be marked again."""
    _detach(entry)
    entry.board = None
    entry.marked = None


def _detach(entry: _Entry) -> None:
    """The entry's dirty marks were taken or replaced: its board row must be marked again."""
    board = entry.board
    if board is not None:
        board.fresh[entry.board_row] = False


class _Entry:
    """The cached state of one key."""

    __slots__ = (
        "attrs",
        "board",
        "board_row",
        "dirty_attrs",
        "dirty_states",
        "enc",
        "has_last",
        "last_event_dirty",
        "last_ref",
        "last_time",
        "loading",
        "marked",
        "record",
        "replaced",
        "states",
        "tail",
    )

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}  # static attributes as this process sees them
        self.dirty_attrs: dict[str, None] = {}  # ordered sets: records are written in a stable order
        self.record: dict[str, Any] | None = (
            None  # the stored record as last loaded/written; None: never loaded
        )
        self.replaced = False  # table[key] = ... before the first load: stored static attributes are hidden
        self.loading: asyncio.Task[None] | None = None
        self.states: dict[str, Any] = {}
        self.dirty_states: dict[str, None] = {}
        self.has_last = False  # the last event applied (see `_resolved`), without a tuple per mark
        self.last_ref: Any = None
        self.last_time: int | None = None
        self.last_event_dirty = False
        self.board: MarkBoard | None = None  # the last event is a row of this board (see `_resolved`)
        self.board_row = 0
        self.tail: asyncio.Task[None] | None = None  # the latest write of this key
        self.enc: str | None = None  # the encoded key, computed once
        # the names of the last `mark_states_dirty`, while they, the last event and the key are all still
        # marked dirty (so the next call for the same names only records the event); None otherwise
        self.marked: Sequence[str] | None = None

    def is_dirty(self) -> bool:
        return bool(self.dirty_attrs or self.dirty_states or self.last_event_dirty)


class Table:
    """A per-key cache of static attributes and aggregation state, in front of a driver.

    Parameters
    ----------
    table_path
        The table's name in the store (``/container/path`` for V3IO).
    storage
        The `storey.drivers.Driver`. Several Tables may share one driver object.
    partitioned_by_key
        Accepted for compatibility; no effect.
    flush_interval_secs
        If set, dirty keys are also flushed every so many wall-clock seconds while a flow runs (see
        `start_background_flush`).

    Examples
    --------
    >>> import asyncio
    >>> from storey.drivers import NoopDriver
    >>> driver = NoopDriver()
    >>> async def demo():
    ...     table = Table("users", driver)
    ...     table.update_key("u1", {"name": "ann"})
    ...     await table.persist_key("u1", {"age": 33})
    ...     await table.close()
    ...     fresh = Table("users", driver)
    ...     return await fresh.get_or_load_key("u1"), await fresh.get_or_load_key("nobody")
    >>> asyncio.run(demo())
    ({'name': 'ann', 'age': 33}, {})
    """

    def __init__(
        self,
        table_path: str,
        storage: Driver,
        partitioned_by_key: bool = True,
        flush_interval_secs: float | None = None,
    ) -> None:
        if not isinstance(table_path, str) or not table_path:
            msg = f"Table: table_path must be a non-empty str, got {table_path!r}"
            raise TypeError(msg)
        if not isinstance(storage, Driver) and not all(hasattr(storage, name) for name in _DRIVER_METHODS):
            msg = (
                f"Table {table_path!r}: storage must be a storey.drivers.Driver, got {type(storage).__name__}"
            )
            raise TypeError(msg)
        if flush_interval_secs is not None and (
            isinstance(flush_interval_secs, bool)
            or not isinstance(flush_interval_secs, int | float)
            or not flush_interval_secs > 0
        ):
            msg = (
                f"Table {table_path!r}: flush_interval_secs must be > 0 or None, got {flush_interval_secs!r}"
            )
            raise ValueError(msg)
        self.table_path = table_path
        self.storage = storage
        self.partitioned_by_key = partitioned_by_key
        self.flush_interval_secs = flush_interval_secs
        self._entries: dict[Hashable, _Entry] = {}
        self._dirty: dict[Hashable, None] = {}  # an ordered set of the dirty keys
        self._inflight: set[asyncio.Task[None]] = set()
        self._discarding = False
        self._background: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        sizes = f"cached={len(self._entries)}, dirty={len(self._dirty)}"
        return f"Table({self.table_path!r}, {self.storage!r}, {sizes})"

    # -- static attributes ----------------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> dict[str, Any]:
        """A copy of the cached static attributes of ``key``; `KeyError` if the key is not cached."""
        entry = self._entries.get(_cache_key(key))
        if entry is None:
            raise KeyError(key)
        return dict(entry.attrs)

    def __setitem__(self, key: Any, attrs: Mapping[str, Any]) -> None:
        """Replace the cached static attributes of ``key`` and mark them dirty."""
        self._check_attrs(attrs)
        ck = _cache_key(key)
        entry = self._entry(ck)
        entry.attrs = dict(attrs)
        entry.dirty_attrs = dict.fromkeys(attrs)
        if entry.record is None:
            entry.replaced = True
        self._mark_dirty(ck, entry)

    def __contains__(self, key: Any) -> bool:
        return _cache_key(key) in self._entries

    def update_key(self, key: Any, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the cached static attributes of ``key`` and mark them dirty."""
        self._check_attrs(attrs)
        ck = _cache_key(key)
        entry = self._entry(ck)
        entry.attrs.update(attrs)
        entry.dirty_attrs.update(dict.fromkeys(attrs))
        self._mark_dirty(ck, entry)

    async def get_or_load_key(self, key: Any, attributes: str | Sequence[str] = "*") -> dict[str, Any]:
        """The static attributes of ``key``, loaded from the driver on a cache miss.

        An unknown key caches ``{}``. ``_storey_*`` attributes are never returned. ``attributes`` selects
        names (``'*'``: all); the whole record is loaded and cached either way.
        """
        entry = await self._loaded(_cache_key(key))
        if attributes == "*":
            return dict(entry.attrs)
        names = [attributes] if isinstance(attributes, str) else attributes
        return {name: entry.attrs[name] for name in names if name in entry.attrs}

    async def persist_key(self, key: Any, data: Mapping[str, Any] | None = None) -> None:
        """Merge ``data`` into the cache, then write the key's dirty record in one driver call.

        Returns once a write holding everything that was dirty for the key (``data`` included) is stored.

        Raises
        ------
        ValueError
            ``key`` is ``None``, or ``data`` uses a reserved ``_storey_`` name.
        TypeError
            The key cannot be encoded.
        StoreyError
            The driver's error class.
        """
        ck = _cache_key(key)
        if ck is None:
            msg = f"table {self.table_path!r}: a None key cannot be persisted"
            raise ValueError(msg)
        entry = self._entry(ck)
        self._encoded(ck, entry)
        if data:
            self.update_key(ck, data)
        while not entry.is_dirty():
            if entry.tail is None:
                return
            await asyncio.wait(
                [entry.tail]
            )  # an earlier write took our data; if it failed, it is dirty again
        await asyncio.shield(self._start_write([(ck, entry)]))

    # -- flushing and closing -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Persist every dirty key, and wait for every write already in flight.

        Raises the first error (dirty keys whose write failed stay dirty); a key that cannot be encoded
        raises `TypeError` after the other keys were written.
        """
        if self._inflight:
            await asyncio.wait(set(self._inflight))
        items: list[tuple[Hashable, _Entry]] = []
        bad_key: TypeError | None = None
        for ck in list(self._dirty):
            entry = self._entries[ck]
            try:
                self._encoded(ck, entry)
            except TypeError as exc:
                bad_key = bad_key or exc
                continue
            items.append((ck, entry))
        gate = asyncio.Semaphore(_FLUSH_PARALLEL)
        tasks = [
            self._start_write(items[i : i + _FLUSH_BATCH], gate) for i in range(0, len(items), _FLUSH_BATCH)
        ]
        results = await asyncio.gather(*(asyncio.shield(task) for task in tasks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if bad_key is not None:
            raise bad_key

    async def close(self, *, discard: bool = False) -> None:
        """Flush, wait for every write, then close the driver. Idempotent.

        Parameters
        ----------
        discard
            The runtime's path after a flow failure: await the writes already submitted, discard the dirty
            state never submitted and drop the cache, close the driver; log errors instead of raising them.
        """
        await self.stop_background_flush()
        if discard:
            await self._discard()
            return
        try:
            await self.flush()
        finally:
            await self.storage.close()

    async def _close_after_run(self, discard: bool = False) -> None:
        """The runtime's end-of-run hook (`storey.flow.runtime`): `close`, discarding after a failure."""
        await self.close(discard=discard)

    def start_background_flush(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        """Flush dirty keys every ``flush_interval_secs`` seconds until `stop_background_flush`/`close`.

        A no-op without ``flush_interval_secs`` or when already running. Call it from the loop's thread
        (``loop`` defaults to the running loop). A failed flush stops the periodic flushing and is passed
        to ``on_error`` (the runtime fails the flow with it), or logged when there is no ``on_error``; the
        keys stay dirty, so `close` retries them.
        """
        if self.flush_interval_secs is None or (self._background is not None and not self._background.done()):
            return
        loop = loop or asyncio.get_running_loop()
        self._background = loop.create_task(self._flush_periodically(self.flush_interval_secs, on_error))

    async def stop_background_flush(self) -> None:
        """Stop the periodic flush (a flush in progress is interrupted; its submitted writes complete)."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    # -- aggregation hooks ----------------------------------------------------------------------------------

    async def load_record(self, key: Any, *, refresh: bool = False) -> Mapping[str, Any]:
        """The stored record of ``key`` (every attribute, ``_storey_*`` included), read-only.

        Loaded from the driver on the first call for the key and cached (also serving `get_or_load_key`);
        ``{}`` for an unknown key. The cached record is updated by this Table's own writes. With
        ``refresh=True`` the driver is read again (to see writes of other processes); the key's dirty
        static attributes and live states are kept.
        """
        ck = _cache_key(key)
        if ck is None:
            return _EMPTY
        entry = await self._loaded(ck, refresh=refresh)
        return MappingProxyType(entry.record or {})

    async def load_records(self, keys: Sequence[Any]) -> list[Mapping[str, Any] | BaseException]:
        """`load_record` of several keys at once: the keys neither cached nor being loaded are read with one
        driver call (`Driver.load_keys`), in one task.

        Returns, per key, its read-only record, or the exception its load (or its key's encoding) raised: one
        failing key does not fail the others.
        """
        out: list[Mapping[str, Any] | BaseException | None] = []
        pending: list[tuple[int, _Entry, asyncio.Task[Any]]] = []  # (position, entry, the task loading it)
        reads: dict[_Entry, str] = {}  # the entries this call reads, with their encoded keys
        read_at: list[tuple[int, _Entry]] = []
        for key in keys:
            ck = _cache_key(key)
            entry = None if ck is None else self._entries.get(ck)
            if ck is None or (entry is not None and entry.record is not None):
                out.append(_EMPTY if entry is None else None)
                continue
            if entry is None:
                entry = self._entries[ck] = _Entry()
            out.append(None)
            if entry.loading is not None:
                pending.append((len(out) - 1, entry, entry.loading))
                continue
            if entry not in reads:
                try:
                    reads[entry] = self._encoded(ck, entry)
                except TypeError as exc:
                    out[-1] = exc
                    continue
            read_at.append((len(out) - 1, entry))
        if reads:
            task = asyncio.get_running_loop().create_task(self._read_many(list(reads.items())))
            for entry in reads:
                entry.loading = task
            task.add_done_callback(functools.partial(_clear_loading_many, list(reads)))
            pending.extend((i, entry, task) for i, entry in read_at)
        if pending:
            await asyncio.wait({task for _, _, task in pending})  # not cancelled with the caller (a shield)
        for i, entry, task in pending:
            if entry.record is None:
                errors = None if task.cancelled() or task.exception() else task.result()
                out[i] = (errors or {}).get(entry) or _load_failed(self.table_path, task)
        for i, value in enumerate(out):
            if value is None:
                out[i] = MappingProxyType(self._entries[_cache_key(keys[i])].record)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def cached_record(self, key: Any) -> Mapping[str, Any] | None:
        """The cached stored record of ``key`` (read-only), or ``None`` if it was never loaded."""
        entry = self._entries.get(_cache_key(key))
        if entry is None or entry.record is None:
            return None
        return MappingProxyType(entry.record)

    def get_state(self, key: Any, name: str) -> Any | None:
        """The live state of aggregator ``name`` for ``key``, or ``None``."""
        entry = self._entries.get(key if type(key) is not list else _cache_key(key))
        return None if entry is None else entry.states.get(name)

    def set_state(self, key: Any, name: str, state: EncodableState) -> None:
        """Install the live state of aggregator ``name`` for ``key`` (not marked dirty by itself)."""
        self._entry(_cache_key(key)).states[name] = state

    def mark_state_dirty(
        self, key: Any, name: str, event_id: Any = None, event_time_ns: int | None = None
    ) -> None:
        """Mark ``(key, name)`` dirty and, if given, record the last event applied to the key.

        The state and the last event are written together in the key's next write. A no-op for the
        ``None`` key, whose state lives in memory only.

        Raises
        ------
        KeyError
            No live state was set for ``(key, name)``.
        """
        ck = _cache_key(key)
        if ck is None:
            return
        entry = self._entries.get(ck)
        if entry is None or name not in entry.states:
            msg = f"table {self.table_path!r}: no live state {name!r} for key {key!r}; call set_state first"
            raise KeyError(msg)
        entry.dirty_states[name] = None
        if event_id is not None or event_time_ns is not None:
            if entry.board is not None:
                _leave_board(entry)
            entry.has_last = True
            entry.last_ref = event_id
            entry.last_time = event_time_ns
            entry.last_event_dirty = True
        self._mark_dirty(ck, entry)

    def mark_states_dirty(self, key: Any, names: Sequence[str], event: Any, event_time_ns: int) -> None:
        """`mark_state_dirty` for several aggregators of one key and one event at once.

        The per-event path of `AggregateByKey`. `event` is the `Event` applied last (its id is read only
        when the key is written, so ids need not be drawn for events that are never persisted last).
        """
        self.mark_keys_dirty(names, (key,), (event,), (event_time_ns,))

    def mark_keys_dirty(
        self,
        names: Sequence[str],
        keys: Iterable[Any],
        events: Iterable[Any],
        times_ns: Iterable[int],
    ) -> None:
        """`mark_states_dirty` for several keys. ``events[i]`` is the `Event` of key ``keys[i]``, or just its
        id."""
        entries = self._entries
        for key, event, event_time_ns in zip(keys, events, times_ns, strict=True):
            ck = key if type(key) is not list else _cache_key(key)
            if ck is None:
                continue
            entry = entries.get(ck)
            if entry is None:
                raise self._no_live_state(key)
            if entry.board is not None:
                _leave_board(entry)
            entry.has_last = True
            entry.last_ref = event
            entry.last_time = event_time_ns
            if entry.marked is not names:  # else O(1) per event while the key stays dirty
                self._mark_names(ck, entry, names)

    def mark_board(self, board: MarkBoard, keys: Sequence[Any], rows: Sequence[int]) -> None:
        """Attach each key to its `MarkBoard` row and mark its states ``board.names`` and its last event
        dirty (the keys become dirty in the given order), for keys whose row is not ``fresh``; the board then
        holds their last event (set its ``ids``/``times`` rows before or after)."""
        entries = self._entries
        names = board.names
        fresh = board.fresh
        for key, row in zip(keys, rows, strict=True):
            ck = key if type(key) is not list else _cache_key(key)
            if ck is None:
                continue
            entry = entries.get(ck)
            if entry is None:
                raise self._no_live_state(key)
            entry.has_last = True
            entry.board = board
            entry.board_row = row
            entry.last_ref = entry.last_time = None
            self._mark_names(ck, entry, names)
            fresh[row] = True

    def _mark_names(self, ck: Hashable, entry: _Entry, names: Sequence[str]) -> None:
        """Mark the states `names` and the last event of a key dirty."""
        dirty = entry.dirty_states
        for name in names:
            dirty[name] = None
        entry.last_event_dirty = True
        if ck not in self._dirty:
            self._mark_dirty(ck, entry)
        entry.marked = names

    def _no_live_state(self, key: Any) -> KeyError:
        return KeyError(f"table {self.table_path!r}: no live state for key {key!r}; call set_state first")

    def states(self, name: str) -> list[tuple[Hashable, Any]]:
        """``(key, state)`` for every key holding a live state of aggregator ``name``, in first-use order."""
        return [(ck, entry.states[name]) for ck, entry in self._entries.items() if name in entry.states]

    def dirty_keys(self) -> list[Hashable]:
        """The keys with dirty static attributes or aggregation state, in the order they became dirty."""
        return list(self._dirty)

    def is_dirty(self, key: Any) -> bool:
        """Whether ``key`` has anything not yet submitted to the driver."""
        return _cache_key(key) in self._dirty

    async def last_applied(self, key: Any) -> tuple[Any, int | None] | None:
        """``(last_event_id, last_event_time_ns)`` of the last event applied to ``key``, or ``None``.

        The live value if this process applied an event to the key, else the stored one (AGGREGATIONS.md
        §7.3).
        """
        ck = _cache_key(key)
        entry = self._entries.get(ck)
        if entry is not None and entry.has_last:
            return _resolved(entry)
        if ck is None:
            return None
        entry = await self._loaded(ck)
        if entry.has_last:
            return _resolved(entry)
        record = entry.record or {}
        if LAST_EVENT_ID not in record and LAST_EVENT_TIME_NS not in record:
            return None
        return record.get(LAST_EVENT_ID), record.get(LAST_EVENT_TIME_NS)

    async def load_schema(self) -> dict[str, Any] | None:
        """The table's stored aggregation schema document (AGGREGATIONS.md §7.1), or ``None``."""
        return await self.storage.load_schema(self.table_path)

    async def save_schema(self, schema: Mapping[str, Any]) -> None:
        """Store the table's aggregation schema document, replacing any previous one."""
        await self.storage.save_schema(self.table_path, schema)

    # -- internals: cache -----------------------------------------------------------------------------------

    def _entry(self, ck: Hashable) -> _Entry:
        entry = self._entries.get(ck)
        if entry is None:
            entry = self._entries[ck] = _Entry()
        return entry

    def _encoded(self, ck: Hashable, entry: _Entry) -> str:
        if entry.enc is None:
            try:
                entry.enc = encode_key(ck)
            except TypeError as exc:
                msg = f"table {self.table_path!r}: {exc}"
                raise TypeError(msg) from None
        return entry.enc

    def _mark_dirty(self, ck: Hashable, entry: _Entry) -> None:
        if ck is None:  # the None key lives in memory only
            entry.dirty_attrs.clear()
            entry.dirty_states.clear()
            entry.last_event_dirty = False
            entry.marked = None
            _detach(entry)
            return
        self._dirty[ck] = None
        if self.flush_interval_secs is not None and self._background is None:
            self._auto_start_background_flush()

    def _auto_start_background_flush(self) -> None:
        """The first dirty key inside a running loop starts the periodic flush."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop: `flush`/`close` will write
            return
        self.start_background_flush()

    def _check_attrs(self, attrs: Mapping[str, Any]) -> None:
        if not isinstance(attrs, Mapping):
            msg = f"table {self.table_path!r}: attributes must be a mapping, got {type(attrs).__name__}"
            raise TypeError(msg)
        for name in attrs:
            if not isinstance(name, str):
                msg = f"table {self.table_path!r}: attribute names must be str, got {name!r}"
                raise TypeError(msg)
            if name.startswith(RESERVED_PREFIX):
                msg = (
                    f"table {self.table_path!r}: attribute {name!r} is reserved "
                    f"(names starting with {RESERVED_PREFIX!r} belong to storey)"
                )
                raise ValueError(msg)

    async def _loaded(self, ck: Hashable, refresh: bool = False) -> _Entry:
        entry = self._entries.get(ck)
        if entry is not None and entry.record is not None and not refresh:
            return entry
        if entry is None:
            entry = self._entries[ck] = _Entry()
        if ck is None:
            entry.record = {}
            return entry
        task = entry.loading
        if task is None:
            encoded = self._encoded(ck, entry)
            task = entry.loading = asyncio.get_running_loop().create_task(self._read(entry, encoded))
            task.add_done_callback(functools.partial(_clear_loading, entry))
        await asyncio.shield(task)
        return entry

    async def _read_many(self, reads: list[tuple[_Entry, str]]) -> dict[_Entry, BaseException]:
        """Read several records with one driver call; returns the errors of the keys whose load failed."""
        records = await self.storage.load_keys(self.table_path, [encoded for _, encoded in reads])
        errors = {}
        for (entry, _), record in zip(reads, records, strict=True):
            if isinstance(record, BaseException):
                errors[entry] = record
            else:
                self._received(entry, record or {})
        return errors

    async def _read(self, entry: _Entry, encoded: str) -> None:
        self._received(entry, await self.storage.load_key(self.table_path, encoded) or {})

    def _received(self, entry: _Entry, record: dict[str, Any]) -> None:
        """Install a record just read from the driver."""
        if not record and entry.record is None:  # a first load of a new key: nothing to merge
            entry.record = record
            return
        static = {name: value for name, value in record.items() if not name.startswith(RESERVED_PREFIX)}
        if entry.record is None:  # first load: local writes are newer than storage
            if not entry.replaced:
                entry.attrs = {**static, **entry.attrs}
        elif entry.tail is None or entry.tail.done():  # refresh: storage wins except for dirty attributes
            kept = {name: entry.attrs[name] for name in entry.dirty_attrs if name in entry.attrs}
            entry.attrs = {**static, **kept}
        entry.record = record

    # -- internals: writes ----------------------------------------------------------------------------------

    def _start_write(
        self, items: list[tuple[Hashable, _Entry]], gate: asyncio.Semaphore | None = None
    ) -> asyncio.Task[None]:
        """Start one write task for ``items``, ordered after the previous write of each of their keys."""
        previous = {entry.tail for _, entry in items if entry.tail is not None and not entry.tail.done()}
        task = asyncio.get_running_loop().create_task(self._write(items, previous, gate))
        for _, entry in items:
            entry.tail = task
        self._inflight.add(task)
        task.add_done_callback(functools.partial(self._write_done, items))
        return task

    def _write_done(self, items: list[tuple[Hashable, _Entry]], task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        for _, entry in items:
            if entry.tail is task:
                entry.tail = None
        if not task.cancelled() and task.exception() is not None:
            logger.debug("table %r: write failed: %r", self.table_path, task.exception())

    async def _write(
        self,
        items: list[tuple[Hashable, _Entry]],
        previous: set[asyncio.Task[None]],
        gate: asyncio.Semaphore | None,
    ) -> None:
        if previous:
            await asyncio.wait(previous)
        if gate is not None:
            async with gate:
                await self._write_now(items)
        else:
            await self._write_now(items)

    async def _write_now(self, items: list[tuple[Hashable, _Entry]]) -> None:
        if self._discarding:
            msg = f"table {self.table_path!r}: write discarded because the flow failed"
            raise StoreyError(msg)
        taken = []
        try:
            for ck, entry in items:
                record = self._take_dirty(ck, entry)
                if record:
                    taken.append((ck, entry, record))
            if not taken:
                return
            if len(taken) == 1:
                _, entry, record = taken[0]
                await self.storage.save_key(self.table_path, entry.enc, record)  # type: ignore[arg-type]
            else:
                await self.storage.save_keys(
                    self.table_path, [(entry.enc, record) for _, entry, record in taken]
                )  # type: ignore[misc]
        except BaseException:
            for ck, entry, record in taken:
                self._restore_dirty(ck, entry, record)
            raise
        for _, entry, record in taken:
            if entry.record is not None:
                entry.record.update(record)

    def _take_dirty(self, ck: Hashable, entry: _Entry) -> dict[str, Any]:
        """The key's dirty record; its dirty marks are cleared (the write now owns them)."""
        record = {name: entry.attrs[name] for name in entry.dirty_attrs if name in entry.attrs}
        for name in entry.dirty_states:
            record[STATE_PREFIX + name] = entry.states[name].encode()
        if entry.last_event_dirty and entry.has_last:
            record[LAST_EVENT_ID], record[LAST_EVENT_TIME_NS] = _resolved(entry)
        entry.dirty_attrs = {}
        entry.dirty_states = {}
        entry.last_event_dirty = False
        entry.marked = None
        _detach(entry)
        self._dirty.pop(ck, None)
        return record

    def _restore_dirty(self, ck: Hashable, entry: _Entry, record: Mapping[str, Any]) -> None:
        """A write failed: its attributes are dirty again (unless the cache was dropped meanwhile)."""
        if self._entries.get(ck) is not entry:
            return
        for name in record:
            if name.startswith(STATE_PREFIX):
                entry.dirty_states[name[len(STATE_PREFIX) :]] = None
            elif name in (LAST_EVENT_ID, LAST_EVENT_TIME_NS):
                entry.last_event_dirty = True
            else:
                entry.dirty_attrs[name] = None
        self._dirty[ck] = None

    async def _flush_periodically(
        self, interval: float, on_error: Callable[[BaseException], object] | None
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:
                if on_error is None:
                    logger.error("table %r: periodic flush failed: %s", self.table_path, exc, exc_info=exc)
                else:
                    on_error(exc)
                return

    async def _discard(self) -> None:
        self._discarding = True
        try:
            if self._inflight:
                await asyncio.wait(set(self._inflight))
            if self._dirty:
                logger.info(
                    "table %r: discarding the unsaved state of %d keys", self.table_path, len(self._dirty)
                )
            for entry in self._entries.values():
                if entry.loading is not None:
                    entry.loading.cancel()
                _detach(entry)
            self._entries.clear()
            self._dirty.clear()
        finally:
            self._discarding = False
        try:
            await self.storage.close()
        except Exception as exc:
            logger.warning("table %r: closing the driver failed: %s", self.table_path, exc, exc_info=exc)


def _clear_loading_many(entries: list[_Entry], task: asyncio.Task[Any]) -> None:
    for entry in entries:
        if entry.loading is task:
            entry.loading = None


def _load_failed(table_path: str, task: asyncio.Task[Any]) -> BaseException:
    """The error of a load task whose key got no record."""
    if task.cancelled():
        return asyncio.CancelledError()
    exc = task.exception()
    return exc if exc is not None else StoreyError(f"table {table_path!r}: loading the key failed")


def _clear_loading(entry: _Entry, task: asyncio.Task[None]) -> None:
    if entry.loading is task:
        entry.loading = None
