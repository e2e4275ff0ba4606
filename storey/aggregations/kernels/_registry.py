"""The kernel and aggregation registry: the only lookup (spec AGGREGATIONS.md §4.2)."""

from __future__ import annotations

import difflib
from typing import TypeVar

from storey.aggregations.kernels.base import Aggregation, Kernel

__all__ = [
    "aggregation_names",
    "canonical_kernels",
    "get_aggregation",
    "get_kernel",
    "kernel_names",
    "register_aggregation",
    "register_kernel",
]

_KERNELS: dict[str, Kernel] = {}
_AGGREGATIONS: dict[str, Aggregation] = {}

BUILTIN_KERNEL_ORDER = ("count", "sum", "sqr", "moments", "min", "max", "first", "last")
"""The canonical kernel order (§7.1), which is also the stored field order (§7.2); user kernels follow
in registration order."""

K = TypeVar("K", bound=type[Kernel])
"""A `Kernel` subclass being registered."""


def _unknown(kind: str, name: object, known: list[str]) -> str:
    hint = difflib.get_close_matches(str(name), known, n=3)
    suggestion = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
    return f"unknown {kind} {name!r}{suggestion} (known: {', '.join(known)})"


def register_kernel(cls: K) -> K:
    """Class decorator: instantiate and register a `Kernel` under ``cls.name``.

    The canonical order is `BUILTIN_KERNEL_ORDER`, then user kernels in registration order.
    """
    kernel = cls()
    if not isinstance(kernel.name, str) or not kernel.name:
        msg = f"kernel {cls.__name__} needs a non-empty str `name`"
        raise ValueError(msg)
    if kernel.name in _KERNELS:
        msg = f"kernel {kernel.name!r} is already registered"
        raise ValueError(msg)
    taken = {f for k in _KERNELS.values() for f in k.field_names}
    clash = sorted(taken & set(kernel.field_names))
    if clash:
        msg = f"kernel {kernel.name!r} reuses field name(s) {clash} of another kernel"
        raise ValueError(msg)
    if len(kernel.empty) != len(kernel.fields) or any(dt not in ("i8", "f8") for _, dt in kernel.fields):
        msg = f"kernel {kernel.name!r}: `empty` must match `fields`, whose dtypes are 'i8' or 'f8'"
        raise ValueError(msg)
    _KERNELS[kernel.name] = kernel
    ordered = sorted(_KERNELS.items(), key=lambda kv: _rank(kv[0]))
    _KERNELS.clear()
    _KERNELS.update(ordered)
    return cls


def _rank(name: str) -> tuple[int, int]:
    if name in BUILTIN_KERNEL_ORDER:
        return (0, BUILTIN_KERNEL_ORDER.index(name))
    return (1, list(_KERNELS).index(name))


def register_aggregation(aggregation: Aggregation) -> Aggregation:
    """Register an `Aggregation` (its kernels must be registered, ``'count'`` first)."""
    if aggregation.name in _AGGREGATIONS:
        msg = f"aggregation {aggregation.name!r} is already registered"
        raise ValueError(msg)
    if not aggregation.kernels or aggregation.kernels[0] != "count":
        msg = f"aggregation {aggregation.name!r} must list 'count' as its first kernel"
        raise ValueError(msg)
    for name in aggregation.kernels:
        get_kernel(name)
    fields = {"n"} | {f for k in aggregation.kernels for f in get_kernel(k).field_names}
    unknown = sorted(set(aggregation.reads) - fields)
    if unknown:
        msg = f"aggregation {aggregation.name!r} reads {unknown}, which its kernels do not provide"
        raise ValueError(msg)
    _AGGREGATIONS[aggregation.name] = aggregation
    return aggregation


def get_kernel(name: str) -> Kernel:
    """The registered kernel called `name`; an unknown name fails with `ValueError` suggesting matches.

    Examples
    --------
    >>> get_kernel("moments").field_names
    ('mean', 'm2')
    >>> get_kernel("momets")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown kernel 'momets'; did you mean 'moments'? (known: count, sum, sqr, moments, ...)
    """
    try:
        return _KERNELS[name]
    except (KeyError, TypeError):
        raise ValueError(_unknown("kernel", name, list(_KERNELS))) from None


def get_aggregation(name: str) -> Aggregation:
    """The registered aggregation called `name`; an unknown name fails with `ValueError` suggesting matches.

    Examples
    --------
    >>> get_aggregation("avg").kernels
    ('count', 'moments')
    """
    try:
        return _AGGREGATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(_unknown("aggregation", name, list(_AGGREGATIONS))) from None


def kernel_names() -> tuple[str, ...]:
    """Registered kernel names in canonical order."""
    return tuple(_KERNELS)


def aggregation_names() -> tuple[str, ...]:
    """Registered aggregation names in registration order."""
    return tuple(_AGGREGATIONS)


def canonical_kernels(names: object) -> tuple[str, ...]:
    """Deduplicate kernel names and put them in canonical (registration) order, ``'count'`` always first.

    Examples
    --------
    >>> canonical_kernels(["max", "moments", "min"])
    ('count', 'moments', 'min', 'max')
    """
    wanted = set(names) | {"count"}  # type: ignore[call-overload]
    for name in wanted:
        get_kernel(name)
    return tuple(k for k in _KERNELS if k in wanted)
