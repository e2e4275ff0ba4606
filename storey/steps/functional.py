"""Steps around one user function: `Filter`, `Map`, `FlatMap`, `Extend`, `MapWithState`, `MapClass`
(spec STEPS.md §2.1 and §6).

Sync and async user functions are handled by the same code: a result that is awaitable is awaited, and only
then does the step pay for a coroutine.

Batch lane (`storey.flow.batch`): behind a reader source, `Map`, `Filter` and `FlatMap` with
``full_event=False`` call their function on every body of a chunk of rows before the next step sees the
chunk. Outputs, ids, origins and errors are those of the per-event path; only the interleaving of calls
between steps differs, which side effects shared between steps can observe (see docs/streaming.md, "The
batch lane of reader sources").
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import repeat
from typing import TYPE_CHECKING, Any

from storey.errors import FlowError
from storey.event import Event
from storey.flow.batch import last_index
from storey.flow.step import Flow

if TYPE_CHECKING:
    from storey.flow.batch import EventBatch

__all__ = ["Extend", "Filter", "FlatMap", "Map", "MapClass", "MapWithState"]


def _awaitable(value: Any) -> bool:
    return hasattr(value, "__await__")


class _FnStep(Flow):
    def __init__(self, fn: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(fn):
            msg = f"step {self.name!r}: expected a callable, got {type(fn).__name__}"
            raise TypeError(msg)
        self._fn = fn

    def _do(self, event: Event) -> Awaitable[Any] | None:
        r = self._fn(self._element(event))
        if _awaitable(r):
            return self._resume(r, event)
        return self._then(r, event)

    async def _resume(self, pending: Awaitable[Any], event: Event) -> None:
        try:
            r = await pending
        except Exception as exc:
            raise self._fail(exc, event) from exc
        nxt = self._then(r, event)
        if nxt is not None:
            await nxt

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        raise NotImplementedError

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        # the batch lane works on bodies: not for full events, nor for subclasses with their own `_do`
        self._body_lane = not self._full_event and type(self)._do is _FnStep._do

    async def _finish_async(
        self, batch: EventBatch, j: int, pending: Awaitable[Any], accepted: EventBatch | None
    ) -> None:
        """Batch lane, body `j` gave an awaitable: forward the accepted rows, then go on per event."""
        try:
            if accepted is not None:
                r = self._forward_batch(accepted)
                if r is not None:
                    await r
        except BaseException:
            close = getattr(pending, "close", None)
            if close is not None:
                close()
            raise
        events = batch.events()
        await self._resume(pending, events[j])
        r = self._do_each(events, j + 1)
        if r is not None:
            await r


class Map(_FnStep):
    """One output per input: a shallow copy of the event whose body is ``fn(element)``.

    Examples
    --------
    >>> from storey import build_flow, Source, Map, Reduce
    >>> c = build_flow([Source(), Map(lambda x: x * x), Reduce([], lambda a, x: a + [x])]).run()
    >>> for i in range(3):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    [0, 1, 4]
    """

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        try:
            out = self._with_result(event, result)
        except Exception as exc:
            raise self._fail(exc, event) from exc
        return self._forward(out)

    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Batch lane: map every body, then hand the new bodies on as one batch."""
        if not self._body_lane:
            return super()._do_batch(batch)
        fn = self._fn
        bodies = batch.bodies
        out: list[Any] = []
        append = out.append
        it = iter(bodies)
        checked = None  # the type of the last result, known not to be awaitable
        try:
            for body in it:
                r = fn(body)
                if type(r) is not checked:
                    if hasattr(r, "__await__"):
                        j = last_index(it, bodies)
                        return self._finish_async(batch, j, r, batch.derive(out, None) if out else None)
                    checked = type(r)
                append(r)
        except Exception as exc:
            j = last_index(it, bodies)
            return self._fail_batch(exc, batch, j, batch.derive(out, None) if out else None)
        return self._forward_batch(batch.derive(out, None))


class Filter(_FnStep):
    """Forward the same event when ``fn(element)`` is truthy, otherwise drop it.

    Examples
    --------
    >>> from storey import build_flow, Source, Filter, Reduce
    >>> c = build_flow([Source(), Filter(lambda x: x % 2 == 0), Reduce(0, lambda a, x: a + x)]).run()
    >>> for i in range(5):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    6
    """

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        if result:
            return self._forward(event)
        return None

    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Batch lane: test every body, then hand the kept rows on as one batch."""
        if not self._body_lane:
            return super()._do_batch(batch)
        fn = self._fn
        bodies = batch.bodies
        keep: list[int] = []
        append = keep.append
        checked = None  # the type of the last result, known not to be awaitable
        j = -1
        try:
            for body in bodies:
                j += 1
                r = fn(body)
                if type(r) is not checked:
                    if hasattr(r, "__await__"):
                        return self._finish_async(batch, j, r, self._kept(batch, keep))
                    checked = type(r)
                if r:
                    append(j)
        except Exception as exc:
            return self._fail_batch(exc, batch, j, self._kept(batch, keep))
        if len(keep) == len(bodies):
            return self._forward_batch(batch)
        return self._forward_batch(batch.derive([bodies[k] for k in keep], keep))

    @staticmethod
    def _kept(batch: EventBatch, keep: list[int]) -> EventBatch | None:
        if not keep:
            return None
        bodies = batch.bodies
        return batch.derive([bodies[k] for k in keep], keep)


class FlatMap(_FnStep):
    """``fn(element)`` returns an iterable; each item is forwarded as a copy of the event with that body.

    Examples
    --------
    >>> from storey import build_flow, Source, FlatMap, Reduce
    >>> c = build_flow([Source(), FlatMap(lambda x: [x] * x), Reduce(0, lambda a, x: a + 1)]).run()
    >>> for i in range(4):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    6
    """

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        if isinstance(result, str | bytes) or not isinstance(result, Iterable):
            raise self._fail(self._not_iterable(result), event)
        it = iter(result)
        return self._push_items(it, event)

    def _not_iterable(self, result: Any) -> TypeError:
        msg = f"step {self.name!r}: the function must return an iterable, got {type(result).__name__}"
        return TypeError(msg)

    def _push_items(self, it: Any, event: Event) -> Awaitable[Any] | None:
        for item in it:
            try:
                out = self._with_result(event, item)
            except Exception as exc:
                raise self._fail(exc, event) from exc
            r = self._forward(out)
            if r is not None:
                return self._push_rest(r, it, event)
        return None

    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Batch lane: expand every body, then hand all items on as one batch (a row's items share its id)."""
        if not self._body_lane:
            return super()._do_batch(batch)
        batch.meta.share_ids()
        fn = self._fn
        bodies = batch.bodies
        out: list[Any] = []
        rows: list[int] = []
        it = iter(bodies)
        try:
            for body in it:
                result = fn(body)
                if type(result) is not list:
                    if hasattr(result, "__await__"):
                        j = last_index(it, bodies)
                        return self._finish_async(batch, j, result, batch.derive(out, rows) if out else None)
                    if isinstance(result, str | bytes) or not isinstance(result, Iterable):
                        raise self._not_iterable(result)
                n = len(out)
                out.extend(result)
                rows.extend(repeat(last_index(it, bodies), len(out) - n))
        except Exception as exc:
            j = last_index(it, bodies)
            if len(rows) < len(out):  # an iterator failed half-way: its first items were accepted
                rows.extend(repeat(j, len(out) - len(rows)))
            return self._fail_batch(exc, batch, j, batch.derive(out, rows) if out else None)
        return self._forward_batch(batch.derive(out, rows))

    async def _push_rest(self, pending: Awaitable[Any], it: Any, event: Event) -> None:
        await pending
        r = self._push_items(it, event)
        if r is not None:
            await r


class Extend(_FnStep):
    """Forward the event with ``body = {**body, **fn(element)}`` (a new dict).

    Examples
    --------
    >>> from storey import build_flow, Source, Extend, Complete
    >>> c = build_flow([Source(), Extend(lambda b: {"y": b["x"] + 1}), Complete()]).run()
    >>> c.emit({"x": 1}).await_result()
    {'x': 1, 'y': 2}
    >>> c.terminate(wait=True)
    """

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        body = event.body
        if not isinstance(body, Mapping):
            msg = f"step {self.name!r}: Extend needs a mapping body, got {type(body).__name__}"
            raise self._fail(TypeError(msg), event)
        if not isinstance(result, Mapping):
            msg = f"step {self.name!r}: the function must return a mapping, got {type(result).__name__}"
            raise self._fail(TypeError(msg), event)
        out = _copy.copy(event)
        out.body = {**body, **result}
        return self._forward(out)


class MapWithState(Flow):
    """``fn(element, state) -> (result, new_state)``; the result becomes the body, as in `Map`.

    With ``group_by_key=True`` the state is per key: a `Table`'s static attributes for the key (loaded on a
    miss, written back to the cache and marked dirty) or ``state[key]`` of a dict.

    Examples
    --------
    >>> from storey import build_flow, Source, MapWithState, Reduce
    >>> def running(x, total):
    ...     total += x
    ...     return total, total
    >>> c = build_flow([Source(), MapWithState(0, running), Reduce([], lambda a, x: a + [x])]).run()
    >>> for i in [1, 2, 3]:
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    [1, 3, 6]
    """

    def __init__(
        self, initial_state: Any, fn: Callable[[Any, Any], Any], group_by_key: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not callable(fn):
            msg = f"step {self.name!r}: expected a callable, got {type(fn).__name__}"
            raise TypeError(msg)
        self._initial_state = initial_state
        self._fn = fn
        self._group_by_key = group_by_key
        self._state: Any = None
        self._table: Any = None

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        state = self._resolve_table(self._initial_state)
        self._table = state if hasattr(state, "get_or_load_key") else None
        self._state = state
        if hasattr(state, "close"):
            run.add_closeable(state)

    def _do(self, event: Event) -> Awaitable[Any] | None:
        if not self._group_by_key:
            return self._apply(event, self._state, None)
        key = event.key
        if self._table is not None:
            return self._with_table_state(event, key)
        try:
            state = self._state[key]
        except KeyError:
            msg = f"step {self.name!r}: no state for key {key!r}"
            raise KeyError(msg) from None
        except TypeError:
            msg = f"step {self.name!r}: key {key!r} is not hashable"
            raise TypeError(msg) from None
        return self._apply(event, state, key)

    async def _with_table_state(self, event: Event, key: Any) -> None:
        try:
            state = await self._table.get_or_load_key(key)
            r = self._apply(event, state, key)
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, event) from exc
        if r is not None:
            await r

    def _apply(self, event: Event, state: Any, key: Any) -> Awaitable[Any] | None:
        r = self._fn(self._element(event), state)
        if _awaitable(r):
            return self._resume(r, event, key)
        return self._then(r, event, key)

    async def _resume(self, pending: Awaitable[Any], event: Event, key: Any) -> None:
        try:
            r = await pending
        except Exception as exc:
            raise self._fail(exc, event) from exc
        nxt = self._then(r, event, key)
        if nxt is not None:
            await nxt

    def _then(self, r: Any, event: Event, key: Any) -> Awaitable[Any] | None:
        try:
            result, new_state = r
        except (TypeError, ValueError):
            msg = f"step {self.name!r}: the function must return (result, new_state), got {r!r}"
            raise self._fail(TypeError(msg), event) from None
        if not self._group_by_key:
            self._state = new_state
        elif self._table is not None:
            self._table[key] = new_state
        else:
            self._state[key] = new_state
        try:
            out = self._with_result(event, result)
        except Exception as exc:
            raise self._fail(exc, event) from exc
        return self._forward(out)


class MapClass(_FnStep):
    """Subclass and override ``do(self, element)`` (sync or async); its result becomes the body.

    Calling ``self.filter()`` inside `do` drops the event.

    Examples
    --------
    >>> from storey import build_flow, Source, MapClass, Reduce
    >>> class Double(MapClass):
    ...     def do(self, x):
    ...         if x < 0:
    ...             self.filter()
    ...         return 2 * x
    >>> c = build_flow([Source(), Double(), Reduce([], lambda a, x: a + [x])]).run()
    >>> for i in [1, -1, 2]:
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    [2, 4]
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self._call_do, **kwargs)
        self._filtered = False

    def filter(self) -> None:
        """Drop the event being processed; the return value of `do` is ignored."""
        self._filtered = True

    def do(self, element: Any) -> Any:
        """Override: compute the new body from the element."""
        raise NotImplementedError

    def _call_do(self, element: Any) -> Any:
        self._filtered = False
        return self.do(element)

    def _then(self, result: Any, event: Event) -> Awaitable[Any] | None:
        if self._filtered:
            self._filtered = False
            return None
        try:
            out = self._with_result(event, result)
        except Exception as exc:
            raise self._fail(exc, event) from exc
        return self._forward(out)
