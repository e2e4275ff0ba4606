"""Source generation from kernel templates: one arithmetic definition, several compiled shapes.

A kernel writes its arithmetic once, as short Python statement templates (``update_code``, ``merge_code``).
This module turns those templates into the kernel's own ``update``/``merge``/``update_many`` methods, and
`storey.aggregations.plan` splices the very same statements into the fused per-aggregator functions of the
streaming state machine and into numba-compilable functions. Every shape evaluates the same expression
trees in the same order, so they give the same bits; tests check it.

Template conventions
--------------------
``update_code``
    reads the kernel's fields (current values), ``n`` (values already present), ``v`` (float64 value) and
    ``t`` (int ns time) and assigns the kernel's fields.
``merge_code``
    reads ``a_<field>``, ``b_<field>``, ``a_n`` and ``b_n`` (both operands non-empty, ``a`` precedes ``b``)
    and assigns the kernel's fields.
Names starting with ``_`` are temporaries; they are renamed per kernel when templates are fused.
"""

from __future__ import annotations

import ast
import math
import textwrap
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["compile_function", "indent", "rename", "safe_sqrt"]


_AST_LOCK = threading.Lock()
"""CPython 3.11's AST converter keeps its recursion depth in interpreter-global state, so `ast.parse` in two
threads at once (flows start in their own threads) can fail with ``SystemError: AST constructor recursion
depth mismatch`` later; every parse here is serialised."""


def safe_sqrt(x: float) -> float:
    """``sqrt(x)`` for ``x >= 0`` (including ``-0.0`` and ``+inf``), NaN otherwise (never raises).

    Examples
    --------
    >>> safe_sqrt(4.0), safe_sqrt(-1.0)
    (2.0, nan)
    """
    return math.sqrt(x) if x >= 0.0 else math.nan


def rename(code: str, mapping: Callable[[str], str | None]) -> str:
    """Rename the variables of a statement template; `mapping` returns the new name or ``None`` to keep it.

    Renaming works on the syntax tree, so the expressions (and their evaluation order) are unchanged.

    Examples
    --------
    >>> rename("_d = v - mean\\nmean = mean + _d", lambda x: "_k1" + x if x.startswith("_") else None)
    '_k1_d = v - mean\\nmean = mean + _k1_d'
    """
    with _AST_LOCK:
        tree = ast.parse(textwrap.dedent(code))

    class _Renamer(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.Name:
            new = mapping(node.id)
            if new is not None:
                node.id = new
            return node

    with _AST_LOCK:
        return ast.unparse(_Renamer().visit(tree))


def names_in(code: str) -> set[str]:
    """All variable names a template or expression mentions."""
    with _AST_LOCK:
        tree = ast.parse(textwrap.dedent(code))
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def indent(code: str, level: int) -> str:
    """Indent every line of `code` by `level` × 4 spaces."""
    return textwrap.indent(code, "    " * level)


def compile_function(source: str, name: str, namespace: dict[str, Any], filename: str) -> Any:
    """Execute generated `source` and return the function called `name` defined by it.

    The source is registered in `linecache` so that tracebacks and `inspect.getsource` show it.
    """
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    code = compile(source, filename, "exec")
    exec(code, namespace)
    return namespace[name]
