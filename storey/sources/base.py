"""Base classes of sources: the head of a flow (spec STEPS.md §5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from storey._utils._fields import body_field
from storey.event import Event
from storey.flow.batch import EventBatch
from storey.flow.controller import FlowAwaiter, iterate_batches
from storey.flow.runtime import Run, execute
from storey.flow.step import Flow

__all__ = ["ReaderSource", "SourceStep"]


class SourceStep(Flow):
    """A step that produces events; it must be the head of its flow."""

    _is_source = True

    def _field(self, event: Event, field: Any, what: str) -> Any:
        return body_field(event, field, self.name, what)


class ReaderSource(SourceStep):
    """Base of sources that read data (files, dataframes) and terminate by themselves.

    Subclasses implement `_read_batches`, a generator of `EventBatch`es (or lists of `Event`s) in arrival
    order (keys, times and ids already set), so the step itself only forwards. An `EventBatch` takes the
    runtime's batch lane (`storey.flow.batch`): its events are built only where a step needs them.
    """

    def _init_run(self, run: Run) -> None:
        super()._init_run(run)
        self._do = self._forward  # type: ignore[method-assign]  # nothing to do per event: skip a frame
        self._do_batch = self._forward_batch  # type: ignore[method-assign]

    def _read_batches(self) -> Iterator[EventBatch | list[Event]]:
        raise NotImplementedError

    def run(self) -> FlowAwaiter:
        """Start reading in a background thread; returns a `FlowAwaiter`."""
        run = Run(self)
        return FlowAwaiter(lambda: execute(run, iterate_batches(run, self._read_batches())))

    async def run_async(self) -> Any:
        """Run the whole read inside the current event loop and return the termination result."""
        run = Run(self)
        return await execute(run, iterate_batches(run, self._read_batches()))
