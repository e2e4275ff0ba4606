"""`Flow`, the base class of every step, and the per-event forwarding protocol (spec STEPS.md §2–3).

How events move: the runtime calls ``head._do(event)``. A step does its work and hands the event on with
``self._forward(event)``. Both return ``None`` when everything downstream finished synchronously, or an
awaitable when some step needed to wait (an async user function, a full in-flight queue, …); the caller
awaits it before the next event enters. A chain of synchronous steps therefore runs as plain function
calls, and only the steps that really wait pay for coroutines.

Errors: a synchronous exception raised by an outlet's ``_do`` is wrapped by the caller's `_forward` into a
`FlowError` naming that outlet; a step that returns its own coroutine wraps its own exceptions with
`_fail`. A `FlowError` is never wrapped twice.

Batch lane: reader sources hand the runtime `EventBatch`es; ``_do_batch(batch)`` / ``_forward_batch(batch)``
mirror ``_do``/``_forward`` for whole chunks of rows. The default ``_do_batch`` builds the events and calls
``_do`` on each, so every step works unchanged; steps that can work on bodies override it (they raise their
own `FlowError` after forwarding the rows accepted before the failing one, `_fail_batch`). A batch reaches
only a single outlet whole; a fan-out goes per event. A step may thus see rows 0..k before the next step sees
row 0: only side effects shared between steps can tell (docs/streaming.md).
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Awaitable, Callable
from copy import copy
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from storey.errors import FlowError
from storey.event import Event

if TYPE_CHECKING:
    from storey.flow.batch import EventBatch
    from storey.flow.context import Context
    from storey.flow.runtime import Run

__all__ = ["Flow"]

logger = logging.getLogger("storey")

_BASE_KWARGS = ("name", "full_event", "termination_result_fn", "context")


def _keep_first(acc: Any, nxt: Any) -> Any:
    return acc if acc is not None else nxt


async def _raise_after(pending: Awaitable[Any], err: FlowError, cause: BaseException) -> None:
    await pending
    _raise(err, cause)


def _raise(err: FlowError, cause: BaseException) -> NoReturn:
    """Raise `err` for `cause`; a `FlowError` raised by user code goes on as it is."""
    if err is cause:
        raise err
    raise err from cause


class Flow:
    """Base class of every step.

    Parameters
    ----------
    name
        Used in errors, metrics and `repr`; defaults to the class name.
    full_event
        Give user functions a shallow copy of the `Event` instead of its body.
    termination_result_fn
        ``fn(acc, next)`` folding the termination results of the outlets (default: keep the first
        non-``None``).
    context
        A `Context`, used to resolve table names.

    Examples
    --------
    >>> from storey import build_flow, Source, Map, Reduce
    >>> c = build_flow([Source(), Map(lambda x: x * 2), Reduce(0, lambda a, x: a + x)]).run()
    >>> for i in range(4):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)
    12
    """

    _is_source: ClassVar[bool] = False
    _is_terminal: ClassVar[bool] = False

    def __init__(
        self,
        name: str | None = None,
        full_event: bool = False,
        termination_result_fn: Callable[[Any, Any], Any] | None = None,
        context: Context | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            _reject_unknown_kwargs(type(self), kwargs)
        self.name = name if name is not None else type(self).__name__
        self._full_event = bool(full_event)
        self._termination_result_fn = termination_result_fn or _keep_first
        self.context = context
        self._outlets: list[Flow] = []
        self._inlets: list[Flow] = []
        self._run: Run | None = None
        self._out1: Flow | None = None
        self._outs: tuple[Flow, ...] = ()
        self._n_inlets = 0
        self._term_count = 0

    # ----------------------------------------------------------------------------------------- graph
    def to(self, outlet: Flow) -> Flow:
        """Append `outlet` to this step's outlets and return it, so that calls chain."""
        if self._is_terminal:
            msg = f"{self.name!r} is a terminal step: nothing can follow it"
            raise ValueError(msg)
        if not isinstance(outlet, Flow):
            msg = f"step {self.name!r}: .to() takes a step, got {type(outlet).__name__}"
            raise TypeError(msg)
        self._outlets.append(outlet)
        outlet._inlets.append(self)
        return outlet

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ------------------------------------------------------------------------------------ run hooks
    def _init_run(self, run: Run) -> None:
        """Reset per-run state; called for every step, in graph walk order, before the first event."""
        self._run = run
        self._term_count = 0
        self._outs = tuple(self._outlets)
        self._out1 = self._outs[0] if len(self._outs) == 1 else None

    async def _start(self) -> None:
        """Async start hook (load schemas, resolve tables); called in walk order before the first event."""

    async def _resolve(self) -> None:
        """Second start hook, after every step's `_start` (e.g. resolve features against saved schemas)."""

    def _validate_graph(self, steps: list[Flow]) -> None:
        """Check constraints that involve other steps of the graph (raise `ValueError`)."""

    def _table_arg(self, table: Any) -> Any:
        """Validate a ``table`` argument: a table object, or a name when the step has a context."""
        if isinstance(table, str) and self.context is None:
            msg = f"step {self.name!r}: table {table!r} is given by name but the step has no context"
            raise TypeError(msg)
        return table

    def _resolve_table(self, table: Any) -> Any:
        """Resolve a table given by name through the step's context (at run start)."""
        if isinstance(self._table_arg(table), str):
            return self.context.get_table(table)  # type: ignore[union-attr]
        return table

    # ------------------------------------------------------------------------------------ per event
    def _do(self, event: Event) -> Awaitable[Any] | None:
        """Process one event; return ``None`` or an awaitable to be awaited before the next event."""
        return self._forward(event)

    def _element(self, event: Event) -> Any:
        """What a user function receives: the body, or a shallow copy of the event."""
        return copy(event) if self._full_event else event.body

    def _with_result(self, event: Event, result: Any) -> Event:
        """The event to forward for a function result (a new body, or an Event when `full_event`)."""
        if self._full_event:
            if not isinstance(result, Event):
                msg = (
                    f"step {self.name!r} has full_event=True, so its function must return an Event, "
                    f"got {type(result).__name__}"
                )
                raise TypeError(msg)
            return result
        out = copy(event)
        out.body = result
        return out

    def _forward(self, event: Event) -> Awaitable[Any] | None:
        """Hand `event` to the outlets (each gets its own shallow copy when there are several)."""
        o = self._out1
        if o is not None:  # `o._do_one(event)`, inlined: one call less per event and step
            try:
                r = o._do(event)
            except FlowError:
                raise
            except Exception as exc:
                raise o._fail(exc, event) from exc
            return None if r is None else o._guard(r, event)
        if self._outs:
            return self._forward_many(event, 0)
        return None

    # ------------------------------------------------------------------------------ batch lane
    def _do_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Process a batch of source rows (the batch lane, see `storey.flow.batch`).

        The default builds the events and calls `_do` on each in turn, exactly as the per-event path does.
        Steps that can work on bodies alone override it; they must raise a `FlowError` naming the step and
        the failing row's event, after forwarding the rows they accepted before it (`_fail_batch`).
        """
        return self._do_each(batch.events(), 0)

    def _do_each(self, events: list[Event], start: int) -> Awaitable[Any] | None:
        """`_do` on ``events[start:]`` one by one; on an awaitable, the rest continues after it."""
        return _each(self._run, self._do_one, events, start)

    def _do_one(self, event: Event) -> Awaitable[Any] | None:
        """`_do` with this step's error attribution (and its awaitable guarded the same way)."""
        try:
            r = self._do(event)
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, event) from exc
        return None if r is None else self._guard(r, event)

    async def _do_each_after(self, pending: Awaitable[Any], events: list[Event], start: int) -> None:
        await _each_after(self._run, self._do_one, pending, events, start)

    def _forward_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """Hand a batch on: whole to a single outlet, else event by event (fan-out copies per event)."""
        run = self._run
        if not batch.bodies or (run is not None and run.error is not None):
            return None  # nothing to hand on, or the flow failed (a background task) meanwhile
        o = self._out1
        if o is not None:
            return o._do_batch(batch)
        if self._outs:
            return self._forward_each(batch.events(), 0)
        return None

    def _forward_each(self, events: list[Event], start: int) -> Awaitable[Any] | None:
        return _each(self._run, self._forward, events, start)

    def _fail_batch(
        self, exc: BaseException, batch: EventBatch, j: int, accepted: EventBatch | None
    ) -> Awaitable[Any] | None:
        """Raise this step's `FlowError` for body `j` of `batch`, after forwarding the `accepted` rows.

        Nothing already accepted is lost: the rows the step processed before the failing one go downstream
        first (an error there wins, as it would have happened first on the per-event path).
        """
        err = self._fail(exc, batch.event(j))
        r = None if accepted is None else self._forward_batch(accepted)
        if r is None:
            _raise(err, exc)
        return _raise_after(r, err, exc)

    def _forward_many(self, event: Event, start: int) -> Awaitable[Any] | None:
        outs = self._outs
        for i in range(start, len(outs)):
            o = outs[i]
            c = copy(event)
            try:
                r = o._do(c)
            except FlowError:
                raise
            except Exception as exc:
                raise o._fail(exc, c) from exc
            if r is not None:
                return self._fan_out_rest(o._guard(r, c), event, i + 1)
        return None

    async def _fan_out_rest(self, pending: Awaitable[Any], event: Event, start: int) -> None:
        await pending
        r = self._forward_many(event, start)
        if r is not None:
            await r

    async def _guard(self, pending: Awaitable[Any], event: Event) -> Any:
        """Await this step's own awaitable, attributing any raw exception to this step."""
        try:
            return await pending
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, event) from exc

    async def _emit(self, event: Event) -> None:
        """Forward an event from async code (flushes, timers, workers) and wait until it is processed."""
        r = self._forward(event)
        if r is not None:
            await r

    def _fail(self, exc: BaseException, event: Event | None) -> FlowError:
        """The `FlowError` for `exc` raised by this step on `event` (``None`` during termination)."""
        if isinstance(exc, FlowError):
            return exc
        event_id = event.id if event is not None else None
        where = f"on event {event_id!r}" if event is not None else "during termination"
        origin = getattr(event, "origin", None)
        if origin is not None and origin[0] is not None:
            where += f" (file {origin[0]!r}, line/row {origin[1]})"
        err = FlowError(f"step {self.name!r} failed {where}: {exc!r}", step=self.name, event_id=event_id)
        err.__cause__ = exc
        return err

    # ---------------------------------------------------------------------------------- termination
    async def _terminate_from(self, inlet: Flow | None) -> Any:
        """Receive the termination marker from one inlet; act once it arrived from all of them."""
        self._term_count += 1
        if self._term_count < self._n_inlets:
            return None
        try:
            await self._drain()
            await self._flush()
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, None) from exc
        if not self._outs:
            try:
                return self._termination_result()
            except Exception as exc:
                raise self._fail(exc, None) from exc
        result: Any = None
        for i, o in enumerate(self._outs):
            try:
                r = await o._terminate_from(self)
            except FlowError:
                raise
            except Exception as exc:
                raise o._fail(exc, None) from exc
            result = r if i == 0 else self._termination_result_fn(result, r)
        return result

    async def _drain(self) -> None:
        """Complete in-flight work of earlier events (concurrent steps)."""

    async def _flush(self) -> None:
        """Termination flush; may forward events with `_emit`."""

    def _termination_result(self) -> Any:
        """A leaf's own termination result."""
        return None


def _each(
    run: Run | None, call: Callable[[Event], Awaitable[Any] | None], events: list[Event], start: int
) -> Awaitable[Any] | None:
    """``call`` on ``events[start:]`` one by one (stopping once the run failed); on an awaitable, the rest
    continues after it."""
    pending, i = _each_until(run, call, events, start)
    return None if pending is None else _each_after(run, call, pending, events, i)


def _each_until(
    run: Run | None, call: Callable[[Event], Awaitable[Any] | None], events: list[Event], start: int
) -> tuple[Awaitable[Any] | None, int]:
    for i in range(start, len(events)):
        if run is not None and run.error is not None:
            break
        r = call(events[i])
        if r is not None:
            return r, i + 1
    return None, len(events)


async def _each_after(
    run: Run | None,
    call: Callable[[Event], Awaitable[Any] | None],
    pending: Awaitable[Any] | None,
    events: list[Event],
    start: int,
) -> None:
    """Await `pending`, then the rest: a loop, not one coroutine nested in the next per waiting event (a
    chunk of thousands of such events would exceed the recursion limit)."""
    while pending is not None:
        await pending
        pending, start = _each_until(run, call, events, start)


def _reject_unknown_kwargs(cls: type, kwargs: dict[str, Any]) -> None:
    known: set[str] = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins
            continue
        known.update(p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL))
    known.discard("self")
    name = next(iter(kwargs))
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    msg = f"{cls.__name__}() got an unexpected keyword argument {name!r}{hint}"
    raise TypeError(msg)
