"""Base of concurrent I/O steps: work runs in tasks, results are forwarded in input order
(spec STEPS.md §3.1 and §6: at most `max_in_flight` pending, drained at termination)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import Any

from storey.errors import FlowError
from storey.event import Event
from storey.flow.step import Flow

__all__ = ["DROP", "ConcurrentStep"]

DROP = object()
"""Returned by `ConcurrentStep._process` to drop the event."""


def _mark_retrieved(task: asyncio.Future[Any]) -> None:
    """The forwarder reports the first failure; later ones (after the flow failed) are not reported again."""
    if not task.cancelled():
        task.exception()


class ConcurrentStep(Flow):
    """Hand each event to a worker task and return at once; forward results in input order.

    Subclasses implement ``async _process(event) -> Event | DROP`` and may override `_close_resources`.
    """

    def __init__(self, max_in_flight: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            msg = f"step {self.name!r}: max_in_flight must be an int >= 1, got {max_in_flight!r}"
            raise ValueError(msg)
        self._max_in_flight = max_in_flight
        self._queue: deque[tuple[Event, asyncio.Future[Any]]] = deque()
        self._forwarder: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._queue = deque()
        self._forwarder = None
        self._room = None

    async def _process(self, event: Event) -> Any:
        raise NotImplementedError

    def _do(self, event: Event) -> Awaitable[Any] | None:
        if len(self._queue) >= self._max_in_flight:
            return self._enqueue_when_room(event)
        self._enqueue(event)
        return None

    async def _enqueue_when_room(self, event: Event) -> None:
        while len(self._queue) >= self._max_in_flight:
            if self._run is not None and self._run.error is not None:
                return
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        self._enqueue(event)

    def _enqueue(self, event: Event) -> None:
        res = event._result
        if res is not None:
            res._holds += 1
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._process(event))
        task.add_done_callback(_mark_retrieved)
        self._queue.append((event, task))
        if self._forwarder is None or self._forwarder.done():
            assert self._run is not None
            self._forwarder = self._run.spawn(self._forward_in_order())

    async def _forward_in_order(self) -> None:
        run = self._run
        assert run is not None
        while self._queue:
            event, task = self._queue[0]
            try:
                out = await task
            except Exception as exc:
                run.fail(self._fail(exc, event))
                self._cancel_pending()
                return
            self._queue.popleft()
            if self._room is not None and not self._room.done():
                self._room.set_result(None)
            if run.error is not None:
                self._cancel_pending()
                return
            try:
                if out is not DROP:
                    await self._emit(out)
            except FlowError as err:
                run.fail(err)
                self._cancel_pending()
                return
            res = event._result
            if res is not None:
                res._release()

    def _cancel_pending(self) -> None:
        for _, task in self._queue:
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: the flow already failed with the first error
            else:
                task.cancel()
        self._queue.clear()
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    async def _drain(self) -> None:
        while self._forwarder is not None and not self._forwarder.done():
            await asyncio.shield(self._forwarder)
        if self._run is not None and self._run.error is not None:
            raise self._run.error
        await self._close_resources()

    async def _close_resources(self) -> None:
        """Close lazy resources (HTTP sessions, clients) at termination."""
