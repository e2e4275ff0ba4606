"""The ONE async run loop (spec STEPS.md §3–4).

`execute` drives a graph from a feed of event batches inside the current asyncio loop. The sync
`FlowController` runs the same coroutine in a background thread; file sources run it directly. Nothing else
processes events.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any

from storey.errors import FlowError
from storey.event import Event
from storey.flow.batch import EventBatch
from storey.flow.graph import walk
from storey.flow.step import Flow

__all__ = ["AwaitableResult", "Run", "execute"]

logger = logging.getLogger("storey")

TERMINATE = object()

_yield_gil = functools.partial(time.sleep, 0)


class AwaitableResult:
    """The result slot of one emitted event, settled by the first `Complete` reached by any copy.

    If no `Complete` fires, it settles to ``None`` once every copy of the event has finished. On a flow
    error, `await_result` raises the `FlowError`.
    """

    __slots__ = ("_done", "_error", "_futures", "_holds", "_run", "_signal", "_value")

    def __init__(self, run: Run | None = None) -> None:
        self._holds = 0
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._signal = threading.Event()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._run = run

    def _release(self) -> None:
        self._holds -= 1
        if self._holds <= 0 and not self._done:
            self._settle(None, None)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._value = value
        self._error = error
        self._signal.set()
        for loop, fut in self._futures:
            loop.call_soon_threadsafe(_set_future, fut)
        self._futures.clear()
        if self._run is not None:
            self._run.pending.discard(self)

    def await_result(self, timeout: float | None = None) -> Any:
        """Block until the result is settled and return it; raise the `FlowError` on failure.

        Raises
        ------
        TimeoutError
            Not settled within `timeout` seconds.
        """
        if not self._signal.wait(timeout):
            msg = f"the event's result was not settled within {timeout} s"
            raise TimeoutError(msg)
        if self._error is not None:
            raise self._error
        return self._value

    async def await_result_async(self) -> Any:
        """Async form of `await_result`."""
        if not self._done:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._futures.append((loop, fut))
            if self._done:  # settled between the check and the append
                return self.await_result(0)
            await fut
        if self._error is not None:
            raise self._error
        return self._value


def _set_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Run:
    """State of one run of a graph: steps, closeables, pending results, the first error."""

    def __init__(self, head: Flow) -> None:
        if getattr(head, "_active_run", None) is not None:
            msg = f"flow {head.name!r} is already running; wait for its termination before running it again"
            raise RuntimeError(msg)
        self.head = head
        self.steps = walk(head)
        self.error: FlowError | None = None
        self.pending: set[AwaitableResult] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closeables: list[Any] = []
        self._closeable_ids: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wakers: list[Any] = []
        from storey.steps.outputs import Complete

        self.has_complete = any(isinstance(s, Complete) for s in self.steps)
        # Sticky: set (before the event is enqueued) once any emitted event carries a result slot. From then
        # on emitted events go one by one, with the per-event result bookkeeping of `execute`.
        self.results = False
        head._active_run = self  # type: ignore[attr-defined]
        try:
            for step in self.steps:
                step._init_run(self)
        except BaseException:
            head._active_run = None  # type: ignore[attr-defined]
            raise

    # -------------------------------------------------------------------------------- bookkeeping
    def add_closeable(self, obj: Any) -> None:
        """Register an object with an async ``close()`` to close once at the end of the run."""
        if obj is not None and id(obj) not in self._closeable_ids:
            self._closeable_ids.add(id(obj))
            self._closeables.append(obj)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background coroutine; its failure fails the flow."""
        assert self.loop is not None
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.fail(exc if isinstance(exc, FlowError) else FlowError(f"background task failed: {exc!r}"))

    def on_fail(self, waker: Any) -> None:
        """Call ``waker()`` when the run fails (to wake a feed waiting for input)."""
        self._wakers.append(waker)

    def fail(self, error: BaseException, step: Flow | None = None, event: Event | None = None) -> None:
        """Mark the flow failed (first error wins) and deliver the error to every pending result."""
        if not isinstance(error, FlowError):
            error = (step or self.head)._fail(error, event)
        if self.error is not None:
            if error is not self.error:
                logger.error("storey: a further error after the flow failed: %r", error)
            return
        self.error = error
        for res in list(self.pending):
            res._settle(None, error)
        for waker in self._wakers:
            try:
                waker()
            except Exception:  # pragma: no cover - defensive
                logger.exception("storey: waker failed")

    # ---------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        for hook in ("_start", "_resolve"):
            for step in self.steps:
                try:
                    await getattr(step, hook)()
                except FlowError:
                    raise
                except Exception as exc:
                    raise step._fail(exc, None) from exc

    async def close(self) -> None:
        """Close closeables once: Tables first (flushing unless the flow failed), then the rest."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        failed = self.error is not None
        tables = [c for c in self._closeables if hasattr(c, "_close_after_run")]
        others = [c for c in self._closeables if not hasattr(c, "_close_after_run")]
        for t in tables:
            try:
                await t._close_after_run(discard=failed)
            except Exception as exc:
                if failed:
                    logger.error("storey: error while closing %r after a failure: %r", t, exc)
                else:
                    self.fail(exc)
        for c in others:
            try:
                r = c.close()
                if isinstance(r, Awaitable):
                    await r
            except Exception as exc:
                if failed:
                    logger.error("storey: error while closing %r after a failure: %r", c, exc)
                else:
                    self.fail(exc)
        self.head._active_run = None  # type: ignore[attr-defined]


async def execute(run: Run, feed: AsyncIterator[Any]) -> Any:
    """Push the feed's batches through the graph, terminate, close; return the termination result.

    The feed yields lists of `Event`s, `EventBatch`es of reader sources, and finally the `TERMINATE`
    sentinel itself (nothing follows it). A batch takes the batch lane, ``head._do_batch(batch)`` (see
    `storey.flow.batch`); a list of emitted events too (as `EventBatch.of_events`), unless the run has
    events with result slots (`Run.results`): then each event goes through ``head._do`` with its result
    held until the graph is done with it.
    """
    head = run.head
    result: Any = None
    try:
        await run.start()
        async for batch in feed:
            if batch is TERMINATE:
                break
            if type(batch) is not EventBatch:
                if run.results:
                    await _execute_each(run, batch)
                    if run.error is not None:
                        break
                    continue
                batch = EventBatch.of_events(batch)
            try:
                r = head._do_batch(batch)
                if r is not None:
                    await r
            except FlowError as err:
                run.fail(err)
            if run.error is not None:
                break
        if run.error is None:
            try:
                result = await head._terminate_from(None)
            except FlowError as err:
                run.fail(err)
            except Exception as exc:
                run.fail(head._fail(exc, None))
    except FlowError as err:
        run.fail(err)
    except BaseException as exc:
        run.fail(FlowError(f"flow {head.name!r} failed: {exc!r}"))
        if not isinstance(exc, Exception):
            await run.close()
            raise
    await run.close()
    for res in list(run.pending):
        res._settle(None, run.error)
    if run.error is not None:
        raise run.error
    return result


async def _execute_each(run: Run, events: list[Event]) -> None:
    """The per-event path: ``head._do`` on each event, holding its result slot while the graph works."""
    head = run.head
    for ev in events:
        if run.error is not None:
            return
        res = ev._result
        if res is not None:
            res._holds += 1
        try:
            r = head._do(ev)
            if r is not None:
                await head._guard(r, ev)
        except FlowError as err:
            run.fail(err)
        except Exception as exc:
            run.fail(head._fail(exc, ev))
        if res is not None:
            res._release()


def _unpair(items: list[Any], terminating: bool) -> tuple[list[Any] | EventBatch, bool]:
    """A drained `ThreadInbox`: the `EventBatch` of its bodies when it holds plain bodies only, else its
    events (plain bodies become events as ``Event(body)`` would), cut at `TERMINATE` (see `_cut`)."""
    bodies = items[0::2]
    times = items[1::2]
    if None not in times:
        return EventBatch.of_bodies(bodies, times), False
    events = [
        body if t is None else Event._from_ns(body, None, t) for body, t in zip(bodies, times, strict=True)
    ]
    return _cut(events, terminating)


def _cut(batch: list[Any], terminating: bool) -> tuple[list[Any], bool]:
    """The events of a drained batch up to `TERMINATE`, and whether it held `TERMINATE`.

    Only a batch drained after `TERMINATE` was put (`terminating`) is searched, so the hot path never
    compares every event with the marker.
    """
    if terminating:
        for i, item in enumerate(batch):
            if item is TERMINATE:
                return batch[:i], True
    return batch, False


class ThreadInbox:
    """A bounded queue fed from user threads and drained in batches by the run loop.

    The queue holds ``body, time_ns`` pairs (`put_body`). `put` takes no lock on its fast path (room in the
    queue, the loop not asleep): under the GIL one ``list +=`` of a pair is atomic, and the loop drains by
    slicing off the items it counted (always whole pairs), so items appended meanwhile stay queued. Waking
    the loop follows Dekker's order: the loop publishes its waiter, then looks at the queue again before
    sleeping; `put` appends, then looks for a waiter. The lock is taken only to wake the loop, to block
    while the queue is full, and to wake blocked producers. The bound is checked before the append, so
    producers racing on the last free place may overshoot it by at most the number of racing threads minus
    one.

    Before sleeping on an empty queue the loop yields the GIL once (``time.sleep(0)``), so that a producer
    in the middle of a burst fills the queue instead of waking the loop for every few events: batches get
    large, wake-ups (a self-pipe write each) rare. An idle producer costs the loop nothing but that call.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: list[Any] = []
        self._cond = threading.Condition(threading.Lock())
        self._limit = 2 * maxsize  # two list items per queued element
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._blocked = 0  # producers waiting for room (read by the loop after each drain)
        self._terminating = False  # TERMINATE was put: drained batches are searched for it

    def put(self, item: Any) -> None:
        """Enqueue `item` (an `Event` or `TERMINATE`); block while the queue is full; drop it silently once
        the inbox is closed."""
        self.put_body(item, None)

    def put_body(self, body: Any, time_ns: int | None) -> None:
        """Enqueue a body emitted at `time_ns` (``None``: `body` is an `Event` or `TERMINATE`).

        The queue holds ``body, time_ns`` pairs, each added by one ``list +=`` (atomic under the GIL), so a
        plain body needs no `Event` object (and nothing the garbage collector tracks) until a step needs it.
        """
        items = self._items
        if len(items) >= self._limit or self._closed:
            self._put_slow(body, time_ns)
            return
        items += (body, time_ns)
        if self._waiter is not None:
            self._wake()

    def put_terminate(self) -> None:
        """Enqueue the `TERMINATE` marker, behind every item put before."""
        self._terminating = True  # before the marker can be drained
        self.put(TERMINATE)

    def _put_slow(self, body: Any, time_ns: int | None) -> None:
        with self._cond:
            self._blocked += 1
            try:
                while len(self._items) >= self._limit and not self._closed:
                    self._cond.wait()
            finally:
                self._blocked -= 1
            if self._closed:
                return
            self._items += (body, time_ns)
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        with self._cond:
            waiter = self._waiter
            self._waiter = None
        if waiter is not None:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_set_future, waiter)

    def close(self) -> None:
        """Stop accepting items and wake everyone (used when the flow failed)."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
            waiter = self._waiter
            self._waiter = None
        if waiter is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(_set_future, waiter)

    def _drain(self) -> list[Any]:
        items = self._items
        n = len(items)
        batch = items[:n]
        del items[:n]  # only what was counted: items appended meanwhile stay
        if self._blocked:
            with self._cond:
                self._cond.notify_all()
        return batch

    async def batches(self, run: Run) -> AsyncIterator[Any]:
        """Drained batches, then `TERMINATE` (or nothing more once the inbox is closed): an `EventBatch` of
        the bodies when only plain bodies were queued, else a list of events."""
        loop = self._loop = asyncio.get_running_loop()
        run.on_fail(self.close)
        items = self._items
        while True:
            if items and not self._closed:
                batch, done = _unpair(self._drain(), self._terminating)
                if batch:
                    yield batch
                    if run.error is not None:
                        return
                if done:
                    yield TERMINATE
                    return
                continue
            if self._closed:
                return
            _yield_gil()  # running producers fill the queue meanwhile: larger batches, fewer wake-ups
            if items:
                continue
            fut = loop.create_future()
            self._waiter = fut
            if items or self._closed:  # appended before the waiter was visible: no wake-up will come
                self._waiter = None
                continue
            await fut


class AsyncInbox:
    """A bounded queue fed by coroutines on the run's own loop, drained in batches."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._closed = False
        self._terminating = False

    async def put(self, item: Any) -> None:
        while len(self._items) >= self._maxsize and not self._closed:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        if self._closed:
            return
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def put_terminate(self) -> None:
        """Enqueue the `TERMINATE` marker, behind every item put before."""
        self._terminating = True
        await self.put(TERMINATE)

    def close(self) -> None:
        self._closed = True
        self._items.clear()
        for fut in (self._waiter, self._room):
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def batches(self, run: Run) -> AsyncIterator[Any]:
        """Drained lists of events, then `TERMINATE` (or nothing more once the inbox is closed)."""
        run.on_fail(self.close)
        loop = asyncio.get_running_loop()
        while True:
            if self._items:
                batch = list(self._items)
                self._items.clear()
                if self._room is not None and not self._room.done():
                    self._room.set_result(None)
                batch, done = _cut(batch, self._terminating)
                if batch:
                    yield batch
                    if run.error is not None:
                        return
                if done:
                    yield TERMINATE
                    return
            elif self._closed:
                return
            else:
                self._waiter = loop.create_future()
                await self._waiter
