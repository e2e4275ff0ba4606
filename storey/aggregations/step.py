"""`AggregateByKey`: the streaming engine of keyed windowed aggregations (spec AGGREGATIONS.md §5–7).

The step only routes: it extracts keys, times and values, asks the emitter *when* to emit, and calls the
per-key state machine of `storey.aggregations.state` (which calls the kernels) for *what*. `storey.frames`
drives the very same state machine and emitter, so both engines give the same bits.

With `EmitEveryEvent` over compiled states, `_start` replaces the per-event path (`_do`, `_apply`) by the
step's generated fused path (`storey.aggregations._step_fused`: the same steps unrolled, one numba call for
all aggregators per event); `_apply` stays the reference and serves keys whose states came from elsewhere.
Chunks of rows (the runtime's batch lane) then take `_fused_batch`: one compiled call per run of rows, the
states of a chunk's new keys loaded at once, a row the run cannot take through `_do` (see `_step_fused`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from copy import copy
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from storey._time import from_ns, to_ns
from storey._utils._fields import body_field, missing
from storey.aggregations.blob import decode_state
from storey.aggregations.emit import EmitEveryEvent, EmitPolicy, emit_policy_from_dict
from storey.aggregations.emitter import Emission, Emitter
from storey.aggregations.field import FieldAggregator, normalize_aggregates
from storey.aggregations.naming import check_unique_features, state_attribute
from storey.aggregations.schema import plan_for, reconcile
from storey.aggregations.state import AggregatorPlan, KeyState
from storey.errors import FlowError, MissingFieldError
from storey.event import Event
from storey.flow.batch import EventBatch
from storey.flow.step import Flow
from storey.steps.batching import pop_synonym

__all__ = ["AggregateByKey", "ValueReader", "augment", "key_reader", "time_reader"]

_SKIP = object()
"""Returned by `ValueReader.read` for a value that is skipped (None, NaN, NA, NaT)."""

_NUMERIC = (int, float, bool, np.number, np.bool_, Decimal, Fraction)


class ValueReader:
    """Extract one aggregator's value from an element and convert it to float64 (§3.4).

    `read` returns a float, or `_SKIP` for ``None``/NaN/``pandas.NA``/``NaT``. Non-numeric values are
    accepted only by count-only aggregators (they count as one value).
    """

    __slots__ = ("count_only", "field", "from_body", "name", "step")

    def __init__(self, agg: FieldAggregator, step: str) -> None:
        self.field = agg.field
        self.from_body = isinstance(agg.field, str)
        self.count_only = agg.count_only
        self.name = agg.name
        self.step = step

    def read(self, event: Event, element: Any) -> Any:
        if self.from_body:
            v = body_field(event, self.field, self.step)
        else:
            v = self.field(element)  # type: ignore[misc]
        return self.convert(v, event)

    def convert(self, v: Any, event: Event | None) -> Any:
        tv = type(v)
        if tv is float:
            return _SKIP if v != v else v
        if tv is int:
            return float(v)
        if v is None:
            return _SKIP
        if isinstance(v, _NUMERIC):
            f = float(v)
            return _SKIP if f != f else f
        name = tv.__name__
        if name in ("NAType", "NaTType"):
            return _SKIP
        if self.count_only:
            return 0.0
        where = f" in event {event.id!r}" if event is not None else ""
        msg = (
            f"step {self.step!r}: aggregator {self.name!r} needs numeric values in field {self.field!r}, "
            f"got {name} {v!r}{where}"
        )
        raise TypeError(msg)


def key_reader(key: Any, step: str, full_event: bool) -> Callable[[Event], Any]:
    """The key extractor of §6.1: `event.key`, a body field, a tuple of fields, or a callable."""
    if key is None:
        return lambda event: event.key
    if isinstance(key, str):
        return lambda event: body_field(event, key, step, "key field")
    if isinstance(key, list | tuple) and key and all(isinstance(k, str) for k in key):
        fields = tuple(key)

        def from_fields(event: Event) -> Any:
            body = event.body
            try:
                return tuple(body[f] for f in fields)
            except KeyError:
                absent = next(f for f in fields if f not in body)
                raise missing(step, absent, event) from None

        return from_fields
    if callable(key):
        if full_event:
            return lambda event: key(copy(event))
        return lambda event: key(event.body)
    msg = f"step {step!r}: `key` must be None, a field name, a list of field names or a callable, got {key!r}"
    raise TypeError(msg)


def time_reader(time_field: Any, step: str, full_event: bool) -> Callable[[Event], int]:
    """The time extractor of §6.1 (int ns): `event.time`, a body field, or a callable."""
    if time_field is None:
        return lambda event: event.time_ns
    if isinstance(time_field, str):

        def from_field(event: Event) -> int:
            value = body_field(event, time_field, step, "time field")
            try:
                return to_ns(value)
            except (TypeError, ValueError, MissingFieldError) as exc:
                msg = f"step {step!r}: time field {time_field!r} of event {event.id!r}: {exc}"
                raise type(exc)(msg) from None

        return from_field
    if callable(time_field):

        def from_callable(event: Event) -> int:
            return to_ns(time_field(copy(event) if full_event else event.body))

        return from_callable
    msg = f"step {step!r}: `time_field` must be None, a field name or a callable, got {time_field!r}"
    raise TypeError(msg)


def augment(
    body: Any,
    features: dict[str, Any],
    augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None,
    step: str,
) -> Any:
    """The emitted body: ``augmentation_fn(body, features)``, or a new dict of the features then the body's
    fields (body fields win)."""
    if augmentation_fn is not None:
        return augmentation_fn(body, features)
    if not isinstance(body, Mapping):
        msg = (
            f"step {step!r}: the default augmentation needs a mapping body, got {type(body).__name__}; "
            "pass `augmentation_fn`"
        )
        raise TypeError(msg)
    features.update(body)
    return features


class AggregateByKey(Flow):
    """Aggregate events per key into epoch-aligned tiles held by a `Table`, and emit enriched events.

    Parameters
    ----------
    aggregates
        `FieldAggregator` objects, or upstream dicts (not mixed).
    table
        A `Table`, or a table name resolved through the context.
    key
        ``None`` (`event.key`), a body field, a list of fields (tuple keys) or a callable on the element.
    emit_policy
        When to emit (`EmitEveryEvent` by default; a dict form is accepted).
    augmentation_fn
        ``fn(body, features) -> new body``; by default a new dict of the features then the body's fields.
    enrich_with
        Static table attribute names added to the output (``None`` when absent).
    aliases
        ``{feature or enrich column: new name}``.
    use_windows_from_schema
        Take windows and period of stored aggregators from the table's schema.
    time_field
        ``None`` (`event.time`), a body field or a callable giving the time.

    Examples
    --------
    >>> from storey import build_flow, Source, Reduce, Table, NoopDriver, FieldAggregator, SlidingWindows
    >>> agg = AggregateByKey(
    ...     [FieldAggregator("amount", "x", ["sum", "count"], SlidingWindows(["1h"], "10m"))],
    ...     Table("t", NoopDriver()),
    ... )
    >>> c = build_flow([Source(), agg, Reduce([], lambda acc, b: [*acc, b])]).run()
    >>> for i, x in enumerate([1.0, 2.0, 4.0]):
    ...     _ = c.emit({"x": x}, key="u1", event_time=i * 60_000)
    >>> [b["amount_sum_1h"] for b in c.terminate(wait=True)]
    [1.0, 3.0, 7.0]
    """

    def __init__(
        self,
        aggregates: Sequence[Any],
        table: Any,
        key: Any = None,
        emit_policy: EmitPolicy | Mapping[str, Any] = EmitEveryEvent(),  # noqa: B008 - immutable
        augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
        enrich_with: Sequence[str] | None = None,
        aliases: Mapping[str, str] | None = None,
        use_windows_from_schema: bool = False,
        time_field: Any = None,
        **kwargs: Any,
    ) -> None:
        key = pop_synonym(kwargs, "key_field", "key", key, None, type(self).__name__)
        super().__init__(**kwargs)
        self.aggregates = normalize_aggregates(aggregates, self.name)
        check_unique_features(self.aggregates, self.name)
        if isinstance(emit_policy, Mapping):
            emit_policy = emit_policy_from_dict(emit_policy)
        if not isinstance(emit_policy, EmitPolicy):
            msg = f"step {self.name!r}: `emit_policy` must be an EmitPolicy or a dict, got {emit_policy!r}"
            raise TypeError(msg)
        self.emit_policy = emit_policy
        self._table_spec = self._table_arg(table)
        self._key = key_reader(key, self.name, self._full_event)
        self._time = time_reader(time_field, self.name, self._full_event)
        self.key = key
        self.time_field = time_field
        self._augmentation_fn = augmentation_fn
        self._enrich_with = list(enrich_with or ())
        self._aliases = dict(aliases or {})
        self._use_windows_from_schema = use_windows_from_schema
        self.metrics: dict[str, int] = {"events": 0, "late_events": 0, "skipped_values": 0}
        self.table: Any = None
        self.plans: list[AggregatorPlan] = []

    # ------------------------------------------------------------------------------------ graph/run
    def _validate_graph(self, steps: list[Flow]) -> None:
        mine = {a.name for a in self.aggregates}
        features = {f for a in self.aggregates for f in a.feature_names}
        for other in steps:
            if other is self or not isinstance(other, AggregateByKey):
                continue
            if other._table_spec is not self._table_spec:
                continue
            shared = mine & {a.name for a in other.aggregates} or features & {
                f for a in other.aggregates for f in a.feature_names
            }
            if shared:
                msg = (
                    f"steps {self.name!r} and {other.name!r} aggregate into the same table with the same "
                    f"aggregator or feature names {sorted(shared)}"
                )
                raise ValueError(msg)

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self.table = self._resolve_table(self._table_spec)
        run.add_closeable(self.table)
        self.metrics = {"events": 0, "late_events": 0, "skipped_values": 0}
        self._states: dict[Any, list[KeyState] | tuple[KeyState, ...]] = {}
        self.__dict__.pop("_do", None)  # the fused path of a previous run
        self.__dict__.pop("_do_batch", None)
        self._preload_from: tuple[EventBatch, int] | None = None  # the row a preload last ran for

    async def _start(self) -> None:
        doc = await self.table.load_schema()
        doc, changed, aggs = reconcile(
            doc, self.aggregates, use_windows_from_schema=self._use_windows_from_schema, where=self.name
        )
        if changed:
            await self.table.save_schema(doc)
        self.plans = [plan_for(a, doc) for a in aggs]
        self._names = [a.name for a in aggs]
        self._attributes = [state_attribute(name) for name in self._names]  # where stored states live
        self._readers = [ValueReader(a, self.name) for a in aggs]
        self._filters = [a.aggr_filter for a in aggs]
        self._emitter = Emitter(self.emit_policy, aggs)
        self._every = isinstance(self.emit_policy, EmitEveryEvent)
        self._slots = list(zip(self._readers, self._filters, strict=True))
        self._timed = self._emitter.timed
        # EmitEveryEvent over compiled states: one numba call per event (same bits; see _step_fused)
        self._fused: Any = None
        if self._every:
            from storey.aggregations._step_fused import fused_apply

            self._fused = fused_apply(self)
        self._apply_event = self._apply
        if self._fused is not None:
            self._apply_event = self._fused.apply
            self._do = self._fused.do  # type: ignore[method-assign]
            if self._fused.run is not None and not self._table_shared():
                self._do_batch = self._fused_batch  # type: ignore[method-assign]

    def _table_shared(self) -> bool:
        """Whether another step of the run holds this step's table (e.g. a `QueryByKey` after it). Then rows
        go one by one: on the batch lane this step would apply a whole batch before the other step sees its
        first row, and that step would see state from rows after its own."""
        table = self.table
        run = self._run
        steps = run.steps if run is not None else []
        return any(
            other is not self and any(value is table for value in vars(other).values()) for other in steps
        )

    # ------------------------------------------------------------------------------------ batch lane
    def _fused_batch(self, batch: EventBatch) -> Awaitable[Any] | None:
        """The batch lane of the fused path: runs of rows in one compiled call each (see
        `_step_fused.batch_source`); a row a run cannot take (a first key, states from elsewhere, a failing
        read) goes through `_do`, after the states of the batch's new keys were loaded at once."""
        r, j = self._batch_until(batch, 0)
        return None if r is None else self._batch_after(r, batch, j)

    def _batch_until(self, batch: EventBatch, j: int) -> tuple[Awaitable[Any] | None, int]:
        """Rows ``j …`` until one returns an awaitable: ``(awaitable, next row)``, or ``(None, n)``."""
        run_rows = self._fused.run
        n = len(batch.bodies)
        flow = self._run
        while j < n:
            if flow is not None and flow.error is not None:
                break
            try:
                stop, out = run_rows(batch, j)
            except Exception as exc:
                raise self._fail(exc, batch.event(j)) from exc
            if stop < 0:  # reading the rows raised: the per-event path takes the rest of the batch
                r = self._do_each(batch.events()[j:], 0)
                return r, n
            j = stop
            if out is not None:
                r = self._forward_batch(out)
                if r is not None:
                    return r, j
            last = self._preload_from
            if j < n and (last is None or last[0] is not batch or last[1] != j):
                # the run stopped at a row: most often a key without cached states. Load every such key of
                # the rest of the batch at once (concurrently), then run again from that row (the batch
                # itself is remembered, not its id, which a later batch may reuse)
                self._preload_from = (batch, j)
                missing = self._missing_keys(batch, j)
                if missing:
                    return self._preload(missing), j
            if j < n:  # the row the run could not take goes through the per-event path
                r = self._do_each([batch.event(j)], 0)
                j += 1
                if r is not None:
                    return r, j
        self._preload_from = None
        return None, n

    def _missing_keys(self, batch: EventBatch, j: int) -> list[Any]:
        """The distinct keys of rows ``j …`` that have no cached states (keys that cannot be read or hashed
        are left to the per-event path, which raises the step's error)."""
        if self.key is None:
            keys = batch.keys()[j:]
        else:
            field = self.key
            keys = [body.get(field) if type(body) is dict else None for body in batch.bodies[j:]]
        states = self._states
        missing: dict[Any, None] = {}
        for key in keys:
            if type(key) is list:
                key = tuple(key)
            try:
                if key not in states:
                    missing[key] = None
            except TypeError:
                continue
        return list(missing)

    async def _preload(self, keys: list[Any]) -> None:
        """Find or load the states of `keys` (one `Table.load_records`). A key whose load or decoding fails
        is left without states: its row takes the per-event path, which does it again and raises the step's
        error."""
        try:
            loads = [key for key in keys if self._live_states(key) is None]
            if not loads:
                return
            records = await self.table.load_records(loads)
            for key, record in zip(loads, records, strict=True):
                if not isinstance(record, BaseException) and key not in self._states:
                    self._install(key, record)
        except Exception:
            return  # the per-event path of the row does it again and raises the step's error

    async def _batch_after(self, pending: Awaitable[Any] | None, batch: EventBatch, j: int) -> None:
        while pending is not None:
            await pending
            pending, j = self._batch_until(batch, j)

    # ------------------------------------------------------------------------------------ per event
    def _do(self, event: Event) -> Awaitable[Any] | None:
        key = self._key(event)
        if type(key) is list:
            key = tuple(key)
        t = self._time(event)
        states = self._states.get(key)
        if states is None:
            return self._do_first(event, key, t)
        return self._process(event, key, t, states)

    def _do_first(self, event: Event, key: Any, t: int) -> Awaitable[Any] | None:
        """`_do` for a key without cached states: check the key, find or load its states."""
        try:
            hash(key)
        except TypeError:
            msg = f"step {self.name!r}: key {key!r} of event {event.id!r} is not hashable"
            raise TypeError(msg) from None
        states = self._live_states(key)
        if states is None:
            return self._after_load(event, key, t)
        return self._process(event, key, t, states)

    def _live_states(self, key: Any) -> list[KeyState] | tuple[KeyState, ...] | None:
        table = self.table
        found = [table.get_state(key, name) for name in self._names]
        if all(s is not None for s in found):
            return self._keep(key, found)  # type: ignore[arg-type]
        if key is None:
            return self._install(key, {})
        return None

    def _keep(self, key: Any, states: list[KeyState]) -> list[KeyState] | tuple[KeyState, ...]:
        """Cache the key's states: a tuple when the fused path can run them (compiled states laid out as the
        plans' own)."""
        fused = self._fused
        if fused is not None and fused.accepts(states):
            kept: list[KeyState] | tuple[KeyState, ...] = tuple(states)
            if fused.book is not None:
                fused.book.add(key, kept)  # type: ignore[arg-type]
        else:
            kept = states
        self._states[key] = kept
        return kept

    def _install(self, key: Any, record: Mapping[str, Any]) -> list[KeyState] | tuple[KeyState, ...]:
        table = self.table
        states = []
        for name, plan, attribute in zip(self._names, self.plans, self._attributes, strict=True):
            st = table.get_state(key, name)
            if st is None:
                blob = record.get(attribute) if record else None
                st = plan.new_state() if blob is None else decode_state(plan, blob)
                table.set_state(key, name, st)
            states.append(st)
        return self._keep(key, states)

    async def _after_load(self, event: Event, key: Any, t: int) -> None:
        try:
            record = await self.table.load_record(key)
            states = self._install(key, record)
            r = self._process(event, key, t, states)
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, event) from exc
        if r is not None:
            await r

    def _process(self, event: Event, key: Any, t: int, states: list[KeyState]) -> Awaitable[Any] | None:
        if self._timed:
            due = self._emitter.advance(t)
            if due:
                r = self._fire(due)
                if r is not None:
                    return self._apply_after(r, event, key, t, states)
        return self._apply_event(event, key, t, states)

    async def _apply_after(
        self, pending: Awaitable[Any], event: Event, key: Any, t: int, states: list[KeyState]
    ) -> None:
        await pending
        try:
            r = self._apply_event(event, key, t, states)
        except FlowError:
            raise
        except Exception as exc:
            raise self._fail(exc, event) from exc
        if r is not None:
            await r

    def _apply(self, event: Event, key: Any, t: int, states: list[KeyState]) -> Awaitable[Any] | None:
        metrics = self.metrics
        metrics["events"] += 1
        body = event.body
        element = copy(event) if self._full_event else body
        # with EmitEveryEvent each aggregator is evaluated as of t right after its own update (aggregators
        # are independent, so this equals updating all of them first); add_evaluate is one compiled call
        features: dict[str, Any] | None = {} if self._every else None
        late = False
        i = 0
        for reader, flt in self._slots:
            st = states[i]
            i += 1
            if not st.observe(t):
                late = True
                continue
            if flt is not None and not flt(element):
                if features is not None:
                    st.evaluate(t, features)
                continue
            if reader.from_body:
                try:
                    v = body[reader.field]
                except (KeyError, TypeError):
                    v = reader.read(event, element)  # raises the right error
            else:
                v = reader.field(element)
            if type(v) is not float or v != v:
                v = reader.convert(v, event)
                if v is _SKIP:
                    metrics["skipped_values"] += 1
                    if features is not None:
                        st.evaluate(t, features)
                    continue
            if features is not None:
                st.add_evaluate(v, t, features)
            else:
                st.add(v, t)
        if late:
            metrics["late_events"] += 1
        if key is not None:
            self.table.mark_states_dirty(key, self._names, event, t)
        if features is not None:
            return self._forward(self._output(event, key, t, states, features))
        if self._emitter.on_event(key, t, event):
            return self._forward(self._output(event, key, t, states))
        return None

    def _fire(self, due: list[Emission]) -> Awaitable[Any] | None:
        """Forward the due timer emissions in order (state before the current event is applied)."""
        outs = [out for emission in due for out in self._emission_events(emission)]
        for i, out in enumerate(outs):
            r = self._forward(out)
            if r is not None:
                return self._forward_rest(r, outs, i + 1)
        return None

    async def _forward_rest(self, pending: Awaitable[Any], outs: list[Event], start: int) -> None:
        await pending
        for out in outs[start:]:
            await self._emit(out)

    def _emission_events(self, emission: Emission) -> list[Event]:
        """The events of one emission: the key's latest event, or a new event per qualifying key."""
        if emission.boundary is None:
            key = emission.key
            return [self._output(emission.ref, key, emission.as_of, self._states[key])]
        b = emission.boundary
        tau = emission.as_of
        outs = []
        for key in self._emitter.keys:
            states = self._states[key]
            if any(st.has_data(tau) for st in states):
                features = self._features(key, tau, states)
                body = augment({"key": key, "time": from_ns(b)}, features, self._augmentation_fn, self.name)
                outs.append(Event._from_ns(body, key, b))
        return outs

    def _features(
        self, key: Any, tau: int, states: list[KeyState], features: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The emitted features as of `tau` (`features`: the aggregators' already evaluated), enriched and
        aliased."""
        if features is None:
            features = {}
            for st in states:
                st.evaluate(tau, features)
        if self._enrich_with:
            try:
                attrs = self.table[key]
            except KeyError:
                attrs = {}
            for col in self._enrich_with:
                features[col] = attrs.get(col)
        if self._aliases:
            features = {self._aliases.get(k, k): v for k, v in features.items()}
        return features

    def _output(
        self, event: Event, key: Any, tau: int, states: list[KeyState], features: dict[str, Any] | None = None
    ) -> Event:
        features = self._features(key, tau, states, features)
        out = copy(event)
        out.key = key
        out.body = augment(event.body, features, self._augmentation_fn, self.name)
        return out

    async def _flush(self) -> None:
        for emission in self._emitter.flush():
            for out in self._emission_events(emission):
                await self._emit(out)
