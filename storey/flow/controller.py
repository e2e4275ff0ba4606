"""Controllers: the sync `FlowController` (a façade over the one async runtime), `AsyncFlowController` and
`FlowAwaiter` (spec STEPS.md §4)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from storey.event import Event, _now_ns
from storey.flow.runtime import TERMINATE, AsyncInbox, AwaitableResult, Run, ThreadInbox, execute

if TYPE_CHECKING:
    from storey.sources.emit import _EmitSource

__all__ = ["AsyncFlowController", "FlowAwaiter", "FlowController", "iterate_batches"]


def _make_event(
    element: Any, key: Any, event_time: Any, run: Run, want_result: bool | None
) -> tuple[Event, AwaitableResult | None]:
    if isinstance(element, Event):
        ev = element
        if key is not None:
            ev.key = key
        if event_time is not None:
            ev.time = event_time
    else:
        ev = Event(element, key=key, time=event_time)
    res = None
    if want_result if want_result is not None else run.has_complete:
        res = AwaitableResult(run)
        run.pending.add(res)
        ev._result = res
    if ev._result is not None:
        run.results = True  # before the event is enqueued: from now on events go one by one (`execute`)
    return ev, res


class _ThreadRunner:
    """Runs `execute` on a fresh asyncio loop in a background thread."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, args=(main,), name="storey-flow", daemon=True)
        self._thread.start()

    def _target(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            self._result = asyncio.run(main())
        except BaseException as exc:
            self._error = exc

    def join(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class FlowController:
    """Controls a flow that runs its own asyncio loop in a background thread (`Source.run()`).

    `emit` may be called from several threads; user functions run in the flow's thread.
    """

    def __init__(self, source: _EmitSource, run: Run, buffer_size: int) -> None:
        self._source = source
        self._run = run
        self._inbox = ThreadInbox(buffer_size)
        self._terminated = False
        self._lock = threading.Lock()
        self._runner = _ThreadRunner(lambda: execute(run, self._inbox.batches(run)))

    def emit(
        self,
        element: Any,
        key: Any = None,
        event_time: Any = None,
        return_awaitable_result: bool | None = None,
    ) -> AwaitableResult | None:
        """Enqueue an element (or an `Event`); see spec STEPS.md §4.1.

        Returns an `AwaitableResult` when requested, or by default when the graph has a `Complete` step.
        """
        run = self._run
        if (
            key is None
            and event_time is None
            and (
                return_awaitable_result is False or (return_awaitable_result is None and not run.has_complete)
            )
            and run.error is None
            and not self._terminated
            and not isinstance(element, Event)
        ):  # the common case: a plain body, now, no result; the same event as `Event(element)`
            self._inbox.put_body(element, _now_ns())
            if run.error is not None:
                raise run.error
            return None
        if run.error is not None:
            raise run.error
        if self._terminated:
            msg = "emit() called after terminate()"
            raise RuntimeError(msg)
        ev, res = _make_event(element, key, event_time, run, return_awaitable_result)
        self._inbox.put(ev)
        if run.error is not None and res is None:
            raise run.error
        return res

    def terminate(self, wait: bool = False) -> Any:
        """Enqueue the termination marker (idempotent); with ``wait=True`` return `await_termination()`."""
        with self._lock:
            if not self._terminated:
                self._terminated = True
                self._inbox.put_terminate()
        if wait:
            return self.await_termination()
        return None

    def await_termination(self) -> Any:
        """Block until the flow finished; return the termination result or raise the `FlowError`."""
        return self._runner.join()


class AsyncFlowController:
    """Controls a flow running inside the caller's event loop (`AsyncSource.run()`)."""

    def __init__(self, source: _EmitSource, run: Run, buffer_size: int) -> None:
        self._source = source
        self._run = run
        self._inbox = AsyncInbox(buffer_size)
        self._terminated = False
        self._task = asyncio.get_running_loop().create_task(execute(run, self._inbox.batches(run)))

    def __await__(self) -> Any:
        async def _self() -> AsyncFlowController:
            return self

        return _self().__await__()

    async def emit(
        self, element: Any, key: Any = None, event_time: Any = None, await_result: bool = False
    ) -> Any:
        """Enqueue an element; with ``await_result=True`` return the `Complete` result (spec §4.2)."""
        if self._run.error is not None:
            raise self._run.error
        if self._terminated:
            msg = "emit() called after terminate()"
            raise RuntimeError(msg)
        ev, res = _make_event(element, key, event_time, self._run, True if await_result else False)
        await self._inbox.put(ev)
        if res is not None:
            return await res.await_result_async()
        if self._run.error is not None:
            raise self._run.error
        return None

    async def terminate(self) -> None:
        """Enqueue the termination marker (idempotent)."""
        if not self._terminated:
            self._terminated = True
            await self._inbox.put_terminate()

    async def await_termination(self) -> Any:
        """Wait for the flow to finish; return the termination result or raise the `FlowError`."""
        return await asyncio.shield(self._task)


class FlowAwaiter:
    """Returned by the `run()` of file and dataframe sources: the read runs in a background thread."""

    def __init__(self, main: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._runner = _ThreadRunner(main)

    def await_termination(self) -> Any:
        """Block until the source is exhausted and the flow terminated; return the result."""
        return self._runner.join()


async def iterate_batches(run: Run, batches: Any) -> AsyncIterator[Any]:
    """Adapt a (sync) iterable of event lists into the feed `execute` expects, ending with TERMINATE."""
    for batch in batches:
        yield batch
        if run.error is not None:
            return
    yield TERMINATE
