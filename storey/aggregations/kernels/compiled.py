"""Numba-compiled shapes of the kernel templates (optional: ``pip install storey[fast]``).

The same template statements as the CPython path are compiled with numba's defaults: no ``fastmath`` (so
no reassociation and no FMA contraction), no ``parallel``. Results are therefore bit-identical to the
CPython loop; the contract tests check it. Compiled functions are built lazily and memoised per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from storey._utils._imports import require
from storey.aggregations.kernels._codegen import compile_function
from storey.aggregations.kernels.base import Kernel, update_loop_source

__all__ = ["compiled_update_many", "njit"]

_CACHE: dict[tuple[type, bool, bool], Callable[..., Any]] = {}


def njit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` with the settings parity requires: no fastmath, no parallel, no caching of
    exec-generated code."""
    numba = require("numba")
    return numba.njit(fastmath=False, parallel=False, cache=False)(fn)


def compiled_update_many(kernel: Kernel, capped: bool, prefixes: bool) -> Callable[..., Any]:
    """A compiled ``update_many(st, n, values, times_ns, cap)`` for `kernel` (arrays must be contiguous
    float64 / int64).

    Returns the final state, and with `prefixes` also one array per field.
    """
    key = (type(kernel), capped, prefixes)
    fn = _CACHE.get(key)
    if fn is None:
        src = update_loop_source(kernel, "update_many_nb", capped=capped, prefixes=prefixes, arrays=True)
        name = f"<storey kernel {kernel.name}.update_many numba capped={capped} prefixes={prefixes}>"
        jitted = njit(compile_function(src, "update_many_nb", {"np": np, "math": math}, name))
        dummy_cap = 0.0

        def fn(st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None) -> Any:
            values = np.ascontiguousarray(values, dtype=np.float64)
            times_ns = np.ascontiguousarray(times_ns, dtype=np.int64)
            return jitted(st, n, values, times_ns, dummy_cap if cap is None else float(cap))

        _CACHE[key] = fn
    return fn
