"""`QueryByKey` (alias `QueryAggregationByKey`): serve stored features as of each event (spec
AGGREGATIONS.md §7.4). The event itself is never aggregated."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from copy import copy
from typing import Any

from storey.aggregations.blob import decode_state
from storey.aggregations.field import FieldAggregator
from storey.aggregations.naming import state_attribute
from storey.aggregations.schema import QueryPlan, resolve_query
from storey.aggregations.state import KeyState
from storey.aggregations.step import augment, key_reader, time_reader
from storey.aggregations.windows import FixedWindowType
from storey.event import Event
from storey.flow.step import Flow
from storey.steps.batching import pop_synonym

__all__ = ["QueryAggregationByKey", "QueryByKey"]


class QueryByKey(Flow):
    """Enrich each event with features computed from the tiles stored in `table`, as of the event time.

    Parameters
    ----------
    features
        Feature names such as ``'purchases_avg_1h'`` (resolved through the stored schema), `FieldAggregator`
        objects, and other strings, which are static attributes to add (``enrich_with`` columns).
    table
        A `Table` or a table name; it may be shared with an `AggregateByKey` of the same flow, whose live
        state is then used.
    key, time_field, augmentation_fn, aliases
        As in `AggregateByKey`.
    fixed_window_type
        `FixedWindowType.CurrentOpenWindow` (default) or `LastClosedWindow` for fixed windows.

    Notes
    -----
    A key without live state in this process is reloaded from the driver for every event, so writes by other
    processes are seen. When the event time is before the key's high-water time, the result is
    tile-granular; use `storey.frames.as_of` for leak-free past times.
    """

    def __init__(
        self,
        features: Sequence[str | FieldAggregator],
        table: Any,
        key: Any = None,
        augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
        aliases: Mapping[str, str] | None = None,
        time_field: Any = None,
        fixed_window_type: FixedWindowType = FixedWindowType.CurrentOpenWindow,
        **kwargs: Any,
    ) -> None:
        key = pop_synonym(kwargs, "key_field", "key", key, None, type(self).__name__)
        super().__init__(**kwargs)
        if isinstance(features, str) or not isinstance(features, Sequence) or not features:
            msg = f"step {self.name!r}: `features` must be a non-empty list, got {features!r}"
            raise TypeError(msg)
        self._features_arg = list(features)
        self._table_spec = self._table_arg(table)
        self._key = key_reader(key, self.name, self._full_event)
        self._time = time_reader(time_field, self.name, self._full_event)
        self._augmentation_fn = augmentation_fn
        self._aliases = dict(aliases or {})
        self._fixed_window_type = fixed_window_type
        self.table: Any = None
        self._plans: list[QueryPlan] = []
        self._enrich: list[str] = []

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self.table = self._resolve_table(self._table_spec)
        run.add_closeable(self.table)
        self._plans = []

    async def _resolve(self) -> None:
        doc = await self.table.load_schema()
        self._plans, self._enrich = resolve_query(
            self._features_arg, doc, self._fixed_window_type, where=self.name
        )

    def _do(self, event: Event) -> Awaitable[Any] | None:
        key = self._key(event)
        if type(key) is list:
            key = tuple(key)
        tau = self._time(event)
        table = self.table
        live = [table.get_state(key, qp.plan.name) for qp in self._plans]
        if key is None or all(s is not None for s in live):
            return self._forward(self._output(event, key, tau, live, None))
        return self._reload_then_output(event, key, tau, live)

    async def _reload_then_output(self, event: Event, key: Any, tau: int, live: list[Any]) -> None:
        try:
            record = await self.table.load_record(key, refresh=True)
            out = self._output(event, key, tau, live, record)
        except Exception as exc:
            raise self._fail(exc, event) from exc
        await self._emit(out)

    def _state(self, qp: QueryPlan, live: KeyState | None, record: Mapping[str, Any] | None) -> KeyState:
        plan = qp.plan
        if live is not None:
            return plan.state_from_tiles(live.H, live.keys, live.rows)
        blob = None if record is None else record.get(state_attribute(plan.name))
        return plan.new_state() if blob is None else decode_state(plan, blob)

    def _output(
        self, event: Event, key: Any, tau: int, live: list[Any], record: Mapping[str, Any] | None
    ) -> Event:
        features: dict[str, Any] = {}
        for qp, st in zip(self._plans, live, strict=True):
            values: dict[str, Any] = {}
            self._state(qp, st, record).evaluate(tau, values)
            for name in qp.features:
                if name in values:
                    features[name] = values[name]
        if self._enrich:
            attrs = record if record is not None else self._cached_attrs(key)
            for col in self._enrich:
                features[col] = attrs.get(col) if attrs is not None else None
        if self._aliases:
            features = {self._aliases.get(k, k): v for k, v in features.items()}
        out = copy(event)
        out.key = key
        out.body = augment(event.body, features, self._augmentation_fn, self.name)
        return out

    def _cached_attrs(self, key: Any) -> Mapping[str, Any] | None:
        try:
            return self.table[key]
        except KeyError:
            return None


QueryAggregationByKey = QueryByKey
