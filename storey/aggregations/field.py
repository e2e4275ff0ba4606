"""`FieldAggregator`, `FieldEquals` and the upstream dict form (spec AGGREGATIONS.md §3.1)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from numbers import Real
from typing import Any

from storey.aggregations import naming
from storey.aggregations.windows import FixedWindows, SlidingWindows, Windows
from storey.errors import MissingFieldError

__all__ = ["FieldAggregator", "FieldEquals", "normalize_aggregates"]

_RESERVED_PREFIX = "_storey_"
_NO_CAP = ("avg", "stdvar", "stddev")
_DICT_KEYS = ("name", "column", "operations", "windows", "period", "aggregation_filter", "max_value")
_DICT_REQUIRED = ("name", "column", "operations", "windows")


class FieldEquals:
    """A filter callable ``element -> element[field] == value`` that `storey.frames` evaluates column-wise.

    An absent field fails with `MissingFieldError`. The element is a body mapping, or an `Event`-like
    object whose ``body`` is one.

    Examples
    --------
    >>> f = FieldEquals("status", "fail")
    >>> f({"status": "fail"}), f({"status": "ok"})
    (True, False)
    """

    def __init__(self, field: str, value: Any) -> None:
        if not isinstance(field, str):
            msg = f"FieldEquals: `field` must be a str, got {type(field).__name__} {field!r}"
            raise TypeError(msg)
        self.field = field
        self.value = value

    def __call__(self, element: Any) -> Any:
        body = (
            element
            if type(element) is dict or isinstance(element, Mapping)
            else getattr(element, "body", element)
        )
        try:
            got = body[self.field]
        except (KeyError, TypeError, IndexError):
            msg = f"FieldEquals: field {self.field!r} is missing in {type(body).__name__} body"
            raise MissingFieldError(msg) from None
        return got == self.value

    def __repr__(self) -> str:
        return f"FieldEquals({self.field!r}, {self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldEquals) and (self.field, self.value) == (other.field, other.value)

    def __hash__(self) -> int:
        return hash(("FieldEquals", self.field, repr(self.value)))


def _check_aggr(aggr: Any, where: str) -> tuple[str, ...]:
    from storey.aggregations.kernels import aggregation_names

    if isinstance(aggr, str) or not isinstance(aggr, Sequence):
        msg = f"{where}: `aggr` must be a list of aggregation names, got {type(aggr).__name__} {aggr!r}"
        raise TypeError(msg)
    if not aggr:
        msg = f"{where}: `aggr` must not be empty"
        raise ValueError(msg)
    known = list(aggregation_names())
    seen: set[str] = set()
    for a in aggr:
        if not isinstance(a, str) or a not in known:
            close = difflib.get_close_matches(str(a), known, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            msg = f"{where}: unknown aggregation {a!r}{hint} (known: {', '.join(known)})"
            raise ValueError(msg)
        if a in seen:
            msg = f"{where}: aggregation {a!r} is listed twice"
            raise ValueError(msg)
        seen.add(a)
    return tuple(aggr)


def _check_max_value(max_value: Any, aggr: tuple[str, ...], where: str) -> int | float | None:
    if max_value is None:
        return None
    if isinstance(max_value, bool) or not isinstance(max_value, Real | Decimal):
        kind = type(max_value).__name__
        msg = f"{where}: `max_value` must be None or a finite number, got {kind} {max_value!r}"
        raise TypeError(msg)
    if not math.isfinite(float(max_value)):
        msg = f"{where}: `max_value` must be finite, got {max_value!r}"
        raise ValueError(msg)
    bad = [a for a in aggr if a in _NO_CAP]
    if bad:
        msg = f"{where}: `max_value` cannot be combined with {', '.join(repr(b) for b in bad)}"
        raise ValueError(msg)
    return max_value if isinstance(max_value, int | float) else float(max_value)


class FieldAggregator:
    """One aggregator: a field, a list of aggregations and a set of windows (§3.1).

    Parameters
    ----------
    name
        A non-empty `str` not starting with ``_storey_``; names the features and the persisted state.
    field
        A body field name or a callable ``element -> value`` (``None`` only in `QueryByKey`).
    aggr
        Aggregation names from ``count, sum, sqr, min, max, first, last, avg, stdvar, stddev``.
    windows
        `SlidingWindows` or `FixedWindows`.
    aggr_filter
        ``None`` or a callable ``element -> truthy`` (for example `FieldEquals`).
    max_value
        ``None`` or a finite number capping each tile's value (not with ``avg``/``stdvar``/``stddev``).

    Examples
    --------
    >>> fa = FieldAggregator("purchases", "amount", ["avg", "max"], SlidingWindows(["2h", "1h"], "10m"))
    >>> fa.feature_names
    ['purchases_avg_1h', 'purchases_avg_2h', 'purchases_max_1h', 'purchases_max_2h']
    >>> fa.kernels
    ('count', 'moments', 'max')
    >>> FieldAggregator("p", "amount", ["avrg"], fa.windows)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: FieldAggregator 'p': unknown aggregation 'avrg'; did you mean 'avg'? (known: count, sum, ...)
    """

    def __init__(
        self,
        name: str,
        field: str | Callable[[Any], Any] | None,
        aggr: Sequence[str],
        windows: SlidingWindows | FixedWindows,
        aggr_filter: Callable[[Any], Any] | None = None,
        max_value: float | None = None,
    ) -> None:
        if not isinstance(name, str):
            msg = f"FieldAggregator: `name` must be a str, got {type(name).__name__} {name!r}"
            raise TypeError(msg)
        if not name or name.startswith(_RESERVED_PREFIX):
            msg = f"FieldAggregator: `name` must be non-empty and not start with '_storey_', got {name!r}"
            raise ValueError(msg)
        where = f"FieldAggregator {name!r}"
        if field is not None and not isinstance(field, str) and not callable(field):
            msg = f"{where}: `field` must be a field name or a callable, got {type(field).__name__} {field!r}"
            raise TypeError(msg)
        if not isinstance(windows, Windows):
            msg = f"{where}: `windows` must be SlidingWindows or FixedWindows, got {type(windows).__name__}"
            raise TypeError(msg)
        if aggr_filter is not None and not callable(aggr_filter):
            msg = f"{where}: `aggr_filter` must be None or a callable, got {type(aggr_filter).__name__}"
            raise TypeError(msg)
        self.name = name
        self.field = field
        self.aggregations = _check_aggr(aggr, where)
        self.windows = windows
        self.aggr_filter = aggr_filter
        self.max_value = _check_max_value(max_value, self.aggregations, where)

    @property
    def kernels(self) -> tuple[str, ...]:
        """The kernels the aggregations need, in canonical order, ``'count'`` first (§4.4)."""
        from storey.aggregations.kernels import canonical_kernels, get_aggregation

        return canonical_kernels(k for a in self.aggregations for k in get_aggregation(a).kernels)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in output order (§3.3)."""
        return naming.feature_names(self.name, self.aggregations, self.windows.windows)

    @property
    def count_only(self) -> bool:
        """True when ``count`` is the sole aggregation (non-numeric values are then accepted, §3.4)."""
        return self.aggregations == ("count",)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldAggregator:
        """Convert the upstream dict form (§3.1); `d` is not mutated.

        ``{'name', 'column', 'operations', 'windows', 'period'?, 'aggregation_filter'?, 'max_value'?}``:
        with ``'period'`` the windows are `SlidingWindows(windows, period)`, otherwise `FixedWindows`.

        Examples
        --------
        >>> d = {"name": "clicks", "column": "c", "operations": ["count"], "windows": ["1h"], "period": "10m"}
        >>> FieldAggregator.from_dict(d).windows
        SlidingWindows(['1h'], '10m')
        """
        if not isinstance(d, Mapping):
            msg = f"an aggregate dict must be a mapping, got {type(d).__name__}"
            raise TypeError(msg)
        unexpected = sorted(set(d) - set(_DICT_KEYS))
        if unexpected:
            name = d.get("name")
            msg = f"aggregate dict {name!r}: unexpected key(s) {unexpected}; allowed: {list(_DICT_KEYS)}"
            raise ValueError(msg)
        missing = [k for k in _DICT_REQUIRED if k not in d]
        if missing:
            msg = f"aggregate dict {d.get('name')!r}: missing required key(s) {missing}"
            raise ValueError(msg)
        windows_list = d["windows"]
        windows_list = list(windows_list) if isinstance(windows_list, list | tuple) else windows_list
        windows: SlidingWindows | FixedWindows
        if "period" in d:
            windows = SlidingWindows(windows_list, d["period"])
        else:
            windows = FixedWindows(windows_list)
        ops = d["operations"]
        return cls(
            d["name"],
            d["column"],
            list(ops) if isinstance(ops, list | tuple) else ops,
            windows,
            aggr_filter=d.get("aggregation_filter"),
            max_value=d.get("max_value"),
        )

    def __repr__(self) -> str:
        extra = ""
        if self.aggr_filter is not None:
            extra += f", aggr_filter={self.aggr_filter!r}"
        if self.max_value is not None:
            extra += f", max_value={self.max_value!r}"
        aggr = list(self.aggregations)
        return f"FieldAggregator({self.name!r}, {self.field!r}, {aggr!r}, {self.windows!r}{extra})"


def normalize_aggregates(aggregates: Sequence[Any], where: str = "AggregateByKey") -> list[FieldAggregator]:
    """Turn a list of `FieldAggregator` objects or upstream dicts into `FieldAggregator` objects.

    Raises
    ------
    ValueError
        An empty list, a list mixing dicts and objects, a duplicate aggregator name or feature name.
    TypeError
        An element that is neither.

    Examples
    --------
    >>> d = {"name": "c", "column": "x", "operations": ["sum"], "windows": ["1h"]}
    >>> [a.name for a in normalize_aggregates([d])]
    ['c']
    """
    if isinstance(aggregates, str | Mapping) or not isinstance(aggregates, Sequence):
        msg = f"step {where!r}: `aggregates` must be a list, got {type(aggregates).__name__}"
        raise TypeError(msg)
    if not aggregates:
        msg = f"step {where!r}: `aggregates` must not be empty"
        raise ValueError(msg)
    kinds = set()
    for a in aggregates:
        if isinstance(a, FieldAggregator):
            kinds.add("object")
        elif isinstance(a, Mapping):
            kinds.add("dict")
        else:
            msg = f"step {where!r}: an aggregate must be a FieldAggregator or a dict, got {type(a).__name__}"
            raise TypeError(msg)
    if len(kinds) > 1:
        msg = f"step {where!r}: `aggregates` mixes dicts and FieldAggregator objects; use one form"
        raise ValueError(msg)
    out = [a if isinstance(a, FieldAggregator) else FieldAggregator.from_dict(a) for a in aggregates]
    naming.check_unique_features(out, where)
    return out
