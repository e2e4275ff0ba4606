"""The per-key aggregation state machine of spec AGGREGATIONS.md §5, shared by both engines.

`AggregatorPlan` compiles one `FieldAggregator` (plus the stored-schema overrides of §7.1) once per step;
`plan.new_state()` gives a `KeyState` per key. A `KeyState` holds the high-water time ``H`` and a sparse map
``tile index -> row`` (a tuple of every maintained kernel field, ``n`` first) of non-empty tiles.

Per event of a key the caller does::

    accepted = st.observe(t)                 # H = max(H, t); acceptance with the updated H (§5.2)
    if accepted and filter_passes and not skipped:
        st.add(value, t)                     # update the row of tile(t) in arrival order
    if accepted:
        st.evaluate(t, features)             # §5.3 as of t; otherwise the aggregator's features are absent

Evaluation folds, per window, the non-empty tiles of the window range oldest → newest with the kernels'
merge, the tile of τ last. The fold of the *closed* part (every tile of the range except tile(τ)) is cached
per window; the cache is extended tile by tile while the oldest folded tile stays the same, and dropped when
a late event lands in its range or its oldest tile leaves the window. It therefore performs exactly the
merges of the uncached fold, in the same order (tests compare both bit for bit).

`KeyState` has two implementations with the same bits: `PyKeyState` here (tuples, fused CPython code), and
`storey.aggregations._compiled_state.CompiledKeyState` (one numpy buffer per key, numba code generated from
the same templates), which the plan picks when numba is available (`AggregatorPlan.engine`). On sparse keys
the largest window loses its oldest tile at almost every event, so the cached fold restarts from the new
oldest tile: tens of merges per event, which is where compiled code pays.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any, ClassVar

from storey._utils._imports import require
from storey.aggregations._fused import FusedFunctions, fuse
from storey.aggregations.field import FieldAggregator
from storey.aggregations.kernels import canonical_kernels, get_aggregation
from storey.aggregations.kernels._codegen import compile_function
from storey.aggregations.kernels.base import _numba_enabled
from storey.aggregations.windows import FixedWindowType, retention_bound, window_range

__all__ = ["NO_TIME", "AggregatorPlan", "KeyState", "PyKeyState"]

NO_TIME = -(2**63)
"""``H`` of a key that has seen no event (below every valid instant, so the first event sets ``H = t``)."""


class KeyState:
    """The state of one aggregator for one key (create it with `AggregatorPlan.new_state`).

    Two implementations give the same bits: `PyKeyState` (tiles as Python tuples, fused CPython code) and
    `storey.aggregations._compiled_state.CompiledKeyState` (tiles in one numpy buffer, numba code); the plan
    picks one (`AggregatorPlan.engine`).

    Attributes
    ----------
    H
        The high-water event time in ns (`NO_TIME` before the first event).
    M
        ``tile(H)``.
    keys
        Indices of the non-empty tiles, ascending (a new list for a compiled state).
    rows
        Their rows, aligned with `keys`; a row is a tuple of the plan's `row_fields` (``n`` first).
    """

    __slots__ = ("H", "M")

    # Set on the per-plan subclass built by AggregatorPlan.
    plan: ClassVar[AggregatorPlan]
    _P: ClassVar[int]
    _N1: ClassVar[int]
    _NRET: ClassVar[int]
    _NMAX: ClassVar[int]
    _KIND: ClassVar[int]  # 0 sliding, 1 fixed current-open, 2 fixed last-closed
    _EMPTY_ROW: ClassVar[tuple[Any, ...]]
    keys: list[int]
    rows: list[tuple[Any, ...]]

    # -- events ------------------------------------------------------------------------------------------

    def observe(self, t: int) -> bool:
        """Advance ``H`` to ``max(H, t)`` and return whether an event at `t` is accepted (§5.2 steps 1–2).

        Call it for every event of the key, including filtered events and skipped values.
        """
        if t > self.H:
            self.H = t
            self.M = t // self._P
        return t // self._P >= self.M - self._N1

    def add(self, value: Any, t: int) -> None:
        """Add an accepted value (float64, or anything for a count-only plan) to the row of ``tile(t)``."""
        raise NotImplementedError

    def update(self, value: Any, t: int) -> bool:
        """`observe` then, if accepted, `add`; returns whether the event was accepted."""
        if self.observe(t):
            self.add(value, t)
            return True
        return False

    # -- evaluation --------------------------------------------------------------------------------------

    def evaluate(self, tau: int, out: dict[str, Any]) -> bool:
        """Write the features as of `tau` into `out` (feature order); return ``False`` (writing nothing)
        when they are absent because ``tile(τ) < M − N + 1`` (§5.3)."""
        raise NotImplementedError

    def values(self, tau: int) -> tuple[Any, ...] | None:
        """The features as of `tau` as a tuple in feature order, or ``None`` when absent."""
        raise NotImplementedError

    def add_evaluate(self, value: Any, t: int, out: dict[str, Any]) -> bool:
        """`add` then `evaluate` as of `t` (the per-event path of `EmitEveryEvent`; one compiled call)."""
        self.add(value, t)
        return self.evaluate(t, out)

    def evaluate_uncached(self, tau: int, out: dict[str, Any]) -> bool:
        """`evaluate` without any cache: each window folded from its oldest tile (the reference path)."""
        return self.plan.python_state_class.from_tiles(self.H, self.keys, self.rows).evaluate_uncached(
            tau, out
        )

    def has_data(self, tau: int) -> bool:
        """Whether the largest window as of `tau` holds any value (features present and some ``n > 0``)."""
        raise NotImplementedError

    def _closed_range(self, k: int, nw: int) -> tuple[int, int]:
        """The window's tiles other than tile(τ) (all of them for a last-closed window)."""
        if self._KIND == 0:
            return k - nw + 1, k - 1
        start = (k // nw) * nw
        if self._KIND == 1:
            return start, k - 1
        return start - nw, start - 1

    def _data_range(self, k: int) -> tuple[int, int]:
        """The tiles `has_data` looks at as of tile `k`: the largest window, tile(τ) included."""
        lo, hi = self._closed_range(k, self._NMAX)
        return lo, (hi if self._KIND == 2 else k)

    # -- inspection --------------------------------------------------------------------------------------

    @classmethod
    def from_tiles(cls, H: int, keys: Sequence[int], rows: Sequence[Sequence[Any]]) -> KeyState:
        """A state of this class holding the given non-empty tiles (see `AggregatorPlan.state_from_tiles`)."""
        raise NotImplementedError

    @property
    def retention_bound(self) -> int:
        """The oldest tile that must be kept (and persisted): ``M − 2N + 2`` (fixed: ``M − 3N + 2``)."""
        return self.M - self._NRET

    @property
    def tiles(self) -> dict[int, tuple[Any, ...]]:
        """``{tile index: row}`` (a new dict; for inspection)."""
        return dict(zip(self.keys, self.rows, strict=True))

    def retained(self) -> tuple[list[int], list[tuple[Any, ...]]]:
        """Tile indices at or above the retention bound (ascending) and their rows (what a blob stores)."""
        keys = self.keys
        start = bisect_left(keys, self.M - self._NRET)
        return keys[start:], self.rows[start:]

    def copy(self) -> KeyState:
        """An independent copy (same ``H`` and tiles; caches start empty)."""
        return self.from_tiles(self.H, self.keys, self.rows)

    def summary(self, k: int) -> dict[str, Any]:
        """The fields of tile `k` as a dict (the empty summary when the tile holds no value)."""
        row = self.tiles.get(k)
        return dict(zip(self.plan.row_fields, self._EMPTY_ROW if row is None else row, strict=True))

    def encode(self) -> bytes:
        """The persisted blob of this state (format 1, spec AGGREGATIONS.md §7.2); used by `Table`."""
        from storey.aggregations.blob import encode_state

        return encode_state(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.plan.name!r} H={self.H} tiles={len(self.keys)}>"


class PyKeyState(KeyState):
    """`KeyState` in pure Python: a sparse map ``tile index -> row`` as two aligned lists.

    Rows are replaced, never mutated; tuples of numbers are not tracked by the cyclic garbage collector,
    which matters with millions of tiles. The fused functions of `storey.aggregations._fused` do the
    arithmetic; the closed-part fold of each window is cached as the module docstring describes.
    """

    __slots__ = ("_accl", "_ck", "_cmax", "_last_j", "_last_k", "caches", "keys", "rows")

    _IW: ClassVar[tuple[tuple[int, int], ...]]
    _update_row: ClassVar[Any]
    _first_acc: ClassVar[Any]
    _extend: ClassVar[Any]
    _emit: ClassVar[Any]
    _emit_values: ClassVar[Any]
    _accs: ClassVar[Any]  # generated per plan by _accs_source or _count_accs_source
    _DELTA: ClassVar[bool]  # the window caches are running integer sums (_count_accs_source)
    _CCAP: ClassVar[int | None]

    def __init__(self, H: int = NO_TIME) -> None:
        self.H = H
        self.M = H // self._P
        self.keys: list[int] = []
        self.rows: list[tuple[Any, ...]] = []
        # per window: [lo, hi, first folded tile, last folded tile, acc] of the cached closed-part fold
        self.caches: list[list[Any]] = [[None, None, None, None, None] for _ in self._IW]
        self._ck: int | None = None  # the tile(τ) for which _accl (one acc per window) is valid
        self._accl: list[Any] = []
        self._cmax = NO_TIME  # no cached range reaches above this tile
        self._last_k: int | None = None  # the tile of the last add, and its index in keys/rows
        self._last_j = 0

    @classmethod
    def from_tiles(cls, H: int, keys: Sequence[int], rows: Sequence[Sequence[Any]]) -> PyKeyState:
        st = cls(H)
        st.keys = [int(k) for k in keys]
        st.rows = [tuple(r) for r in rows]
        return st

    # -- events ------------------------------------------------------------------------------------------

    def add(self, value: Any, t: int) -> None:
        """Add an accepted value (float64, or anything for a count-only plan) to the row of ``tile(t)``."""
        k = t // self._P
        if k == self._last_k:
            j = self._last_j
        else:
            keys = self.keys
            j = len(keys) if not keys or k > keys[-1] else bisect_left(keys, k)
            if j == len(keys) or keys[j] != k:
                j = self._new_tile(k, j)
            self._last_k = k
            self._last_j = j
        rows = self.rows
        rows[j] = self._update_row(rows[j], value, t)
        if k <= self._cmax:
            self._invalidate(k)

    def _new_tile(self, k: int, j: int) -> int:
        """Insert the empty row of tile `k` at index `j`; return its index after retention pruning."""
        keys = self.keys
        if j == len(keys):
            keys.append(k)
            self.rows.append(self._EMPTY_ROW)
            bound = self.M - self._NRET
            if keys[0] < bound:  # retention (§5.2): drop tiles no evaluation can reach
                cut = bisect_left(keys, bound)
                if self._DELTA:
                    self._forget(bound, keys[:cut], self.rows[:cut])
                del keys[:cut]
                del self.rows[:cut]
                j -= cut
        else:
            keys.insert(j, k)
            self.rows.insert(j, self._EMPTY_ROW)
        return j

    def _forget(self, bound: int, old_keys: list[int], old_rows: list[tuple[Any, ...]]) -> None:
        """Before tiles below `bound` are dropped, take them out of the running integer sums that include
        them (count-only plans, see `_count_accs_source`): those sums then cover ``[bound, hi]``."""
        cap = self._CCAP
        for c in self.caches:
            lo = c[0]
            if lo is None or lo >= bound:
                continue
            self._ck = None
            if c[1] < bound:
                c[0] = c[1] = c[4] = None
                continue
            acc = list(c[4])
            for key, row in zip(old_keys, old_rows, strict=True):
                if key >= lo:
                    acc[0] -= row[0]
                    if cap is not None:
                        acc[1] -= cap if row[0] > cap else row[0]
            c[:] = (bound, c[1], None, None, tuple(acc))

    def _row(self, k: int) -> tuple[Any, ...] | None:
        """The row of tile `k`, or ``None`` when the tile holds no value."""
        if k == self._last_k:
            return self.rows[self._last_j]
        keys = self.keys
        j = bisect_left(keys, k)
        return self.rows[j] if j < len(keys) and keys[j] == k else None

    def _invalidate(self, k: int) -> None:
        for c in self.caches:
            if c[0] is not None and c[0] <= k <= c[1]:
                c[0] = c[1] = c[2] = c[3] = c[4] = None
                self._ck = None

    # -- evaluation --------------------------------------------------------------------------------------

    def evaluate(self, tau: int, out: dict[str, Any]) -> bool:
        """Write the features as of `tau` into `out` (feature order); return ``False`` (writing nothing)
        when they are absent because ``tile(τ) < M − N + 1`` (§5.3)."""
        k = tau // self._P
        if k < self.M - self._N1:
            return False
        if self._KIND == 2:
            cur = None
        elif k == self._last_k:
            cur = self.rows[self._last_j]
        else:
            cur = self._row(k)
        self._emit(self._accl if k == self._ck else self._accs(k), cur, out)
        return True

    def values(self, tau: int) -> tuple[Any, ...] | None:
        """The features as of `tau` as a tuple in feature order, or ``None`` when absent."""
        k = tau // self._P
        if k < self.M - self._N1:
            return None
        cur = None if self._KIND == 2 else self._row(k)
        return self._emit_values(self._accl if k == self._ck else self._accs(k), cur)

    def evaluate_uncached(self, tau: int, out: dict[str, Any]) -> bool:
        """`evaluate` without the cache: each window folded from its oldest tile (the reference path)."""
        k = tau // self._P
        if k < self.M - self._N1:
            return False
        accs = []
        for _, nw in self._IW:
            lo, hi = self._closed_range(k, nw)
            j0 = bisect_left(self.keys, lo)
            j1 = bisect_right(self.keys, hi)
            accs.append(
                self._extend(self._first_acc(self.rows[j0]), self.rows, j0 + 1, j1) if j0 < j1 else None
            )
        cur = None if self._KIND == 2 else self._row(k)
        self._emit(accs, cur, out)
        return True

    def has_data(self, tau: int) -> bool:
        """Whether the largest window as of `tau` holds any value (features present and some ``n > 0``)."""
        k = tau // self._P
        if k < self.M - self._N1:
            return False
        lo, hi = self._data_range(k)
        j = bisect_left(self.keys, lo)
        return j < len(self.keys) and self.keys[j] <= hi

    def retained(self) -> tuple[list[int], list[tuple[Any, ...]]]:
        """Tile indices at or above the retention bound (ascending) and their rows (what a blob stores)."""
        start = bisect_left(self.keys, self.M - self._NRET)
        return self.keys[start:], self.rows[start:]

    def summary(self, k: int) -> dict[str, Any]:
        """The fields of tile `k` as a dict (the empty summary when the tile holds no value)."""
        row = self._row(k)
        return dict(zip(self.plan.row_fields, self._EMPTY_ROW if row is None else row, strict=True))


def _accs_source(kind: int, tiles_per_window: Sequence[int]) -> str:
    """Source of ``accs(self, k)``: the cached closed-part fold of every window as of tile `k` (unrolled).

    Per window, the cache entry ``c = [lo, hi, first, last, acc]`` is reused as is when the range is
    unchanged; it is *continued* (``extend`` with the newer tiles) when the oldest folded tile is still the
    oldest tile in range and no folded tile lies beyond the range; otherwise the range is folded afresh
    from its oldest tile. All three give the uncached fold's exact operations.
    """
    lines = [
        "def accs(self, k):",
        "    keys = self.keys",
        "    rows = self.rows",
        "    caches = self.caches",
    ]
    if kind != 2:
        lines += ["    hi = k - 1", "    j1 = bisect_right(keys, hi)"]
    for i, nw in enumerate(tiles_per_window):
        if kind == 0:
            lines.append(f"    lo = k - {nw - 1}")
        elif kind == 1:
            lines.append(f"    lo = (k // {nw}) * {nw}")
        else:
            lines += [
                f"    hi = (k // {nw}) * {nw} - 1",
                f"    lo = hi - {nw - 1}",
                "    j1 = bisect_right(keys, hi)",
            ]
        lines += [
            f"    c = caches[{i}]",
            "    if c[0] == lo and c[1] == hi:",
            f"        a{i} = c[4]",
            "    else:",
            "        j0 = bisect_left(keys, lo, 0, j1)",
            "        if j0 >= j1:",
            f"            a{i} = None",
            "            c[:] = (lo, hi, None, None, None)",
            "        else:",
            "            first = keys[j0]",
            "            last = keys[j1 - 1]",
            f"            a{i} = c[4]",
            f"            if a{i} is not None and c[2] == first and c[3] <= last:",
            "                if c[3] != last:",
            f"                    a{i} = extend(a{i}, rows, bisect_right(keys, c[3], j0, j1), j1)",
            "            else:",
            f"                a{i} = extend(first_acc(rows[j0]), rows, j0 + 1, j1)",
            f"            c[:] = (lo, hi, first, last, a{i})",
            "        if hi > self._cmax:",
            "            self._cmax = hi",
        ]
    names = ", ".join(f"a{i}" for i in range(len(tiles_per_window)))
    lines += ["    self._ck = k", f"    self._accl = accs = [{names}]", "    return accs"]
    return "\n".join(lines) + "\n"


def _sum_loop(start: str, stop: str, sign: str, capped: bool, level: int) -> str:
    """Add (or subtract) the tiles ``rows[start:stop]`` to the running ``n`` (and capped ``cc``)."""
    body = [f"for r in rows[{start} : {stop}]:", f"    n {sign}= r[0]"]
    if capped:
        body.append(f"    cc {sign}= (CCAP if r[0] > CCAP else r[0])")
    return "\n".join("    " * level + line for line in body)


def _count_accs_source(kind: int, tiles_per_window: Sequence[int], capped: bool) -> str:
    """`accs` for plans whose only emitted aggregation is an integer ``count`` (no cap, or an int cap).

    Their window accumulator is ``(n,)`` or ``(n, Σ min(cap, n))``: integer sums, exact in any order, so the
    cached sum is moved with the window by adding the tiles that enter and subtracting those that leave,
    which gives the same integers as the canonical fold (§5.3 allows caches that are bit-identical). The
    empty accumulator is ``(0,)``/``(0, 0)``, which `emit` treats exactly like an absent one.
    """
    lines = ["def accs(self, k):", "    keys = self.keys", "    rows = self.rows", "    caches = self.caches"]
    if kind != 2:
        lines.append("    hi = k - 1")
    for i, nw in enumerate(tiles_per_window):
        if kind == 0:
            lines.append(f"    lo = k - {nw - 1}")
        elif kind == 1:
            lines.append(f"    lo = (k // {nw}) * {nw}")
        else:
            lines += [f"    hi = (k // {nw}) * {nw} - 1", f"    lo = hi - {nw - 1}"]
        moves = [
            "        olo = c[0]",
            "        ohi = c[1]",
            "        if olo is not None and olo <= lo <= ohi + 1 and ohi <= hi:  # moved forward: adjust",
            f"            {'n, cc' if capped else 'n,'} = c[4]",
            "            if olo < lo:",
            _sum_loop("bisect_left(keys, olo)", "bisect_left(keys, lo)", "-", capped, 4),
            "            if ohi < hi:",
            _sum_loop("bisect_right(keys, ohi)", "bisect_right(keys, hi)", "+", capped, 4),
            "        else:  # nothing cached, invalidated, moved back or jumped: count the range",
            "            n = cc = 0",
            _sum_loop("bisect_left(keys, lo)", "bisect_right(keys, hi)", "+", capped, 3),
        ]
        acc = "(n, cc)" if capped else "(n,)"
        lines += [
            f"    c = caches[{i}]",
            "    if c[0] == lo and c[1] == hi:",
            f"        a{i} = c[4]",
            "    else:",
            *moves,
            f"        a{i} = {acc}",
            f"        c[:] = (lo, hi, None, None, a{i})",
            "        if hi > self._cmax:",
            "            self._cmax = hi",
        ]
    names = ", ".join(f"a{i}" for i in range(len(tiles_per_window)))
    lines += ["    self._ck = k", f"    self._accl = accs = [{names}]", "    return accs"]
    return "\n".join(lines) + "\n"


class AggregatorPlan:
    """One aggregator compiled for a step: tile grid, maintained kernels, emitted features, fused code.

    Parameters
    ----------
    aggregator
        The `FieldAggregator`; its windows, aggregations and `max_value` are used (not `field` or
        `aggr_filter`, which are the caller's job).
    kernels
        Extra kernels to maintain (the stored schema's list, §7.1); the aggregator's own kernels are always
        maintained. The union is kept in canonical order.
    n_slots
        `N` used for acceptance, absence and retention: the stored largest window in tiles (§7.1). Default
        and minimum: the aggregator's own largest window.
    fixed_window_type
        For fixed windows: which window evaluations read (`QueryByKey` may ask for `LastClosedWindow`).
    engine
        Which `KeyState` implementation `new_state` builds: ``'python'`` (`PyKeyState`), ``'numba'``
        (`CompiledKeyState`, needs ``storey[fast]`` and kernels with templates) or ``'auto'``: numba when it
        is importable, ``STOREY_DISABLE_NUMBA`` is unset and the plan allows it. Both give the same bits.

    Examples
    --------
    >>> from storey.aggregations.field import FieldAggregator
    >>> from storey.aggregations.windows import SlidingWindows
    >>> plan = AggregatorPlan(FieldAggregator("s", "x", ["sum", "count"], SlidingWindows(["1h"], "10m")))
    >>> st = plan.new_state()
    >>> h = 3_600_000_000_000
    >>> m = h // 60
    >>> for v, t in [(1.0, 21 * h), (2.0, 21 * h + 30 * m), (4.0, 21 * h + 10 * m), (8.0, 21 * h + 35 * m)]:
    ...     _ = st.update(v, t)
    >>> out = {}
    >>> st.evaluate(21 * h + 35 * m, out), out
    (True, {'s_sum_1h': 15.0, 's_count_1h': 4})
    """

    def __init__(
        self,
        aggregator: FieldAggregator,
        *,
        kernels: Sequence[str] | None = None,
        n_slots: int | None = None,
        fixed_window_type: FixedWindowType = FixedWindowType.CurrentOpenWindow,
        engine: str = "auto",
    ) -> None:
        windows = aggregator.windows
        self.aggregator = aggregator
        self.name = aggregator.name
        self.windows = windows
        self.window_type = windows.window_type
        self.period_ns = windows.period_ns
        self.fixed_window_type = fixed_window_type
        self.n_slots = windows.n_tiles if n_slots is None else int(n_slots)
        if self.n_slots < windows.n_tiles:
            msg = (
                f"aggregator {self.name!r}: n_slots {self.n_slots} is smaller than the largest window "
                f"({windows.n_tiles} tiles)"
            )
            raise ValueError(msg)
        self.kernels = canonical_kernels(list(aggregator.kernels) + list(kernels or ()))
        self.aggregations = aggregator.aggregations
        self.feature_names = aggregator.feature_names
        self.max_value = aggregator.max_value
        self.cap = None if self.max_value is None else float(self.max_value)
        count_cap = self.max_value if "count" in self.aggregations else None
        features = [[f"{self.name}_{a}_{w}" for w in windows.windows] for a in self.aggregations]
        self.fused: FusedFunctions = fuse(
            self.kernels, self.aggregations, features, self.cap, count_cap, len(windows.windows), self.name
        )
        self.row_fields = self.fused.row_fields
        fixed = self.window_type == "fixed"
        kind = 0 if not fixed else (2 if fixed_window_type is FixedWindowType.LastClosedWindow else 1)
        ns = {
            "bisect_left": bisect_left,
            "bisect_right": bisect_right,
            "extend": self.fused.extend,
            "first_acc": self.fused.first_acc,
        }
        integer_count = self.fused.acc_fields == ("n",) and (
            count_cap is None or (isinstance(count_cap, int) and not isinstance(count_cap, bool))
        )
        if integer_count:
            ns["CCAP"] = count_cap
            self.accs_source = _count_accs_source(kind, windows.tiles_per_window, count_cap is not None)
        else:
            self.accs_source = _accs_source(kind, windows.tiles_per_window)
        accs = compile_function(self.accs_source, "accs", ns, f"<storey state {self.name}.accs>")
        attrs = {
            "__slots__": (),
            "plan": self,
            "_P": self.period_ns,
            "_N1": self.n_slots - 1,
            "_NRET": (3 if fixed else 2) * self.n_slots - 2,
            "_NMAX": windows.n_tiles,
            "_KIND": kind,
            "_EMPTY_ROW": self.fused.empty_row,
        }
        self.python_state_class: type[PyKeyState] = type(
            f"KeyState_{self.name}",
            (PyKeyState,),
            {
                **attrs,
                "_IW": tuple(enumerate(windows.tiles_per_window)),
                "_update_row": staticmethod(self.fused.update_row),
                "_first_acc": staticmethod(self.fused.first_acc),
                "_extend": staticmethod(self.fused.extend),
                "_emit": staticmethod(self.fused.emit),
                "_emit_values": staticmethod(self.fused.emit_values),
                "_accs": accs,
                "_DELTA": integer_count,
                "_CCAP": count_cap if integer_count else None,
            },
        )
        self.engine = self._resolve_engine(engine)
        self.state_class: type[KeyState] = self.python_state_class
        if self.engine == "numba":
            from storey.aggregations._compiled_state import compiled_state_class

            try:
                self.state_class = compiled_state_class(self, attrs)
            except Exception as exc:
                if engine == "numba":
                    raise
                warnings.warn(  # same bits either way; only slower
                    f"aggregator {self.name!r}: the numba state machine failed to compile ({exc!r}); "
                    "using the pure-Python one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.engine = "python"

    def _resolve_engine(self, engine: str) -> str:
        if engine not in ("auto", "python", "numba"):
            msg = f"aggregator {self.name!r}: engine must be 'auto', 'python' or 'numba', got {engine!r}"
            raise ValueError(msg)
        if engine == "python":
            return engine
        from storey.aggregations._compiled_state import supports

        reason = supports(self)
        if engine == "numba":
            if reason is not None:
                msg = f"aggregator {self.name!r}: engine='numba' is not possible: {reason}"
                raise ValueError(msg)
            require("numba")
            return engine
        return "numba" if reason is None and _numba_enabled() else "python"

    def new_state(self, H: int = NO_TIME) -> KeyState:
        """A fresh, empty per-key state (``H`` = `NO_TIME` unless given)."""
        return self.state_class(H)

    def state_from_tiles(self, H: int, keys: Sequence[int], rows: Sequence[Sequence[Any]]) -> KeyState:
        """A state holding the given non-empty tiles (ascending `keys`; rows in `row_fields` order)."""
        return self.state_class.from_tiles(H, keys, rows)

    def empty_features(self, out: dict[str, Any]) -> None:
        """Write the empty results of §3.2 (a key with no state) into `out`."""
        self.new_state().evaluate(0, out)

    def window_range(self, k: int, i: int) -> tuple[int, int]:
        """Inclusive tile range of window `i` as of a time in tile `k` (§2.3/§2.4)."""
        return window_range(self.window_type, k, self.windows.tiles_per_window[i], self.fixed_window_type)

    def retention_bound(self, m: int) -> int:
        """The oldest tile that must be kept when ``tile(H) = m``."""
        return retention_bound(m, self.n_slots, self.window_type == "fixed")

    @property
    def emitted_kernels(self) -> tuple[str, ...]:
        """Kernels the emitted aggregations read (a subset of `kernels`)."""
        return canonical_kernels(k for a in self.aggregations for k in get_aggregation(a).kernels)

    def __repr__(self) -> str:
        return (
            f"<AggregatorPlan {self.name!r} {self.window_type} P={self.period_ns} N={self.n_slots} "
            f"kernels={self.kernels}>"
        )
