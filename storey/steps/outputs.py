"""`Complete` and `Reduce` (spec STEPS.md §8.2)."""

from __future__ import annotations

import copy as _copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from storey.event import Event
from storey.flow.batch import last_index
from storey.flow.step import Flow

if TYPE_CHECKING:
    from storey.flow.batch import EventBatch

_NEVER_AWAITABLE = frozenset({int, float, str, list, dict, tuple, bool, type(None)})
"""Result types that are never awaitable (skips the `__await__` lookup on the per-event path)."""

__all__ = ["Complete", "Reduce"]


class Complete(Flow):
    """Forward the event, wait for downstream, then settle its awaitable result with the body.

    Events without a result slot pass through without effect.

    Examples
    --------
    >>> from storey import build_flow, Source, Map, Complete
    >>> c = build_flow([Source(), Map(str.upper), Complete()]).run()
    >>> c.emit("hi").await_result()
    'HI'
    >>> c.terminate(wait=True)
    """

    def _do(self, event: Event) -> Awaitable[Any] | None:
        r = self._forward(event)
        if r is not None:
            return self._settle_after(r, event)
        self._settle(event)
        return None

    async def _settle_after(self, pending: Awaitable[Any], event: Event) -> None:
        await pending
        self._settle(event)

    def _settle(self, event: Event) -> None:
        res = event._result
        if res is not None:
            res._settle(_copy.copy(event) if self._full_event else event.body, None)


class Reduce(Flow):
    """Fold every element into an accumulator; the termination result is the accumulator. Terminal.

    Each run starts from ``copy.deepcopy(initial_value)``; `fn` may be async. Behind a reader source, a sync
    `fn` with ``full_event=False`` folds whole chunks of rows (the batch lane, see `storey.flow.batch`); on a
    failure the accumulator holds the rows before the failing one, as on the per-event path.

    Examples
    --------
    >>> from storey import build_flow, Source, Reduce
    >>> c = build_flow([Source(), Reduce(0, lambda acc, x: acc + x)]).run()
    >>> for i in range(10):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    45
    """

    _is_terminal = True

    def __init__(self, initial_value: Any, fn: Callable[[Any, Any], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(fn):
            msg = f"step {self.name!r}: expected a callable, got {type(fn).__name__}"
            raise TypeError(msg)
        self._initial_value = initial_value
        self._fn = fn
        self._acc: Any = None

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._acc = _copy.deepcopy(self._initial_value)

    def _do(self, event: Event) -> Awaitable[Any] | None:
        acc = self._fn(self._acc, _copy.copy(event) if self._full_event else event.body)
        if type(acc) not in _NEVER_AWAITABLE and hasattr(acc, "__await__"):
            return self._resume(acc, event)
        self._acc = acc
        return None

    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Batch lane: fold the bodies in a tight loop (events are built only for an error or async fn)."""
        if self._full_event:
            return super()._do_batch(batch)
        fn = self._fn
        acc = self._acc
        bodies = batch.bodies
        it = iter(bodies)
        checked = None  # the type of the last result, known not to be awaitable
        try:
            for body in it:
                nxt = fn(acc, body)
                if type(nxt) is not checked:
                    if hasattr(nxt, "__await__"):
                        self._acc = acc
                        j = last_index(it, bodies)
                        events = batch.events()
                        return self._do_each_after(self._resume(nxt, events[j]), events, j + 1)
                    checked = type(nxt)
                acc = nxt
        except Exception as exc:
            self._acc = acc
            err = self._fail(exc, batch.event(last_index(it, bodies)))
            if err is exc:  # a FlowError raised by the function goes on as it is
                raise
            raise err from exc
        self._acc = acc
        return None

    async def _resume(self, pending: Awaitable[Any], event: Event) -> None:
        try:
            self._acc = await pending
        except Exception as exc:
            raise self._fail(exc, event) from exc

    def _termination_result(self) -> Any:
        return self._acc
