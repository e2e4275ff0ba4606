"""The pure-Python frames engine: the streaming state machine itself, driven over normalised batches.

It calls the real `KeyState` (per key and aggregator) and the real `Emitter`, in arrival order, exactly as
`AggregateByKey._process`/`_apply`/`_fire` do, so it is the reference the compiled engine is tested
against. It is also the engine used when numba is not installed, and whenever an aggregator's `field` or
`aggr_filter` is a user callable: those are then called row by row on the row dicts, at the points where the
stream calls them (the filter only for accepted events, the field only when the filter passes).

Row references are global row numbers (rows read so far + row in batch), so that an emission of a key's
latest event can refer to a row of an earlier batch (see `storey.frames._job`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from storey.aggregations.emitter import Emission, Emitter
from storey.aggregations.state import KeyState
from storey.aggregations.step import ValueReader
from storey.frames._batch import INVALID, SKIP, Batch, invalid_value_error
from storey.frames._emissions import Emissions, EmissionsBuilder
from storey.frames._layout import StepLayout

__all__ = ["ReferenceEngine"]


class ReferenceEngine:
    """Run the §5 state machine and the emit policy with `KeyState` and `Emitter`.

    Parameters
    ----------
    layout
        The step layout.
    where
        Name used in error messages.
    """

    name = "reference"

    def __init__(self, layout: StepLayout, where: str) -> None:
        self.layout = layout
        self.where = where
        self.states: list[list[KeyState] | None] = []
        self.last_time: list[int | None] = []
        self.emitter = Emitter(layout.policy, layout.aggregates)
        self.metrics = {"events": 0, "late_events": 0, "skipped_values": 0}
        self.pending: dict[int, int] = {}
        self._per_key = layout.per_key_timers
        self._readers = [ValueReader(a, where) for a in layout.aggregates]
        self._out = EmissionsBuilder(layout)

    # ---------------------------------------------------------------------------------- key state
    def add_keys(self, n_keys: int) -> None:
        """Make room for key ids below `n_keys` (new keys start with no state until `install`)."""
        missing = n_keys - len(self.states)
        if missing > 0:
            self.states.extend([None] * missing)
            self.last_time.extend([None] * missing)

    def install(self, kid: int, states: list[KeyState]) -> None:
        """Set the starting states of a new key (fresh, loaded from a Table, or live)."""
        self.states[kid] = states

    def export(self) -> Iterator[tuple[int, list[KeyState], int | None]]:
        """``(key id, states, time of the key's last event)`` for every key seen."""
        for kid, states in enumerate(self.states):
            if states is not None:
                yield kid, states, self.last_time[kid]

    def pending_refs(self) -> set[int]:
        """Global rows that a later emission may still echo (latest events of keys with a pending
        max-events or delay emission)."""
        return set(self.pending.values())

    # ---------------------------------------------------------------------------------- processing
    def process(self, batch: Batch, first_row: int) -> tuple[Emissions, BaseException | None]:
        """Process a batch; returns its emissions and, if a row failed, the error (rows before it are
        processed and emitted)."""
        layout = self.layout
        emitter = self.emitter
        timed = emitter.timed
        metrics = self.metrics
        states_by_key = self.states
        last_time = self.last_time
        out = self._out
        kids = batch.kids.tolist()
        times = batch.times.tolist()
        values = [None if v is None else v.tolist() for v in batch.values]
        status = batch.status
        filters = batch.filters
        readers = self._readers
        fields = [a.field for a in layout.aggregates]
        n_aggs = len(layout.plans)
        per_key = self._per_key
        pending = self.pending
        rows = (
            batch.rows()
            if any(v is None for v in values)
            or any(f is not None and not isinstance(f, np.ndarray) for f in filters)
            else None
        )
        n_events = 0
        n_late = 0
        n_skipped = 0
        error: BaseException | None = None
        for i in range(batch.n):
            kid = kids[i]
            t = times[i]
            states = states_by_key[kid]
            assert states is not None
            if timed:
                due = emitter.advance(t)
                if due:
                    self._fire(due)
            n_events += 1
            late = False
            for a in range(n_aggs):
                st = states[a]
                if not st.observe(t):
                    late = True
                    continue
                flt = filters[a]
                if flt is not None:
                    if isinstance(flt, np.ndarray):
                        if not flt[i]:
                            continue
                    elif not flt(rows[i]):  # type: ignore[index]
                        continue
                vals = values[a]
                if vals is not None:
                    s = status[a][i]  # type: ignore[index]
                    if s == SKIP:
                        n_skipped += 1
                        continue
                    if s == INVALID:
                        error = invalid_value_error(layout.aggregates[a], batch, i, self.where)
                        break
                    v = vals[i]
                else:
                    try:
                        v = readers[a].convert(fields[a](rows[i]), None)  # type: ignore[misc,index]
                    except TypeError as exc:
                        error = TypeError(f"{exc} ({batch.where(i)})")
                        break
                    if type(v) is not float:  # the reader's skip marker
                        n_skipped += 1
                        continue
                st.add(v, t)
            if error is not None:
                n_events -= 1
                break
            if late:
                n_late += 1
            last_time[kid] = t
            ref = first_row + i
            if emitter.on_event(kid, t, ref):
                out.add(ref, kid, t, [st.values(t) for st in states])
                if per_key:
                    pending.pop(kid, None)
            elif per_key:
                pending[kid] = ref
        metrics["events"] += n_events
        metrics["late_events"] += n_late
        metrics["skipped_values"] += n_skipped
        return out.build(), error

    def _fire(self, due: list[Emission]) -> None:
        out = self._out
        for emission in due:
            if emission.boundary is None:
                kid = emission.key
                states = self.states[kid]
                assert states is not None
                tau = emission.as_of
                out.add(emission.ref, kid, tau, [st.values(tau) for st in states])
                self.pending.pop(kid, None)
                continue
            tau = emission.as_of
            for kid in self.emitter.keys:
                states = self.states[kid]
                assert states is not None
                if any(st.has_data(tau) for st in states):
                    out.add(-1, kid, emission.boundary, [st.values(tau) for st in states])

    def finish(self) -> Emissions:
        """The termination flush (§6.5)."""
        self._fire(self.emitter.flush())
        return self._out.build()
