"""`Source` and `AsyncSource`: flows fed by `emit` calls (spec STEPS.md §5.1–5.2)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from storey.event import Event
from storey.flow.batch import EventBatch, _Emitted
from storey.flow.controller import AsyncFlowController, FlowController
from storey.flow.runtime import Run
from storey.sources.base import SourceStep

__all__ = ["AsyncSource", "Source"]


class _EmitSource(SourceStep):
    def __init__(
        self, buffer_size: int = 1024, key_field: Any = None, time_field: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if buffer_size <= 0:
            msg = f"step {self.name!r}: buffer_size must be positive, got {buffer_size!r}"
            raise ValueError(msg)
        self._buffer_size = buffer_size
        self._key_field = key_field
        self._time_field = time_field

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        if self._key_field is None and self._time_field is None:  # nothing to do: skip a frame
            self._do = self._forward  # type: ignore[method-assign]
            self._do_batch = self._forward_batch  # type: ignore[method-assign]

    def _do(self, event: Event) -> Any:
        if self._key_field is not None and event.key is None:
            event.key = self._field(event, self._key_field, "key field")
        if self._time_field is not None:
            event.time = self._field(event, self._time_field, "time field")
        return self._forward(event)

    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Batch lane of emitted events: set every event's key/time fields, then hand the batch on whole.

        A failing event fails as on the per-event path, after the events before it went downstream.
        """
        if not isinstance(batch.meta, _Emitted):  # plain bodies: their events are built now, and kept
            batch = EventBatch.of_events(batch.events())
        events = batch.events()
        key_field = self._key_field
        time_field = self._time_field
        field = self._field
        j = 0
        try:
            for ev in events:
                if key_field is not None and ev.key is None:
                    ev.key = field(ev, key_field, "key field")
                if time_field is not None:
                    ev.time = field(ev, time_field, "time field")
                j += 1
        except Exception as exc:
            accepted = type(batch).of_events(events[:j]) if j else None
            return self._fail_batch(exc, batch, j, accepted)
        return self._forward_batch(batch)


class Source(_EmitSource):
    """The synchronous entry point: ``build_flow([Source(), ...]).run()`` returns a `FlowController`.

    Parameters
    ----------
    buffer_size
        Events that may wait in the queue before `emit` blocks.
    key_field, time_field
        Body fields that give the event key/time when `emit` gets none.

    Examples
    --------
    >>> from storey import build_flow, Source, Map, Complete
    >>> c = build_flow([Source(), Map(lambda x: x + 1), Complete()]).run()
    >>> c.emit(1).await_result()
    2
    >>> c.terminate(wait=True)
    """

    def run(self) -> FlowController:
        """Start the flow in a background thread and return its controller."""
        return FlowController(self, Run(self), self._buffer_size)


class AsyncSource(_EmitSource):
    """The entry point for async code: ``await build_flow([AsyncSource(), ...]).run()``.

    Examples
    --------
    >>> import asyncio
    >>> from storey import build_flow, AsyncSource, Map, Complete
    >>> async def main():
    ...     c = await build_flow([AsyncSource(), Map(lambda x: x * 10), Complete()]).run()
    ...     r = await c.emit(4, await_result=True)
    ...     await c.terminate()
    ...     await c.await_termination()
    ...     return r
    >>> asyncio.run(main())
    40
    """

    def run(self) -> AsyncFlowController:
        """Start the flow in the running event loop and return its controller."""
        return AsyncFlowController(self, Run(self), self._buffer_size)
