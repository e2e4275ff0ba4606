"""The flow runtime: graph building, the one async run loop and its controllers.

For compatibility with the original storey, this module also re-exports every name in `storey.steps`.
"""

from __future__ import annotations

from storey.flow.context import Context
from storey.flow.controller import AsyncFlowController, FlowAwaiter, FlowController
from storey.flow.graph import build_flow
from storey.flow.runtime import AwaitableResult
from storey.flow.step import Flow


def __getattr__(name: str) -> object:
    import storey.steps

    return getattr(storey.steps, name)


__all__ = [
    "AsyncFlowController",
    "AwaitableResult",
    "Context",
    "Flow",
    "FlowAwaiter",
    "FlowController",
    "build_flow",
]
