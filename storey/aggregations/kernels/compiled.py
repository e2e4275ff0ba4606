"""Numba-compiled shapes of the kernel templates (optional: ``pip install storey[fast]``).

The same template statements as the CPython path are compiled with numba's defaults: no ``fastmath`` (so
no reassociation and no FMA contraction), no ``parallel``. Results are therefore bit-identical to the
CPython loop; the contract tests check it. Compiled functions are built lazily and memoised per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from storey._utils._imports import require
from storey.aggregations.kernels._codegen import compile_function
from storey.aggregations.kernels.base import Kernel, update_loop_source

__all__ = [
    "cache_dir",
    "compiled_update_many",
    "load_generated_module",
    "load_named_module",
    "njit",
    "njit_nogil",
]

_CACHE: dict[tuple[type, bool, bool], Callable[..., Any]] = {}


def njit(fn: Callable[..., Any], *, nogil: bool = False) -> Callable[..., Any]:
    """``numba.njit`` with the settings parity requires: no fastmath, no parallel.

    Functions defined in a real source file (the generated modules of `load_generated_module`, or storey's
    own) are cached on disk; exec-generated functions cannot be.
    """
    numba = require("numba")
    code = getattr(fn, "__code__", None)
    cache = code is not None and os.path.isfile(code.co_filename) and _CACHE_OK
    return numba.njit(fastmath=False, parallel=False, nogil=nogil, cache=cache)(fn)


def njit_nogil(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`njit` releasing the GIL while it runs (for long calls over arrays only, such as a batch of rows or
    a batch engine's kernels: other threads run meanwhile)."""
    return njit(fn, nogil=True)


_CACHE_OK = not os.environ.get("STOREY_NUMBA_NO_CACHE")


def cache_dir() -> Path | None:
    """Where generated modules (and numba's cache of them) live: ``$STOREY_CACHE_DIR`` or
    ``~/.cache/storey``; ``None`` when it is not writable."""
    root = os.environ.get("STOREY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "storey")
    path = Path(root) / "generated"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def load_generated_module(source: str, prefix: str) -> ModuleType:
    """Import generated `source` as a module whose file name is its content hash.

    A real file lets numba cache the compiled code across processes (the first compile of a runner takes
    seconds). Equal sources share one file; files are written atomically and never rewritten. Without a
    writable cache directory the source is executed in memory (compiled anew in each process).
    """
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    return load_named_module(f"{prefix}_{digest}", lambda: source)


def load_named_module(name: str, make_source: Callable[[], str]) -> ModuleType:
    """`load_generated_module` for a module named by the caller (a hash of what determines its source):
    `make_source` is called only when no file of that name is cached yet."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    folder = cache_dir()
    if folder is None:
        module = ModuleType(name)
        compile_function(make_source(), "__name__", module.__dict__, f"<{name}>")  # exec into its namespace
    else:
        path = folder / f"{name}.py"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                handle.write(make_source())
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def compiled_update_many(kernel: Kernel, capped: bool, prefixes: bool) -> Callable[..., Any]:
    """A compiled ``update_many(st, n, values, times_ns, cap)`` for `kernel` (arrays must be contiguous
    float64 / int64).

    Returns the final state, and with `prefixes` also one array per field.
    """
    key = (type(kernel), capped, prefixes)
    fn = _CACHE.get(key)
    if fn is None:
        src = update_loop_source(kernel, "update_many_nb", capped=capped, prefixes=prefixes, arrays=True)
        header = (
            f'"""Generated: update_many of {kernel.name!r}, capped={capped}, prefixes={prefixes}."""\n\n'
            "import math  # noqa: F401 - templates may use it\n\nimport numpy as np\n\n"
            "from storey.aggregations.kernels.compiled import njit\n\n\n@njit\n"
        )
        jitted = load_generated_module(header + src, f"storey_kernel_{kernel.name}").update_many_nb
        dummy_cap = 0.0

        def fn(st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None) -> Any:
            values = np.ascontiguousarray(values, dtype=np.float64)
            times_ns = np.ascontiguousarray(times_ns, dtype=np.int64)
            return jitted(st, n, values, times_ns, dummy_cap if cap is None else float(cap))

        _CACHE[key] = fn
    return fn


_INT64_POINTER: Any = None


def _make_int64_pointer() -> Any:
    """``int64_pointer(address)``: an int64 address as an ``int64*`` (for ``numba.carray``), made lazily."""
    global _INT64_POINTER
    if _INT64_POINTER is None:
        require("numba")
        from numba import types
        from numba.extending import intrinsic

        @intrinsic  # type: ignore[misc]
        def int64_pointer(typingctx: Any, address: Any) -> Any:
            if not isinstance(address, types.Integer):
                return None
            result = types.CPointer(types.int64)

            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                return builder.inttoptr(args[0], context.get_value_type(result))

            return result(types.int64), codegen

        _INT64_POINTER = int64_pointer
    return _INT64_POINTER


_PREFETCH: Any = None


def _make_prefetch() -> Any:
    """``prefetch(arr, i)``: a hint (``llvm.prefetch``, read, keep in all cache levels) that element `i` of
    C-contiguous `arr` (flat index) is needed soon. It reads and changes nothing, so results cannot depend
    on it."""
    global _PREFETCH
    if _PREFETCH is None:
        require("numba")
        from llvmlite import ir
        from numba import types
        from numba.core import cgutils
        from numba.extending import intrinsic

        @intrinsic  # type: ignore[misc]
        def prefetch(typingctx: Any, arr: Any, i: Any) -> Any:
            if not isinstance(arr, types.Array) or not isinstance(i, types.Integer):
                return None

            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                aryty, ity = signature.args
                ary = context.make_array(aryty)(context, builder, args[0])
                ptr = builder.gep(ary.data, [context.cast(builder, args[1], ity, types.intp)])
                ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
                i32 = ir.IntType(32)
                fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
                fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
                builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
                return context.get_dummy_value()

            return types.void(arr, i), codegen

        _PREFETCH = prefetch
    return _PREFETCH


def __getattr__(name: str) -> Any:
    # numba intrinsics imported by the generated modules (numba is imported only then)
    if name == "int64_pointer":
        return _make_int64_pointer()
    if name == "prefetch":
        return _make_prefetch()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
