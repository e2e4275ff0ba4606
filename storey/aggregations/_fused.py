"""Fused per-aggregator functions, generated from the kernel templates (no arithmetic of its own).

For one aggregator, the streaming state machine needs three hot functions. Calling each kernel's
``update``/``merge`` through the generic tuple interface costs a Python call and a tuple per kernel per
event; instead the kernels' own template statements are spliced, unchanged, into one function per shape:

``update_row(row, v, t)``
    the updated tile row (a tuple of every maintained field, ``n`` first): kernels in canonical order with
    ``count`` last (the others read ``n`` = values already present), then the caps;
``extend(acc, rows, start, stop)``
    the left fold ``acc = merge(acc, rows[j])`` for ``j = start … stop - 1`` over non-empty tile rows,
    returning a new accumulator (the emitted kernels' fields, plus the capped-count sum when
    ``max_value`` is set);
``first_acc(row)``
    the accumulator holding one tile row;
``emit(accs, cur, out)`` / ``emit_values(accs, cur)``
    for each window, ``merge(accs[w], cur)`` (an absent operand is the empty summary, so the other one is
    taken unchanged), then each aggregation's finalisation, written to ``out`` in feature order (or
    returned as a tuple).

Kernels without templates (user kernels overriding ``update``/``merge``) are called through their
methods at the same place in the order, so fusion never changes which operations run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.aggregations.kernels._codegen import compile_function, indent
from storey.aggregations.kernels.base import FINALIZE_NAMESPACE, Kernel, rename_temporaries

__all__ = ["FusedFunctions", "fuse"]

_CC = "_cc"  # the capped-count accumulator (Σ min(max_value, n) over tiles, oldest → newest)


@dataclass(frozen=True)
class FusedFunctions:
    """The generated functions of one aggregator plus their layout."""

    row_fields: tuple[str, ...]
    acc_fields: tuple[str, ...]
    empty_row: tuple[Any, ...]
    update_row: Any
    first_acc: Any
    extend: Any
    emit: Any
    emit_values: Any
    source: str


def _tuple(names: Sequence[str], prefix: str = "") -> str:
    return "(" + "".join(f"{prefix}{f}, " for f in names) + ")"


def _unpack(target_fields: Sequence[str], wanted: Sequence[str], prefix: str) -> str:
    """``(b_n, _, b_mean, …)``: unpack a row, keeping only the wanted fields."""
    return "(" + "".join(f"{prefix}{f}, " if f in wanted else "_, " for f in target_fields) + ")"


def _update_block(kernels: Sequence[tuple[int, Kernel]], capped: bool) -> str:
    """Statements updating the fields of ``(index, kernel)`` pairs with one value (``n``, ``v``, ``t``).

    Kernels run in canonical order with ``count`` last; caps (``CAP``) follow each kernel. Shared by the
    fused CPython functions, `storey.aggregations.runner` and `storey.frames._codegen`: keep the name.
    """
    lines = []
    ordered = [ik for ik in kernels if "n" not in ik[1].field_names] + [
        ik for ik in kernels if "n" in ik[1].field_names
    ]
    for i, k in ordered:
        if k.update_code is None:
            fields = _tuple(k.field_names)
            lines.append(f"{fields} = _K{i}.update({fields}, n, v, t, {'CAP' if capped else 'None'})")
            continue
        lines.append(rename_temporaries(k.update_code, f"_k{i}"))
        if capped:
            lines.extend(f"if {f} > CAP:\n    {f} = CAP" for f in k.cap_fields)
    return "\n".join(lines)


def _merge_block(kernels: Sequence[tuple[int, Kernel]]) -> str:
    """Statements merging ``a_<field>`` (older) and ``b_<field>`` (newer, both non-empty) into ``<field>``.

    Shared by the fused CPython functions, `storey.aggregations.runner` and `storey.frames._codegen`.
    """
    lines = []
    for i, k in kernels:
        if k.merge_code is None:
            a, b, out = _tuple(k.field_names, "a_"), _tuple(k.field_names, "b_"), _tuple(k.field_names)
            lines.append(f"{out} = _K{i}.merge({a}, a_n, {b}, b_n)")
        else:
            lines.append(rename_temporaries(k.merge_code, f"_k{i}"))
    return "\n".join(lines)


def fuse(
    kernel_names: Sequence[str],
    aggregations: Sequence[str],
    features: Sequence[Sequence[str]],
    cap: float | None,
    count_cap: int | float | None,
    n_windows: int,
    label: str,
) -> FusedFunctions:
    """Generate the fused functions of one aggregator.

    Parameters
    ----------
    kernel_names
        Every maintained kernel in canonical order, ``'count'`` first (stored-schema kernels included).
    aggregations
        The emitted aggregations, in output order.
    features
        ``features[a][w]``: the feature name of aggregation ``a`` over window ``w``.
    cap
        The float64 cap applied to capped fields after each update, or ``None``.
    count_cap
        ``max_value`` as given (int or float) when ``count`` is emitted with a cap, else ``None``.
    n_windows
        Number of windows (the length of ``accs``).
    label
        Used in the generated file names (tracebacks).
    """
    kernels = [(i, get_kernel(name)) for i, name in enumerate(kernel_names)]
    row_fields = tuple(f for _, k in kernels for f in k.field_names)
    aggs = [get_aggregation(a) for a in aggregations]
    emitted = {"count"} | {k for a in aggs for k in a.kernels}
    acc_kernels = [(i, k) for i, k in kernels if k.name in emitted]
    acc_fields = tuple(f for _, k in acc_kernels for f in k.field_names)
    capped_count = count_cap is not None
    acc_slots = acc_fields + ((_CC,) if capped_count else ())
    ns: dict[str, Any] = dict(FINALIZE_NAMESPACE)
    ns.update({f"_K{i}": k for i, k in kernels})
    ns["CAP"] = cap
    ns["CCAP"] = count_cap
    ns["CC0"] = (0.0 if isinstance(count_cap, float) else 0) if capped_count else None
    contrib = "(CCAP if {n} > CCAP else {n})"
    parts: list[str] = []

    # update_row
    parts.append(
        "def update_row(row, v, t):\n"
        f"    {_tuple(row_fields)} = row\n"
        f"{indent(_update_block(kernels, cap is not None), 1)}\n"
        f"    return {_tuple(row_fields)}\n"
    )

    # first_acc
    cc_first = f"    {_CC} = CC0 + {contrib.format(n='n')}\n" if capped_count else ""
    parts.append(
        "def first_acc(row):\n"
        f"    {_unpack(row_fields, acc_fields, '')} = row\n"
        f"{cc_first}"
        f"    return {_tuple(acc_slots)}\n"
    )

    # extend
    rebind = "".join(f"        a_{f} = {f}\n" for f in acc_slots)
    cc_step = f"        {_CC} = a_{_CC} + {contrib.format(n='b_n')}\n" if capped_count else ""
    parts.append(
        "def extend(acc, rows, start, stop):\n"
        f"    {_tuple(acc_slots, 'a_')} = acc\n"
        "    for _j in range(start, stop):\n"
        f"        {_unpack(row_fields, acc_fields, 'b_')} = rows[_j]\n"
        f"{indent(_merge_block(acc_kernels), 2)}\n"
        f"{cc_step}"
        f"{rebind}"
        f"    return {_tuple(acc_slots, 'a_')}\n"
    )

    # emit / emit_values
    body = [f"if cur is not None:\n    {_unpack(row_fields, acc_fields, 'b_')} = cur"]
    results: list[list[str]] = [[] for _ in aggs]
    for w in range(n_windows):
        take_b = "".join(f"        {f} = b_{f}\n" for f in acc_fields)
        take_a = "".join(f"        {f} = a_{f}\n" for f in acc_slots)
        cc_none = f"        {_CC} = CC0\n" if capped_count else ""
        cc_b = f"        {_CC} = CC0 + {contrib.format(n='b_n')}\n" if capped_count else ""
        cc_ab = f"        {_CC} = a_{_CC} + {contrib.format(n='b_n')}\n" if capped_count else ""
        body.append(
            f"acc = accs[{w}]\n"
            "if acc is None:\n"
            "    if cur is None:\n"
            f"        n = 0\n{cc_none}"
            f"    else:\n{take_b}{cc_b}"
            "else:\n"
            f"    {_tuple(acc_slots, 'a_')} = acc\n"
            f"    if cur is None:\n{take_a}"
            "    else:\n"
            f"{indent(_merge_block(acc_kernels), 2)}\n{cc_ab}"
        )
        for j, agg in enumerate(aggs):
            if agg.name == "count" and capped_count:
                expr = _CC
                empty = "CC0"
            else:
                expr = f"({agg.expr})"
                empty = f"EMPTY{j}"
                ns[f"EMPTY{j}"] = agg.empty
            body.append(f"r{w}_{j} = {empty} if n == 0 else {expr}")
            results[j].append(f"r{w}_{j}")
    body_src = indent("\n".join(body), 1)
    writes = "".join(
        f"    out[{features[j][w]!r}] = {results[j][w]}\n" for j in range(len(aggs)) for w in range(n_windows)
    )
    ordered = ", ".join(results[j][w] for j in range(len(aggs)) for w in range(n_windows))
    parts.append(f"def emit(accs, cur, out):\n{body_src}\n{writes}")
    parts.append(f"def emit_values(accs, cur):\n{body_src}\n    return ({ordered},)\n")

    source = "\n\n".join(parts)
    compile_function(source, "emit", ns, f"<storey fused {label}>")
    fns = {name: ns[name] for name in ("update_row", "first_acc", "extend", "emit", "emit_values")}
    empty_row = tuple(v for _, k in kernels for v in k.empty)
    return FusedFunctions(row_fields, acc_fields, empty_row, source=source, **fns)
