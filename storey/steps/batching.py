"""`Batch`: collect entries and emit them as one list event (spec STEPS.md §6)."""

from __future__ import annotations

import asyncio
import copy as _copy
from collections.abc import Awaitable
from typing import Any

from storey.event import Event
from storey.flow.step import Flow

__all__ = ["Batch", "pop_synonym"]


def pop_synonym(kwargs: dict[str, Any], synonym: str, name: str, value: Any, default: Any, step: str) -> Any:
    """Accept a later-upstream keyword synonym; both given raises `TypeError` (spec STEPS.md §10)."""
    if synonym in kwargs:
        syn = kwargs.pop(synonym)
        if value is not default:
            msg = f"{step}() got both {name!r} and its synonym {synonym!r}"
            raise TypeError(msg)
        return syn
    return value


class Batch(Flow):
    """Emit a list of entries every `max_events` entries, `timeout_secs` wall-clock seconds after a batch's
    first entry, and the remainder at termination.

    The emitted event is ``Event(entries, time=<first entry's time>, key=None)`` with a new id. Entries are
    bodies, or shallow event copies with ``full_event=True``.

    Examples
    --------
    >>> from storey import build_flow, Source, Batch, Reduce
    >>> c = build_flow([Source(), Batch(2), Reduce([], lambda a, x: a + [x])]).run()
    >>> for i in range(5):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self, max_events: int | None = None, timeout_secs: float | None = None, **kwargs: Any
    ) -> None:
        timeout_secs = pop_synonym(kwargs, "flush_after_seconds", "timeout_secs", timeout_secs, None, "Batch")
        super().__init__(**kwargs)
        if max_events is not None and max_events < 1:
            msg = f"step {self.name!r}: max_events must be at least 1, got {max_events!r}"
            raise ValueError(msg)
        if timeout_secs is not None and timeout_secs <= 0:
            msg = f"step {self.name!r}: timeout_secs must be positive, got {timeout_secs!r}"
            raise ValueError(msg)
        self._max_events = max_events
        self._timeout_secs = timeout_secs
        self._entries: list[Any] = []
        self._first_time: Any = None
        self._generation = 0
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Task[Any] | None = None

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._entries = []
        self._generation = 0
        self._timer = None
        self._inflight = None

    def _do(self, event: Event) -> Awaitable[Any] | None:
        if not self._entries:
            self._first_time = event.time
            if self._timeout_secs is not None:
                gen = self._generation
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._timeout_secs, self._on_timeout, gen)
        self._entries.append(_copy.copy(event) if self._full_event else event.body)
        if self._max_events is not None and len(self._entries) >= self._max_events:
            return self._forward(self._take())
        return None

    def _take(self) -> Event:
        entries, self._entries = self._entries, []
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return Event(entries, time=self._first_time)

    def _on_timeout(self, gen: int) -> None:
        if gen != self._generation or not self._entries or self._run is None:
            return
        self._inflight = self._run.spawn(self._emit(self._take()))

    async def _flush(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            await self._inflight
        if self._entries:
            await self._emit(self._take())
