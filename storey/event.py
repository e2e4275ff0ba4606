"""`Event`, the unit that travels through a flow (spec STEPS.md §1.1)."""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from time import time_ns as _time_ns
from typing import Any

from storey._time import UTC, to_datetime, to_ns

__all__ = ["Event"]

_now = _dt.datetime.now


def _now_ns() -> int:
    """The current time in epoch ns, truncated to whole µs as `datetime.now` gives it."""
    return _time_ns() // 1000 * 1000


_VERSION_4 = bytes((x & 0x0F) | 0x40 for x in range(256))  # byte 6: version 4
_VARIANT = bytes((x & 0x3F) | 0x80 for x in range(256))  # byte 8: the RFC 4122 variant


def fresh_ids(n: int) -> list[str]:
    """`n` fresh ids in the format of ``uuid4().hex`` (random, version 4, RFC 4122 variant), drawn at once.

    Examples
    --------
    >>> a, b = fresh_ids(2)
    >>> len(a), a[12], a[16] in "89ab", a != b, uuid.UUID(a).version
    (32, '4', True, True, 4)
    """
    if n <= 0:
        return []
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    return raw.hex(" ", -16).split(" ")  # a space after every 16 bytes, then split: one C call each


class _LazyId:
    """An id shared by an event and its copies, drawn (``uuid4().hex``) when any of them first needs it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: str | None = None

    def get(self) -> str:
        v = self.value
        if v is None:
            v = self.value = uuid.uuid4().hex
        return v


class Event:
    """An event: a body plus key, time, id and HTTP metadata.

    Parameters
    ----------
    body
        Any object: the payload.
    key
        Any object; steps that group by key need it hashable.
    time
        Normalised to an aware UTC datetime. ``None`` means now; a naive datetime is read as UTC; an
        ``int``/``float`` is epoch milliseconds; a ``str`` is ISO 8601.
    id
        ``None`` becomes a fresh ``uuid4().hex``.

    Examples
    --------
    >>> e = Event({"x": 1}, key="u1", time=0)
    >>> e.time.isoformat()
    '1970-01-01T00:00:00+00:00'
    >>> e == Event({"x": 1}, key="u1", time=0, id=e.id)
    True
    """

    __slots__ = (
        "_id",
        "_result",
        "_time",
        "_time_ns",
        "body",
        "content_type",
        "headers",
        "key",
        "method",
        "origin",
        "path",
    )

    def __init__(
        self,
        body: Any,
        key: Any = None,
        time: Any = None,
        id: Any = None,
        headers: dict[str, Any] | None = None,
        method: str | None = None,
        path: str | None = "/",
        content_type: str | None = None,
        awaitable_result: Any = None,
        origin: tuple[Any, Any] | None = None,
    ) -> None:
        self.body = body
        self.key = key
        if time is None:  # now, kept in ns: the datetime is only built if `time` is read
            self._time = None
            self._time_ns = _now_ns()
        elif type(time) is int:
            self._time_ns = to_ns(time)
            self._time = None
        else:
            self._time = to_datetime(time)
            self._time_ns = None
        self._id = id
        self.headers = headers
        self.method = method
        self.path = path
        self.content_type = content_type
        self._result = awaitable_result
        self.origin = origin

    @property
    def time(self) -> _dt.datetime:
        """The event time, an aware UTC datetime (or `pandas.Timestamp` with ns precision)."""
        t = self._time
        if t is None:
            from storey._time import from_ns

            t = self._time = from_ns(self._time_ns)  # type: ignore[arg-type]
        return t

    @time.setter
    def time(self, value: Any) -> None:
        self._time = _now(UTC) if value is None else to_datetime(value)
        self._time_ns = None

    @property
    def id(self) -> Any:
        """The event id; a fresh ``uuid4().hex`` is drawn lazily when none was given."""
        i = self._id
        if i is None:
            i = self._id = uuid.uuid4().hex
        elif type(i) is _LazyId:
            i = i.get()
        return i

    @id.setter
    def id(self, value: Any) -> None:
        self._id = value

    @property
    def processing_time(self) -> _dt.datetime:
        """Read-only alias of `time` (the later upstream name)."""
        return self.time

    @property
    def time_ns(self) -> int:
        """The event time in int64 epoch nanoseconds (cached)."""
        ns = self._time_ns
        if ns is None:
            ns = self._time_ns = to_ns(self._time)
        return ns

    @classmethod
    def _from_ns(cls, body: Any, key: Any, time_ns: int, origin: Any = None) -> Event:
        """Fast constructor used by sources: time given in ns, fresh id."""
        ev = cls.__new__(cls)
        ev.body = body
        ev.key = key
        ev._time = None
        ev._time_ns = time_ns
        ev._id = None
        ev.headers = None
        ev.method = None
        ev.path = "/"
        ev.content_type = None
        ev._result = None
        ev.origin = origin
        return ev

    def __copy__(self) -> Event:
        ev = Event.__new__(Event)
        ev.body = self.body
        ev.key = self.key
        ev._time = self._time
        ev._time_ns = self._time_ns
        i = self._id
        if i is None:  # copies share one lazily drawn id
            i = self._id = _LazyId()
        ev._id = i
        ev.headers = self.headers
        ev.method = self.method
        ev.path = self.path
        ev.content_type = self.content_type
        ev._result = self._result
        ev.origin = self.origin
        return ev

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return False
        return (
            self.body == other.body
            and self.key == other.key
            and self.time_ns == other.time_ns
            and self.id == other.id
            and self.headers == other.headers
            and self.method == other.method
            and self.path == other.path
            and self.content_type == other.content_type
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = repr(self.body)
        if len(body) > 80:
            body = body[:77] + "..."
        return f"Event(key={self.key!r}, time={self.time.isoformat()}, id={self.id!r}, body={body})"

    def __getstate__(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in self.__slots__ if k != "_result"}
        state["_id"] = self.id
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._result = None
