"""The stored aggregation schema document (spec AGGREGATIONS.md §7.1) and `QueryByKey` resolution (§7.4).

::

    {"storey_schema": 1,
     "aggregators": {"purchases": {"window_type": "sliding", "period_ns": 600000000000,
                                   "windows": ["1h", "2h", "24h"],
                                   "kernels": ["count", "moments", "min", "max"], "max_value": null}}}

A writing step reconciles its aggregators with the stored document (`reconcile`): absent aggregators are
added; present ones must have equal ``window_type``, ``period_ns`` and ``max_value``, kernels that are a
subset of the stored kernels and a largest window no larger than the stored one. The step then maintains
**all stored kernels** and uses the **stored largest window** for acceptance and retention (`plan_for`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from storey.aggregations.field import FieldAggregator
from storey.aggregations.kernels import canonical_kernels, get_aggregation
from storey.aggregations.naming import parse_feature_name
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindows, FixedWindowType, SlidingWindows, Windows, parse_duration
from storey.errors import SchemaMismatchError

__all__ = [
    "SCHEMA_VERSION",
    "QueryPlan",
    "aggregator_entry",
    "build_schema",
    "check_aggregator",
    "plan_for",
    "reconcile",
    "resolve_query",
    "windows_from_entry",
]

SCHEMA_VERSION = 1


def aggregator_entry(agg: FieldAggregator, kernels: Sequence[str] | None = None) -> dict[str, Any]:
    """The schema entry of one aggregator (`kernels` defaults to the aggregator's own, canonical order).

    Examples
    --------
    >>> from storey.aggregations.windows import SlidingWindows
    >>> aggregator_entry(FieldAggregator("p", "x", ["max", "avg"], SlidingWindows(["2h", "1h"], "10m")))
    {'window_type': 'sliding', 'period_ns': 600000000000, 'windows': ['1h', '2h'], 'kernels': ['count', 'moments', 'max'], 'max_value': None}
    """  # noqa: E501
    return {
        "window_type": agg.windows.window_type,
        "period_ns": agg.windows.period_ns,
        "windows": list(agg.windows.windows),
        "kernels": list(canonical_kernels(kernels if kernels is not None else agg.kernels)),
        "max_value": agg.max_value,
    }


def build_schema(aggregators: Sequence[FieldAggregator]) -> dict[str, Any]:
    """A fresh schema document for `aggregators`."""
    return {
        "storey_schema": SCHEMA_VERSION,
        "aggregators": {a.name: aggregator_entry(a) for a in aggregators},
    }


def _check_doc(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping) or doc.get("storey_schema") != SCHEMA_VERSION:
        got = doc.get("storey_schema") if isinstance(doc, Mapping) else type(doc).__name__
        msg = f"unsupported aggregation schema document (storey_schema={got!r}, expected {SCHEMA_VERSION})"
        raise SchemaMismatchError(msg)
    aggs = doc.get("aggregators")
    if not isinstance(aggs, Mapping):
        msg = "aggregation schema document has no 'aggregators' mapping"
        raise SchemaMismatchError(msg)
    return aggs


def _largest_ns(entry: Mapping[str, Any]) -> int:
    return max(parse_duration(w) for w in entry["windows"])


def check_aggregator(agg: FieldAggregator, entry: Mapping[str, Any], where: str = "AggregateByKey") -> None:
    """Raise `SchemaMismatchError` naming the aggregator and the property unless `agg` fits the stored
    `entry` (equal window type, period and max_value; kernels a subset; largest window not larger)."""
    mine = aggregator_entry(agg)
    for prop in ("window_type", "period_ns", "max_value"):
        # 1 and 1.0 differ: the capped count is an int or a float accordingly
        if mine[prop] != entry.get(prop) or type(mine[prop]) is not type(entry.get(prop)):
            msg = (
                f"step {where!r}: aggregator {agg.name!r} differs from the stored schema in {prop!r}: "
                f"stored {entry.get(prop)!r}, step {mine[prop]!r}"
            )
            raise SchemaMismatchError(msg)
    extra = [k for k in mine["kernels"] if k not in entry.get("kernels", ())]
    if extra:
        msg = (
            f"step {where!r}: aggregator {agg.name!r} needs kernels {extra} that the stored schema does not "
            f"keep (stored {entry.get('kernels')}); rebuild the state under a new name to add kernels"
        )
        raise SchemaMismatchError(msg)
    if agg.windows.max_window_ns > _largest_ns(entry):
        msg = (
            f"step {where!r}: aggregator {agg.name!r} has a larger window ({agg.windows.windows[-1]!r}) than "
            f"the stored schema (windows {entry['windows']}); rebuild the state under a new name to grow them"
        )
        raise SchemaMismatchError(msg)


def windows_from_entry(entry: Mapping[str, Any], windows: Sequence[str] | None = None) -> Windows:
    """Windows over the stored tile grid: the stored windows, or `windows` (each a multiple of the period)."""
    chosen = list(entry["windows"] if windows is None else windows)
    if entry["window_type"] == "sliding":
        return SlidingWindows.from_period_ns(chosen, entry["period_ns"])
    return FixedWindows.from_period_ns(chosen, entry["period_ns"])


def _with_windows(agg: FieldAggregator, windows: Windows) -> FieldAggregator:
    return FieldAggregator(
        agg.name, agg.field, list(agg.aggregations), windows, agg.aggr_filter, agg.max_value
    )


def reconcile(
    doc: Mapping[str, Any] | None,
    aggregators: Sequence[FieldAggregator],
    *,
    use_windows_from_schema: bool = False,
    where: str = "AggregateByKey",
) -> tuple[dict[str, Any], bool, list[FieldAggregator]]:
    """Reconcile a writing step's aggregators with the stored document (never mutating `doc`).

    Returns
    -------
    (doc, changed, aggregators)
        The document to use (a new dict), whether it must be (re-)saved, and the aggregators (with the
        stored windows and period when `use_windows_from_schema` is set and the aggregator is stored).
    """
    if doc is None:
        return build_schema(aggregators), True, list(aggregators)
    stored = _check_doc(doc)
    new = copy.deepcopy(dict(doc))
    changed = False
    out = []
    for agg in aggregators:
        entry = stored.get(agg.name)
        if entry is None:
            new["aggregators"][agg.name] = aggregator_entry(agg)
            changed = True
        else:
            if use_windows_from_schema:
                agg = _with_windows(agg, windows_from_entry(entry))
            check_aggregator(agg, entry, where)
        out.append(agg)
    return new, changed, out


def plan_for(
    agg: FieldAggregator,
    doc: Mapping[str, Any] | None,
    fixed_window_type: FixedWindowType = FixedWindowType.CurrentOpenWindow,
) -> AggregatorPlan:
    """The `AggregatorPlan` of `agg` under the stored document: all stored kernels, the stored `N`."""
    entry = _check_doc(doc).get(agg.name) if doc is not None else None
    if entry is None:
        return AggregatorPlan(agg, fixed_window_type=fixed_window_type)
    n_slots = _largest_ns(entry) // entry["period_ns"]
    return AggregatorPlan(agg, kernels=entry["kernels"], n_slots=n_slots, fixed_window_type=fixed_window_type)


@dataclass
class QueryPlan:
    """What `QueryByKey` evaluates for one stored aggregator: the plan and the requested feature names."""

    plan: AggregatorPlan
    features: list[str] = field(default_factory=list)


def resolve_query(
    features: Sequence[str | FieldAggregator],
    doc: Mapping[str, Any] | None,
    fixed_window_type: FixedWindowType = FixedWindowType.CurrentOpenWindow,
    where: str = "QueryByKey",
) -> tuple[list[QueryPlan], list[str]]:
    """Resolve a `QueryByKey` feature list against the stored schema (§7.4).

    Returns
    -------
    (plans, enrich_columns)
        One `QueryPlan` per aggregator (in first-mention order), and the strings that are not aggregation
        features (static ``enrich_with`` columns).

    Raises
    ------
    SchemaMismatchError
        A missing schema or unknown aggregator name; an aggregation the stored kernels cannot compute; a
        window that is not a multiple of the stored period or exceeds the stored largest window; a
        `FieldAggregator` whose type, period, kernels or windows do not fit.
    """
    requested: dict[str, dict[str, list[str]]] = {}  # name -> {'aggrs': [...], 'windows': [...]} in order
    objects: dict[str, FieldAggregator] = {}
    names: list[str] = []
    wanted: dict[str, list[str]] = {}
    enrich: list[str] = []
    for item in features:
        if isinstance(item, FieldAggregator):
            entry = _entry(doc, item.name, where)
            check_aggregator(item, entry, where)
            objects[item.name] = item
            if item.name not in names:
                names.append(item.name)
            wanted.setdefault(item.name, []).extend(item.feature_names)
            continue
        parsed = parse_feature_name(item) if isinstance(item, str) else None
        if parsed is None:
            enrich.append(item)
            continue
        name, aggr, window = parsed
        entry = _entry(doc, name, where)
        _check_feature(item, aggr, window, entry, where)
        req = requested.setdefault(name, {"aggrs": [], "windows": []})
        if aggr not in req["aggrs"]:
            req["aggrs"].append(aggr)
        if window not in req["windows"]:
            req["windows"].append(window)
        if name not in names:
            names.append(name)
        wanted.setdefault(name, []).append(item)
    plans = []
    for name in names:
        entry = _entry(doc, name, where)
        if name in objects and name not in requested:
            agg = objects[name]
        else:
            req = requested.get(name, {"aggrs": [], "windows": []})
            aggrs, windows = list(req["aggrs"]), list(req["windows"])
            if name in objects:
                aggrs += [a for a in objects[name].aggregations if a not in aggrs]
                windows += [w for w in objects[name].windows.windows if w not in windows]
            agg = FieldAggregator(
                name, None, aggrs, windows_from_entry(entry, windows), max_value=entry["max_value"]
            )
        plans.append(QueryPlan(plan_for(agg, doc, fixed_window_type), wanted[name]))
    return plans, enrich


def _entry(doc: Mapping[str, Any] | None, name: str, where: str) -> Mapping[str, Any]:
    if doc is None:
        msg = f"step {where!r}: no aggregation schema is stored for the table; cannot resolve {name!r}"
        raise SchemaMismatchError(msg)
    entry = _check_doc(doc).get(name)
    if entry is None:
        known = sorted(_check_doc(doc))
        msg = f"step {where!r}: aggregator {name!r} is not in the stored schema (known: {known})"
        raise SchemaMismatchError(msg)
    return entry


def _check_feature(feature: str, aggr: str, window: str, entry: Mapping[str, Any], where: str) -> None:
    missing = [k for k in get_aggregation(aggr).kernels if k not in entry["kernels"]]
    if missing:
        stored = entry["kernels"]
        msg = f"step {where!r}: feature {feature!r} needs kernels {missing}; the stored schema keeps {stored}"
        raise SchemaMismatchError(msg)
    w_ns = parse_duration(window)
    if w_ns % entry["period_ns"]:
        msg = f"step {where!r}: feature {feature!r}: window {window!r} is not a multiple of the stored period"
        raise SchemaMismatchError(msg)
    if w_ns > _largest_ns(entry):
        msg = (
            f"step {where!r}: feature {feature!r}: window {window!r} exceeds the stored largest window "
            f"(stored windows {entry['windows']})"
        )
        raise SchemaMismatchError(msg)
