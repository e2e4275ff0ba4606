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
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["compile_function", "fold_constants", "indent", "rename", "safe_sqrt"]


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


def _constant(expr: ast.expr) -> tuple[bool, Any]:
    """``(True, value)`` when `expr` is made of literals and operators only (no names, no calls)."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Name | ast.Call | ast.Attribute | ast.Subscript | ast.NamedExpr | ast.Lambda):
            return False, None
        if isinstance(node, ast.comprehension | ast.Starred | ast.Await | ast.Yield | ast.YieldFrom):
            return False, None
    try:
        return True, eval(compile(ast.Expression(expr), "<constant>", "eval"), {"__builtins__": {}})
    except Exception:  # e.g. a division by zero: left to run (and fail) as written
        return False, None


def _foldable(value: Any) -> bool:
    """Values written back as literals: ints, bools and finite floats (``nan``/``inf`` have no literal)."""
    return type(value) in (int, bool) or (type(value) is float and math.isfinite(value))


class _Folder(ast.NodeTransformer):
    def __init__(self, constants: dict[str, Any], tables: dict[str, Sequence[Any]]) -> None:
        self.constants = constants
        self.tables = tables

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        self.generic_visit(node)
        table = self.tables.get(node.value.id) if isinstance(node.value, ast.Name) else None
        if table is None or not isinstance(node.ctx, ast.Load):
            return node
        known, index = _constant(node.slice)
        if known and type(index) is int and 0 <= index < len(table) and _foldable(table[index]):
            return ast.copy_location(ast.Constant(table[index]), node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if isinstance(node.ctx, ast.Load) and node.id in self.constants:
            return ast.copy_location(ast.Constant(self.constants[node.id]), node)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.stmt | None:
        self.generic_visit(node)
        target = node.targets[0]
        if len(node.targets) == 1 and isinstance(target, ast.Name) and target.id in self.constants:
            return None  # every read of it is now its value
        return node

    def visit_If(self, node: ast.If) -> Any:
        self.generic_visit(node)
        known, value = _constant(node.test)
        if not known:
            return node
        return node.body if value else node.orelse  # possibly nothing (`_filled` puts a ``pass`` back)

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        known, value = _constant(node.test)
        if not known:
            return node
        return node.body if value else node.orelse


def _filled(tree: ast.AST) -> None:
    """Put ``pass`` in every statement body that folding left empty."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and not body:
            node.body = [ast.Pass()]  # type: ignore[attr-defined]


def fold_constants(source: str, tables: dict[str, Sequence[Any]] | None = None) -> str:
    """`source` with, in each top-level function, every name bound once (by a statement of the function's own
    body) to a constant expression replaced by its value, and every ``if``/conditional expression whose test
    is then constant replaced by the branch it takes; repeated until nothing changes.

    `tables` names sequences whose items are known: ``name[i]`` with a constant ``i`` becomes the item (the
    caller guarantees that ``name`` is that sequence wherever it is read).

    The generated modules read run-time parameters into locals and guard each kernel's statements behind
    flags; once those are known constants of a plan, folding leaves only the code that plan runs (numba
    then compiles less, and better). Nothing else changes: the kept statements and their order are the
    same, so the folded function computes the same bits.

    Examples
    --------
    >>> source = "def f(x):\\n    w = 2 * 3\\n    on = w > 6\\n    if on:\\n        x += 1\\n    return x * w"
    >>> print(fold_constants(source))
    def f(x):
        return x * 6
    """
    with _AST_LOCK:
        tree = ast.parse(source)
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        while True:
            stores: dict[str, int] = {}
            for node in ast.walk(fn):
                if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                    stores[node.id] = stores.get(node.id, 0) + 1
                elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                    stores[node.target.id] = stores.get(node.target.id, 0) + 2  # a read and a store
            for arg in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs):
                stores[arg.arg] = stores.get(arg.arg, 0) + 2
            constants: dict[str, Any] = {}
            for stmt in fn.body:
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None
                if isinstance(target, ast.Name):
                    name = target.id
                    if stores.get(name) == 1:
                        known, value = _constant(stmt.value)
                        if known and _foldable(value):
                            constants[name] = value
            before = ast.dump(fn)
            _Folder(constants, tables or {}).visit(fn)
            _filled(fn)
            ast.fix_missing_locations(fn)
            if ast.dump(fn) == before:
                break
    with _AST_LOCK:
        return ast.unparse(tree)


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
