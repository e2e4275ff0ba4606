"""One frames aggregation run: inputs → normalised batches → engine → output tables (and Table state).

`AggregationJob` is what `aggregate`, `build_state` and `backfill` drive. Per input batch it

1. encodes keys and takes the checked event times (`storey.frames.io`), extracts the value columns and
   evaluates `FieldEquals` filters column-wise (`storey.frames._batch`);
2. gives every key seen for the first time its starting state: fresh, the live state the Table already
   holds, or the state loaded from the Table's driver (as `AggregateByKey` does on a key's first event);
3. runs the engine (compiled, or the pure-Python reference) in arrival order;
4. assembles the emitted rows (`storey.frames._output`).

Emissions of a key's *latest* event (max-events and delay policies) may come batches later; the rows they
can still echo are carried from batch to batch (at most one per key with a pending emission).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from storey.aggregations.emit import EmitPolicy
from storey.aggregations.field import FieldEquals, normalize_aggregates
from storey.aggregations.naming import check_unique_features
from storey.errors import PerformanceWarning
from storey.frames._batch import Batch, fill_aggregator_columns
from storey.frames._keys import KeyEncoder
from storey.frames._layout import StepLayout, as_policy
from storey.frames._output import OutputAssembler

__all__ = ["AggregationJob"]


class AggregationJob:
    """A frames run of one aggregation step.

    Parameters
    ----------
    aggregates
        `FieldAggregator`s or upstream dicts.
    key
        Column name, list of column names or callable on the row dict.
    time_field
        The time column.
    emit_policy, augmentation_fn, aliases
        As for `AggregateByKey`.
    engine
        ``'auto'`` (compiled when possible), ``'compiled'`` or ``'reference'``.
    where
        Name used in messages.
    """

    def __init__(
        self,
        aggregates: Sequence[Any],
        *,
        key: Any,
        time_field: str,
        emit_policy: EmitPolicy | Mapping[str, Any] | None = None,
        augmentation_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
        aliases: Mapping[str, str] | None = None,
        engine: str = "auto",
        where: str = "storey.frames.aggregate",
    ) -> None:
        self.where = where
        self.aggregates = normalize_aggregates(aggregates, where)
        check_unique_features(self.aggregates, where)
        self.policy = as_policy(emit_policy, where)
        if not isinstance(time_field, str):
            msg = f"{where}: `time_field` must be a column name, got {time_field!r}"
            raise TypeError(msg)
        self.time_field = time_field
        self.keys = KeyEncoder(key, where)
        self.augmentation_fn = augmentation_fn
        self.aliases = dict(aliases or {})
        if engine not in ("auto", "compiled", "reference"):
            msg = f"{where}: unknown engine implementation {engine!r}"
            raise ValueError(msg)
        self.engine_choice = engine
        self.layout: StepLayout | None = None
        self.engine: Any = None
        self.assembler: OutputAssembler | None = None
        self.table: Any = None
        self.rows_read = 0
        self.skipped_rows = 0
        self._n_keys = 0
        self._carry: Any = None
        self._carry_rows = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------------------------ setup
    @property
    def key_fields(self) -> list[str] | None:
        return self.keys.columns

    @property
    def value_fields(self) -> list[str]:
        out: list[str] = []
        for agg in self.aggregates:
            if isinstance(agg.field, str):
                out.append(agg.field)
            if isinstance(agg.aggr_filter, FieldEquals):
                out.append(agg.aggr_filter.field)
        return list(dict.fromkeys(out))

    async def start(self, table: Any = None) -> None:
        """Load and reconcile the stored schema (saving it when it changes), build the layout and engine."""
        self.table = table
        stored = await table.load_schema() if table is not None else None
        layout, doc, changed = StepLayout.build(
            self.aggregates, stored, self.policy, self.aliases, self.where
        )
        if table is not None and changed:
            await table.save_schema(doc)
        self.layout = layout
        self.engine = self._make_engine(layout)
        self.assembler = OutputAssembler(layout, self.keys, self.augmentation_fn, self.where)
        slow = layout.callables()
        if self.keys.callable is not None:
            slow.append("the key")
        if self.augmentation_fn is not None:
            slow.append("augmentation_fn")
        if slow:
            warnings.warn(
                f"{self.where}: {', '.join(slow)} {'is a' if len(slow) == 1 else 'are'} user "
                "function(s), called row by row",
                PerformanceWarning,
                stacklevel=4,
            )

    def _make_engine(self, layout: StepLayout) -> Any:
        from storey.frames._compiled import CompiledEngine, compiled_available
        from storey.frames._reference import ReferenceEngine

        choice = self.engine_choice
        if choice == "compiled" or (choice == "auto" and compiled_available(layout)):
            return CompiledEngine(layout, self.where)
        return ReferenceEngine(layout, self.where)

    # ------------------------------------------------------------------------------------ batches
    def normalise(self, ib: Any) -> Batch:
        """Keys, times, values and filters of one `InputBatch`."""
        from storey.frames.io import times_ns

        batch = Batch(ib.batch, ib.source, ib.row_offset)
        batch.times = np.ascontiguousarray(times_ns(ib, self.time_field), dtype=np.int64)
        batch.kids = self.keys.encode(ib.batch, batch.rows)
        assert self.layout is not None
        fill_aggregator_columns(batch, self.layout.aggregates)
        return batch

    async def _load_new_keys(self) -> None:
        """Give each new key id its starting state (fresh, live in the Table, or loaded from it)."""
        n = len(self.keys)
        if n == self._n_keys:
            return
        engine = self.engine
        engine.add_keys(n)
        layout = self.layout
        assert layout is not None
        table = self.table
        compiled = engine.name == "compiled"
        for kid in range(self._n_keys, n):
            if table is None:
                if not compiled:
                    engine.install(kid, [p.new_state() for p in layout.plans])
                continue
            engine.install(kid, await self._stored_states(self.keys.values[kid]))
        self._n_keys = n

    async def _stored_states(self, key: Any) -> list[Any]:
        from storey.aggregations.blob import decode_state
        from storey.aggregations.naming import state_attribute

        layout = self.layout
        assert layout is not None
        table = self.table
        live = [table.get_state(key, name) for name in layout.names]
        if all(s is not None for s in live):
            return live
        record = await table.load_record(key) if key is not None else {}
        out = []
        for name, plan, st in zip(layout.names, layout.plans, live, strict=True):
            if st is None:
                blob = record.get(state_attribute(name))
                st = plan.new_state() if blob is None else decode_state(plan, blob)
            out.append(st)
        return out

    async def feed(self, ib: Any) -> tuple[Any | None, BaseException | None]:
        """Process one `InputBatch`; returns its output table (or ``None``) and the error of a row that
        failed (the rows before it are processed and in the table)."""
        self.skipped_rows += int(getattr(ib, "skipped_rows", 0) or 0)
        if ib.batch.num_rows == 0:
            if self.assembler is not None and self.assembler.input_schema is None and ib.batch.num_columns:
                self.assembler.input_schema = ib.batch.schema
            return None, None
        batch = self.normalise(ib)
        await self._load_new_keys()
        first_row = self.rows_read
        em, error = self.engine.process(batch, first_row)
        self.rows_read += batch.n
        return self._assemble(em, batch.data, first_row), error

    def finish(self) -> Any | None:
        """The termination flush."""
        em = self.engine.finish()
        return self._assemble(em, None, self.rows_read)

    def _assemble(self, em: Any, data: Any, first_row: int) -> Any | None:
        import pyarrow as pa

        assert self.assembler is not None
        carry = self._carry
        if carry is None or carry.num_rows == 0:
            rows = data
            src = em.src
            n_carry = 0
        else:
            n_carry = carry.num_rows
            if data is None:
                rows = carry
            else:
                batch_table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
                rows = pa.concat_tables([carry, batch_table], promote_options="permissive")
            src = em.src
        if n_carry and len(src):
            mapped = np.where(
                src >= first_row,
                src - first_row + n_carry,
                np.searchsorted(self._carry_rows, src),
            )
            mapped[em.src < 0] = -1
            em.src = mapped
        elif len(src):
            em.src = np.where(src >= 0, src - first_row, -1)
        if self.layout is not None and self.layout.per_key_timers and rows is not None:
            refs = np.array(sorted(self.engine.pending_refs()), dtype=np.int64)
            if len(refs):
                pos = np.where(
                    refs >= first_row, refs - first_row + n_carry, np.searchsorted(self._carry_rows, refs)
                )
                self._carry = rows.take(pa.array(pos))
                if isinstance(self._carry, pa.RecordBatch):
                    self._carry = pa.Table.from_batches([self._carry])
            else:
                self._carry = None
            self._carry_rows = refs
        if rows is not None and self.assembler.input_schema is None:
            self.assembler.input_schema = rows.schema
        return self.assembler.assemble(em, rows)

    # ------------------------------------------------------------------------------------ results
    @property
    def metrics(self) -> dict[str, int]:
        out = dict(self.engine.metrics) if self.engine is not None else {}
        out.setdefault("events", 0)
        out.setdefault("late_events", 0)
        out.setdefault("skipped_values", 0)
        out["rows"] = self.rows_read
        out["skipped_rows"] = self.skipped_rows
        return out

    async def persist(self) -> None:
        """Install the final per-key states in the Table and mark them dirty (as the stream's per-event
        bookkeeping leaves them); the caller flushes or closes the Table."""
        table = self.table
        layout = self.layout
        assert table is not None and layout is not None
        values = self.keys.values
        for kid, states, last_t in self.engine.export():
            key = values[kid]
            for name, st in zip(layout.names, states, strict=True):
                table.set_state(key, name, st)
            if key is not None:
                for name in layout.names:
                    table.mark_state_dirty(key, name, None, last_t)
