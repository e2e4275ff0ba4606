"""`build_flow` and graph validation; no execution here (spec STEPS.md §2.2–2.3)."""

from __future__ import annotations

from typing import Any

from storey.flow.step import Flow

__all__ = ["build_flow", "walk"]


def build_flow(steps: list[Any]) -> Flow:
    """Link steps into a graph and return its head.

    A plain step is connected to the current step and becomes current; a nested list is built into a branch
    hanging off the current step (which stays current), so consecutive lists fan out.

    Examples
    --------
    >>> from storey import Source, Map, Reduce
    >>> head = build_flow([Source(), Map(lambda x: x + 1), Reduce(0, lambda a, x: a + x)])
    >>> head.run().terminate(wait=True)
    0
    """
    if not isinstance(steps, list) or not steps:
        msg = "build_flow() needs a non-empty list of steps"
        raise ValueError(msg)
    head = _as_step(steps[0])
    current = head
    for item in steps[1:]:
        if isinstance(item, list):
            branch = build_flow(item)
            current.to(branch)
        else:
            step = _as_step(item)
            current.to(step)
            current = step
    return head


def _as_step(item: Any) -> Flow:
    if isinstance(item, list):
        return build_flow(item)
    if not isinstance(item, Flow):
        msg = f"build_flow() takes steps, got {type(item).__name__}: {item!r}"
        raise TypeError(msg)
    return item


def walk(head: Flow) -> list[Flow]:
    """All steps reachable from `head`, depth first in outlet order; validates sources and cycles."""
    order: list[Flow] = []
    seen: set[int] = set()
    on_path: set[int] = set()

    def visit(step: Flow) -> None:
        on_path.add(id(step))
        seen.add(id(step))
        order.append(step)
        for o in step._outlets:
            if id(o) in on_path:
                msg = f"the flow has a cycle through step {o.name!r}"
                raise ValueError(msg)
            if o._is_source:
                msg = f"source step {o.name!r} must be the head of the flow"
                raise ValueError(msg)
            if id(o) not in seen:
                visit(o)
        on_path.discard(id(step))

    visit(head)
    for step in order:
        step._n_inlets = 0
    for step in order:
        for o in step._outlets:
            o._n_inlets += 1
    for step in order:
        step._validate_graph(order)
    return order
