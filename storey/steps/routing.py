"""`Choice`: route each event to the first target whose condition holds (spec STEPS.md §6)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from storey.event import Event
from storey.flow.step import Flow

__all__ = ["Choice"]


class Choice(Flow):
    """Send each event to the first target whose ``condition(element)`` is truthy, else to `default`.

    Parameters
    ----------
    choice_array
        ``[(step_or_subflow, condition), ...]``; the targets become the step's outlets.
    default
        Target for events no condition accepts; without it they are dropped.

    Examples
    --------
    >>> from storey import build_flow, Source, Choice, Reduce
    >>> evens, odds = Reduce(0, lambda a, x: a + x), Reduce(0, lambda a, x: a + x)
    >>> c = build_flow([Source(), Choice([(evens, lambda x: x % 2 == 0)], default=odds)]).run()
    >>> for i in range(5):
    ...     _ = c.emit(i)
    >>> c.terminate(wait=True)  # the results fold keeps the first non-None: evens' 0 + 2 + 4
    6
    """

    def __init__(
        self,
        choice_array: list[tuple[Flow, Callable[[Any], Any]]],
        default: Flow | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._choices: list[tuple[Flow, Callable[[Any], Any]]] = []
        for pair in choice_array:
            target, condition = pair
            if not callable(condition):
                msg = f"step {self.name!r}: condition for {target!r} is not callable"
                raise TypeError(msg)
            self._choices.append((target, condition))
            if all(target is not o for o in self._outlets):
                super().to(target)
        self._default = default
        if default is not None and all(default is not o for o in self._outlets):
            super().to(default)

    def to(self, outlet: Flow) -> Flow:
        """Connecting an existing target again has no effect; any other step raises `ValueError`."""
        if any(outlet is o for o in self._outlets):
            return outlet
        msg = f"step {self.name!r}: a Choice routes only to its targets; add {outlet.name!r} as a choice"
        raise ValueError(msg)

    def _do(self, event: Event) -> Awaitable[Any] | None:
        element = self._element(event)
        for target, condition in self._choices:
            if condition(element):
                return target._do_one(event)
        if self._default is not None:
            return self._default._do_one(event)
        return None
