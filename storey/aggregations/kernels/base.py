"""The kernel and aggregation contracts (spec AGGREGATIONS.md §4.2, STYLE.md B.1).

A `Kernel` is a partial summary (a tuple of typed fields) with `init`, `update`, `update_many` and
`merge`. Built-in kernels define their arithmetic once as statement templates (see `_codegen`); the methods
below are generated from them, and the streaming state machine and the compiled batch paths splice the same
templates. A user kernel may instead override `update` and `merge` (and optionally `update_many`) directly;
it then works everywhere, only without fusion.

An `Aggregation` is one of the public feature names (``avg``, ``stddev`` …): data over kernels plus a
`finalize` expression.
"""

from __future__ import annotations

import builtins
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from storey.aggregations.kernels._codegen import compile_function, indent, names_in, rename, safe_sqrt

__all__ = ["Aggregation", "Kernel", "NUMBA_THRESHOLD"]

NUMBA_THRESHOLD = 512
"""`update_many` segments at least this long use the numba-compiled loop when numba is importable."""

_DTYPES = {"i8": np.int64, "f8": np.float64}


def _numba_enabled() -> bool:
    """Whether compiled paths may be used (numba importable and ``STOREY_DISABLE_NUMBA`` unset)."""
    if os.environ.get("STOREY_DISABLE_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Kernel:
    """Base class of kernels; subclasses set the class attributes and register with `register_kernel`.

    Attributes
    ----------
    name
        Registry key (``'count'``, ``'sum'`` …).
    fields
        ``((field, dtype), ...)`` with dtype ``'i8'`` or ``'f8'``; field names are unique across kernels.
    empty
        The empty summary returned by `init`.
    update_code, merge_code
        Statement templates (see `storey.aggregations.kernels._codegen`); ``None`` for a kernel that
        overrides `update` and `merge` itself.
    cap_fields
        Fields capped with ``x = cap if x > cap else x`` after every update when `max_value` is set.
    order_free
        ``merge(fold(A), fold(B))`` equals ``fold(A + B)`` bit for bit (selection and integer kernels);
        `storey.aggregations.checks` verifies it.
    """

    name: ClassVar[str]
    fields: ClassVar[tuple[tuple[str, str], ...]]
    empty: ClassVar[tuple[Any, ...]]
    update_code: ClassVar[str | None] = None
    merge_code: ClassVar[str | None] = None
    cap_fields: ClassVar[tuple[str, ...]] = ()
    order_free: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("update_code", "merge_code"):
            code = cls.__dict__.get(attr)
            if code is not None:
                setattr(cls, attr, textwrap.dedent(code).strip())
        if cls.__dict__.get("update_code") is not None and "update" not in cls.__dict__:
            cls.update = _make_update(cls)  # type: ignore[method-assign]
            cls._py_update_many = _make_update_many(cls)  # type: ignore[attr-defined]
        if cls.__dict__.get("merge_code") is not None and "merge" not in cls.__dict__:
            cls.merge = _make_merge(cls)  # type: ignore[method-assign]

    @property
    def field_names(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f for f, _ in self.fields)

    @property
    def fusable(self) -> bool:
        """Whether the kernel's arithmetic is given as templates (so it can be fused and compiled)."""
        return self.update_code is not None and self.merge_code is not None

    def init(self) -> tuple[Any, ...]:
        """The empty summary."""
        return self.empty

    def update(
        self, st: tuple[Any, ...], n: int, value: float, time_ns: int, cap: float | None = None
    ) -> tuple:
        """Add one value (`n` values already present); `cap` is ``None`` or the float64 cap."""
        raise NotImplementedError

    def merge(self, a: tuple[Any, ...], n_a: int, b: tuple[Any, ...], n_b: int) -> tuple[Any, ...]:
        """Merge two summaries, `a` preceding `b`; an empty operand returns the other unchanged."""
        raise NotImplementedError

    def update_many(
        self,
        st: tuple[Any, ...],
        n: int,
        values: Any,
        times_ns: Any,
        cap: float | None = None,
        prefixes: bool = False,
    ) -> Any:
        """Add a segment of values in array order: bit for bit the left fold of `update` from `st`.

        Parameters
        ----------
        values
            float64 values (skipped values already removed).
        times_ns
            int64 ns times, same length.
        prefixes
            Also return the state after each element.

        Returns
        -------
        tuple or (tuple, tuple[numpy.ndarray, ...])
            The final state; with ``prefixes=True`` also one array per field whose element ``i`` is the
            field after element ``i``.
        """
        values = np.asarray(values, dtype=np.float64)
        times_ns = np.asarray(times_ns, dtype=np.int64)
        fast = self._update_many_fast(st, n, values, times_ns, cap, prefixes)
        if fast is not None:
            return fast
        if len(values) >= NUMBA_THRESHOLD and self.fusable and _numba_enabled():
            from storey.aggregations.kernels.compiled import compiled_update_many

            return compiled_update_many(self, cap is not None, prefixes)(st, n, values, times_ns, cap)
        py = getattr(self, "_py_update_many", None)
        if py is not None:
            return py(st, n, values.tolist(), times_ns.tolist(), cap, prefixes)
        return self._looped_update_many(st, n, values, times_ns, cap, prefixes)

    def _update_many_fast(
        self, st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None, prefixes: bool
    ) -> Any:
        """An optional vectorised path with identical bits; ``None`` means use the loop."""
        return None

    def _looped_update_many(
        self, st: tuple, n: int, values: np.ndarray, times_ns: np.ndarray, cap: float | None, prefixes: bool
    ) -> Any:
        """Generic fallback for kernels without templates: literally loop over `update`."""
        rows = []
        for i, (v, t) in enumerate(zip(values.tolist(), times_ns.tolist(), strict=False)):
            st = self.update(st, n + i, v, t, cap)
            if prefixes:
                rows.append(st)
        if not prefixes:
            return st
        return st, self._columns(rows)

    def _columns(self, rows: Sequence[tuple]) -> tuple[np.ndarray, ...]:
        return tuple(
            np.array([r[j] for r in rows], dtype=_DTYPES[dtype]) for j, (_, dtype) in enumerate(self.fields)
        )

    def __repr__(self) -> str:
        return f"<kernel {self.name!r} fields={self.field_names}>"


def _fields_tuple(names: Sequence[str], prefix: str = "") -> str:
    return "(" + "".join(f"{prefix}{f}, " for f in names) + ")"


def _cap_lines(cls: type[Kernel], cap: str = "cap") -> str:
    return "".join(f"if {f} > {cap}:\n    {f} = {cap}\n" for f in cls.cap_fields)


def _make_update(cls: type[Kernel]) -> Any:
    names = [f for f, _ in cls.fields]
    src = (
        "def update(self, st, n, value, time_ns, cap=None):\n"
        f"    {_fields_tuple(names)} = st\n"
        "    v = value\n"
        "    t = time_ns\n"
        f"{indent(cls.update_code or '', 1)}\n"
        + (f"    if cap is not None:\n{indent(_cap_lines(cls), 2)}" if cls.cap_fields else "")
        + f"    return {_fields_tuple(names)}\n"
    )
    return compile_function(src, "update", {}, f"<storey kernel {cls.name}.update>")


def _make_merge(cls: type[Kernel]) -> Any:
    names = [f for f, _ in cls.fields]
    src = (
        "def merge(self, a, n_a, b, n_b):\n"
        "    if n_a == 0:\n"
        "        return b\n"
        "    if n_b == 0:\n"
        "        return a\n"
        f"    {_fields_tuple(names, 'a_')} = a\n"
        f"    {_fields_tuple(names, 'b_')} = b\n"
        "    a_n = n_a\n"
        "    b_n = n_b\n"
        f"{indent(cls.merge_code or '', 1)}\n"
        f"    return {_fields_tuple(names)}\n"
    )
    return compile_function(src, "merge", {}, f"<storey kernel {cls.name}.merge>")


def update_loop_source(
    cls: type[Kernel] | Kernel, fname: str, capped: bool, prefixes: bool, arrays: bool
) -> str:
    """The source of an `update_many` loop over the kernel's template.

    ``arrays=False`` gives the CPython shape (lists of Python scalars, `cap` tested at run time);
    ``arrays=True`` gives the numba shape (numpy arrays in and out, `cap` baked in by `capped`).
    Both shapes run the template once per element with ``n = n0 + i``, exactly as looped `update`.
    """
    names = [f for f, _ in cls.fields]
    dtypes = {"i8": "np.int64", "f8": "np.float64"}
    lines = [f"def {fname}(st, n, values, times_ns, cap{'' if arrays else ', prefixes'}):"]
    lines.append("    _n0 = n")
    lines.append(f"    {_fields_tuple(names)} = st")
    lines.append("    _m = len(values)")
    want_prefix = prefixes if arrays else True
    if want_prefix:
        for f, dt in cls.fields:
            if arrays:
                lines.append(f"    _p_{f} = np.empty(_m, dtype={dtypes[dt]})")
            else:
                lines.append(f"    _p_{f} = [None] * _m if prefixes else None")
    lines.append("    for _i in range(_m):")
    lines.append("        n = _n0 + _i")
    lines.append("        v = values[_i]")
    lines.append("        t = times_ns[_i]")
    lines.append(indent(cls.update_code or "", 2))
    if cls.cap_fields and (capped or not arrays):
        caps = indent(_cap_lines(cls), 3 if not arrays else 2)
        lines.append("        if cap is not None:\n" + caps if not arrays else caps)
    if want_prefix:
        if not arrays:
            lines.append("        if prefixes:")
        for f in names:
            lines.append(f"        {'    ' if not arrays else ''}_p_{f}[_i] = {f}")
    if arrays and prefixes:
        lines.append(f"    return {_fields_tuple(names)}, {_fields_tuple(names, '_p_')}")
    elif arrays:
        lines.append(f"    return {_fields_tuple(names)}")
    else:
        lines.append("    if prefixes:")
        lines.append(f"        return {_fields_tuple(names)}, {_fields_tuple(names, '_p_')}")
        lines.append(f"    return {_fields_tuple(names)}")
    return "\n".join(line for line in lines if line.strip()) + "\n"


def _make_update_many(cls: type[Kernel]) -> Any:
    src = update_loop_source(cls, "update_many", capped=True, prefixes=True, arrays=False)
    loop = compile_function(src, "update_many", {}, f"<storey kernel {cls.name}.update_many>")
    dtypes = [_DTYPES[dt] for _, dt in cls.fields]

    def py_update_many(
        self: Kernel, st: tuple, n: int, values: list, times: list, cap: Any, prefixes: bool
    ) -> Any:
        out = loop(st, n, values, times, cap, prefixes)
        if not prefixes:
            return out
        state, cols = out
        return state, tuple(np.array(c, dtype=d) for c, d in zip(cols, dtypes, strict=False))

    return py_update_many


class Aggregation:
    """One of the public aggregation names: kernels plus a finalisation expression (§3.2).

    Parameters
    ----------
    name
        The feature family name (``'avg'`` …).
    kernels
        The kernels it reads, ``'count'`` first.
    expr
        A Python expression over the summary's fields (``n`` and the kernels' fields), evaluated when
        ``n > 0``; ``sqrt`` (NaN for negative input) and ``NAN`` are available.
    empty
        The result over an empty window (``n == 0``).

    Examples
    --------
    >>> from storey.aggregations.kernels import get_aggregation
    >>> get_aggregation("stdvar").finalize({"n": 3, "mean": 2.0, "m2": 2.0})
    1.0
    >>> get_aggregation("min").finalize({"n": 0, "mn": math.inf})
    nan
    """

    def __init__(self, name: str, kernels: tuple[str, ...], expr: str, empty: int | float) -> None:
        self.name = name
        self.kernels = kernels
        self.expr = expr
        self.empty = empty
        self.reads = tuple(sorted(names_in(expr) - set(FINALIZE_NAMESPACE) - set(dir(builtins))))
        reads = "".join(f"    {f} = summary[{f!r}]\n" for f in self.reads if f != "n")
        src = (
            "def finalize(summary):\n"
            "    n = summary['n']\n"
            "    if n == 0:\n"
            "        return EMPTY\n"
            f"{reads}"
            f"    return {expr}\n"
        )
        ns = dict(FINALIZE_NAMESPACE, EMPTY=empty)
        self._finalize = compile_function(src, "finalize", ns, f"<storey aggregation {name}.finalize>")

    def finalize(self, summary: Mapping[str, int | float]) -> int | float:
        """The feature value of a window summary (a mapping of field name to value)."""
        return self._finalize(summary)

    def __repr__(self) -> str:
        return f"<aggregation {self.name!r} kernels={self.kernels} expr={self.expr!r}>"


FINALIZE_NAMESPACE: dict[str, Any] = {"sqrt": safe_sqrt, "NAN": math.nan}
"""Names available to finalisation expressions (the numba path maps them to compiled equivalents)."""


def rename_temporaries(code: str, prefix: str) -> str:
    """Prefix the ``_``-temporaries of a template so that fused templates do not collide."""
    return rename(code, lambda name: prefix + name if name.startswith("_") else None)
