"""The emit-policy scheduler shared by both engines (spec AGGREGATIONS.md §6.2–6.5).

It decides *when* something is emitted and *as of which time*, never what value: the engine evaluates the
features. Everything runs on event time; the wall clock plays no part.

Per event of a step, the engine calls, in this order::

    due = emitter.advance(t)              # 1. update the step clock C; 2. the firing pass (due emissions)
    ... emit each Emission of `due` ...   # evaluated with the state *before* the event is applied
    ... apply the event (§5.2) ...
    if emitter.on_event(key, t, ref):     # 4. the event's own emission
        ... emit the event, features as of t ...

and at termination ``emitter.flush()``. An `Emission` is either a boundary (``key is None``; emit, for each
qualifying key in `keys` order, a new event at ``time = boundary`` with features as of ``boundary - 1``) or
a per-key emission of the key's latest event ``ref`` with features as of ``as_of``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, NamedTuple

from storey.aggregations.emit import (
    EmitAfterDelay,
    EmitAfterMaxEvent,
    EmitAfterPeriod,
    EmitAfterWindow,
    EmitEveryEvent,
    EmitPolicy,
)
from storey.aggregations.field import FieldAggregator

__all__ = ["Emission", "Emitter"]

_NEG_INF = -(2**63)


class Emission(NamedTuple):
    """One due emission.

    Attributes
    ----------
    boundary
        For period/window policies, the boundary ``b`` (emit new events at time ``b``, features as of
        ``b - 1``); ``None`` for per-key emissions.
    key
        The key of a per-key emission (``None`` for boundaries).
    as_of
        As-of time in ns of the features (``b - 1`` for boundaries).
    ref
        The engine's reference to the key's latest event (per-key emissions only).
    """

    boundary: int | None
    key: Any
    as_of: int
    ref: Any


class Emitter:
    """Schedule the emissions of one `AggregateByKey` policy.

    Parameters
    ----------
    policy
        The emit policy.
    aggregators
        The step's aggregators; the first one's period (or smallest window) spaces the boundaries.

    Examples
    --------
    >>> from storey.aggregations.emit import EmitAfterMaxEvent
    >>> e = Emitter(EmitAfterMaxEvent(2), [])
    >>> [e.on_event("k", t, t) for t in (1, 2, 3)]
    [False, True, False]
    >>> e.flush()
    [Emission(boundary=None, key='k', as_of=3, ref=3)]
    """

    def __init__(self, policy: EmitPolicy, aggregators: Sequence[FieldAggregator]) -> None:
        self.policy = policy
        self.C = _NEG_INF
        self.keys: dict[Any, None] = {}  # first-seen order
        self._latest: dict[Any, tuple[int, Any]] = {}
        self._heap: list[tuple[int, int, Any, int]] = []
        self._seq = 0
        self._episode: dict[Any, int] = {}  # key -> live episode id (max-event timeout / delay)
        self._count: dict[Any, int] = {}
        self._every = isinstance(policy, EmitEveryEvent)
        self._max_events = policy.max_events if isinstance(policy, EmitAfterMaxEvent) else None
        self._timeout: int | None = None
        if isinstance(policy, EmitAfterMaxEvent) and policy.timeout_secs is not None:
            self._timeout = policy.timeout_ns
        elif isinstance(policy, EmitAfterDelay):
            self._timeout = policy.delay_ns
        self._boundary_step: int | None = None
        self._delay = 0
        if isinstance(policy, EmitAfterPeriod | EmitAfterWindow):
            if not aggregators:
                msg = "a period/window emit policy needs at least one aggregator"
                raise ValueError(msg)
            windows = aggregators[0].windows
            self._boundary_step = (
                windows.period_ns if isinstance(policy, EmitAfterPeriod) else windows.windows_ns[0]
            )
            self._delay = policy.delay_ns
        self._next_boundary: int | None = None
        self.timed = self._timeout is not None or self._boundary_step is not None
        """Whether `advance` can return emissions (otherwise the engine may skip calling it)."""

    # ------------------------------------------------------------------------------------------ events
    def advance(self, t: int) -> list[Emission]:
        """Update the step clock with an event at `t` and return the emissions now due, in order."""
        if t > self.C:
            self.C = t
        if self._boundary_step is not None:
            if self._next_boundary is None:
                p = self._boundary_step
                self._next_boundary = (t // p + 1) * p  # boundaries greater than the first event time
                return []
            return self._boundaries_until(self.C - self._delay)
        if self._heap and self._heap[0][0] <= self.C:
            return self._timers_until(self.C)
        return []

    def on_event(self, key: Any, t: int, ref: Any) -> bool:
        """Register an event of `key` (after it was applied); return whether it is emitted now."""
        if self._every:
            return True
        if key not in self.keys:
            self.keys[key] = None
        if self._boundary_step is not None:
            return False
        self._latest[key] = (t, ref)
        if self._max_events is not None:
            c = self._count.get(key, 0) + 1
            if c >= self._max_events:
                self._count[key] = 0
                self._episode.pop(key, None)
                return True
            self._count[key] = c
            if c == 1:
                self._open_episode(key, t)
            return False
        if key not in self._episode:  # EmitAfterDelay: a per-key debounce
            self._open_episode(key, t)
        return False

    def flush(self) -> list[Emission]:
        """The emissions pending at termination, in due order (§6.5)."""
        if self._boundary_step is not None:
            if self._next_boundary is None:
                return []
            p = self._boundary_step
            last = (self.C // p + 1) * p  # b*: the smallest boundary greater than C
            return self._boundaries_until(last)
        if self._max_events is not None:
            out = []
            for key, _ in sorted(self._episode.items(), key=lambda kv: kv[1]):
                if self._count.get(key, 0) > 0:
                    t, ref = self._latest[key]
                    out.append(Emission(None, key, t, ref))
                    self._count[key] = 0
            self._episode.clear()
            self._heap.clear()
            return out
        if self._timeout is not None:
            return self._timers_until(2**63 - 1)
        return []

    # ------------------------------------------------------------------------------------------ internals
    def _open_episode(self, key: Any, t: int) -> None:
        self._seq += 1
        self._episode[key] = self._seq
        if self._timeout is not None:
            heapq.heappush(self._heap, (t + self._timeout, self._seq, key, self._seq))

    def _timers_until(self, limit: int) -> list[Emission]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= limit:
            _, _, key, episode = heapq.heappop(heap)
            if self._episode.get(key) != episode:
                continue  # cancelled: the max-event count was reached first
            del self._episode[key]
            if self._max_events is not None:
                self._count[key] = 0
            t, ref = self._latest[key]
            out.append(Emission(None, key, t, ref))
        return out

    def _boundaries_until(self, limit: int) -> list[Emission]:
        out = []
        b = self._next_boundary
        p = self._boundary_step
        assert b is not None and p is not None
        while b <= limit:
            out.append(Emission(b, None, b - 1, None))
            b += p
        self._next_boundary = b
        return out
