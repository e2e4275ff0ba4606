"""Best of N: this shared 2-core VM varies a lot between runs, so the scripts can repeat a measurement and
keep the best one (for every engine alike)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fastest_run(run: Callable[[], dict[str, Any]], repeat: int) -> dict[str, Any]:
    """The measurement with the highest ``events_per_s`` of `repeat` calls of `run`."""
    return max((run() for _ in range(max(1, repeat))), key=lambda r: r["events_per_s"])


def shortest(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The shortest wall time of `repeat` calls of `fn` (seconds), and the last call's result."""
    out = None
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
