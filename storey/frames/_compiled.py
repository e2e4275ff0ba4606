"""The compiled frames engine: the generated numba event loop (`storey.frames._codegen`) and its state.

Per aggregator the per-key state lives in arrays that persist across batches: a header per key (``H``,
``M`` and the key's segment of a tile pool), the pool of non-empty tiles (tile index, int fields, float
fields; each key's tiles ascending in its own segment), and the cached closed-part folds. The emitter's
state (step clock, boundaries, per-key counters, episodes, latest events and the timer heap) is arrays too.
Events are processed in arrival order in one pass, so timer emissions are placed exactly where the stream
emits them and no state is copied between batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from storey.aggregations.kernels.compiled import load_generated_module
from storey.aggregations.state import NO_TIME, KeyState
from storey.frames import _codegen as cg
from storey.frames._batch import INVALID, Batch, invalid_value_error
from storey.frames._emissions import Emissions
from storey.frames._layout import POLICY_DELAY, POLICY_MAX, POLICY_PERIOD, StepLayout

__all__ = ["CompiledEngine", "compiled_available"]

_SEG0 = 8


def compiled_available(layout: StepLayout) -> bool:
    """Whether the compiled engine can run this layout (numba importable, template kernels, vectorisable
    fields and filters)."""
    from storey.aggregations.kernels.base import _numba_enabled

    if not _numba_enabled() or not layout.vectorisable():
        return False
    return all(cg.AggShape(p).fusable for p in layout.plans)


_MODULES: dict[tuple[Any, ...], Any] = {}


def _shape_module(shape: cg.AggShape) -> Any:
    """The generated module of a shape (its source depends only on the shape's key and tile fields; generated
    once per process)."""
    key = (shape.key, shape.row_fields)
    module = _MODULES.get(key)
    if module is None:
        module = _MODULES[key] = load_generated_module(shape.module_source(), "storey_frames_agg")
    return module


_POOL: Any = None


def _threads() -> int:
    """Threads for independent aggregators: ``$STOREY_FRAMES_THREADS``, else the CPU count (at most 4)."""
    import os

    env = os.environ.get("STOREY_FRAMES_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


def _map(fn: Any, jobs: list[Any], n: int) -> list[Any]:
    """``[fn(job) for job in jobs]``, on threads when there are several aggregators and enough rows (the
    compiled loops release the GIL; each aggregator's state is its own, so results do not depend on it)."""
    global _POOL
    threads = _threads()
    if threads == 1 or len(jobs) == 1 or n < 4096:
        return [fn(job) for job in jobs]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(threads, thread_name_prefix="storey-frames")
    return list(_POOL.map(fn, jobs))


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


class _AggState:
    """The arrays of one aggregator."""

    def __init__(self, shape: cg.AggShape, n_keys: int, pool: int) -> None:
        plan = shape.plan
        self.shape = shape
        self.plan = plan
        self.P = plan.period_ns
        self.n_slots = plan.n_slots
        fixed = plan.window_type == "fixed"
        self.nret = (3 if fixed else 2) * plan.n_slots - 2
        n_w = shape.n_windows
        ccap_i = 2**62  # no cap: min(2**62, n) is n
        ccap_f = 0.0
        if shape.capped_count and plan.max_value is not None:
            if shape.float_count:
                ccap_f = float(plan.max_value)
            else:
                ccap_i = int(plan.max_value)
        ip = [plan.period_ns, plan.n_slots - 1, self.nret, plan.windows.n_tiles, _SEG0, ccap_i, int(fixed)]
        self.ip = np.array(ip + list(plan.windows.tiles_per_window), dtype=np.int64)
        cap = math.inf if plan.cap is None else float(plan.cap)  # +inf: the cap test is never true
        self.fp = np.array([cap, ccap_f], dtype=np.float64)
        max_tiles = (4 if fixed else 3) * plan.n_slots + 2
        self.maxseg = 2 * _pow2(max(max_tiles, _SEG0))
        self.hd = np.empty((0, cg.N_HD), dtype=np.int64)
        self.ci = np.zeros((0, n_w, cg.CI_ACC + len(shape.ai)), dtype=np.int64)
        self.cf = np.zeros((0, n_w, max(len(shape.af), 1)), dtype=np.float64)
        self.pk = np.zeros(0, dtype=np.int64)
        self.wi = np.zeros((0, len(shape.i_fields)), dtype=np.int64)
        self.wf = np.zeros((0, len(shape.f_fields)), dtype=np.float64)
        self.grow_keys(n_keys)
        self.grow_pool(pool)

    def grow_keys(self, n: int) -> None:
        old = len(self.hd)
        if n <= old:
            return
        hd = np.empty((n, cg.N_HD), dtype=np.int64)
        hd[:old] = self.hd
        hd[old:, cg.H_] = NO_TIME
        hd[old:, cg.M_] = NO_TIME // self.P
        hd[old:, cg.BASE_] = -1
        hd[old:, cg.CAP_ :] = 0
        self.hd = hd
        ci = np.zeros((n, *self.ci.shape[1:]), dtype=np.int64)
        ci[:old] = self.ci
        self.ci = ci
        cf = np.zeros((n, *self.cf.shape[1:]), dtype=np.float64)
        cf[:old] = self.cf
        self.cf = cf

    def grow_pool(self, n: int, used: int | None = None) -> None:
        """At least `n` tile rows. The first `used` rows (every allocated block lies below the pool's end,
        ``tops[a, 0]``; default: all rows) are copied; the reserved rows after them stay untouched (no memory
        until used)."""
        old = len(self.pk)
        if n <= old:
            return
        n = max(n, 2 * old)  # geometric: each growth copies the pool once
        m = old if used is None else min(int(used), old)
        pk = np.empty(n, dtype=np.int64)
        pk[:m] = self.pk[:m]
        wi = np.empty((n, self.wi.shape[1]), dtype=np.int64)
        wi[:m] = self.wi[:m]
        wf = np.empty((n, self.wf.shape[1]), dtype=np.float64)
        wf[:m] = self.wf[:m]
        self.pk, self.wi, self.wf = pk, wi, wf

    def install(self, kid: int, st: KeyState, tops: np.ndarray, a: int) -> None:
        """Copy a `KeyState` (loaded from a Table) into the arrays."""
        n = len(st.keys)
        self.hd[kid, cg.H_] = st.H
        self.hd[kid, cg.M_] = st.H // self.P
        self.ci[kid, :, 0] = 0
        if n == 0:
            return
        cap = _pow2(max(n + 1, _SEG0))
        base = int(tops[a, 0])
        self.grow_pool(max(2 * len(self.pk), base + cap + self.maxseg), base)
        tops[a, 0] = base + cap
        self.pk[base : base + n] = st.keys
        fields = self.shape.row_fields
        for c, f in enumerate(self.shape.i_fields):
            j = fields.index(f)
            self.wi[base : base + n, c] = [r[j] for r in st.rows]
        for c, f in enumerate(self.shape.f_fields):
            j = fields.index(f)
            self.wf[base : base + n, c] = [r[j] for r in st.rows]
        self.hd[kid, cg.BASE_] = base
        self.hd[kid, cg.CAP_] = cap
        self.hd[kid, cg.START_] = 0
        self.hd[kid, cg.LEN_] = n

    def export(self, kid: int) -> KeyState:
        """The key's state as a `KeyState` (retained tiles only, as a blob stores them)."""
        H = int(self.hd[kid, cg.H_])
        M = int(self.hd[kid, cg.M_])
        s0 = int(self.hd[kid, cg.BASE_] + self.hd[kid, cg.START_])
        e0 = s0 + int(self.hd[kid, cg.LEN_])
        if e0 <= s0:
            return self.plan.state_from_tiles(H, [], [])
        keys = self.pk[s0:e0]
        keep = keys >= M - self.nret
        keys = keys[keep]
        fields = self.shape.row_fields
        cols: list[list[Any]] = []
        for f in fields:
            if f in self.shape.i_fields:
                cols.append(self.wi[s0:e0, self.shape.i_fields.index(f)][keep].tolist())
            else:
                cols.append(self.wf[s0:e0, self.shape.f_fields.index(f)][keep].tolist())
        rows = [list(r) for r in zip(*cols, strict=True)]
        return self.plan.state_from_tiles(H, keys.tolist(), rows)


class CompiledEngine:
    """Run the generated kernel over batches (same interface as `ReferenceEngine`)."""

    name = "compiled"

    def __init__(self, layout: StepLayout, where: str) -> None:
        self.layout = layout
        self.where = where
        self.shapes = [cg.AggShape(p) for p in layout.plans]
        self.modules = [_shape_module(shape) for shape in self.shapes]
        self._step_run: Any = None
        self.aggs = [_AggState(s, 16, 1024) for s in self.shapes]
        self.tops = np.full((len(self.aggs), 1 + cg.N_SIZE_CLASSES), -1, dtype=np.int64)
        self.tops[:, 0] = 0
        self.maxseg = np.array([a.maxseg for a in self.aggs], dtype=np.int64)
        for st in self.aggs:
            st.grow_pool(max(len(st.pk), 4 * st.maxseg))
        kind = layout.policy_kind
        policy = layout.policy
        timeout = -1
        if kind == POLICY_MAX and policy.timeout_ns is not None:  # type: ignore[attr-defined]
            timeout = policy.timeout_ns  # type: ignore[attr-defined]
        elif kind == POLICY_DELAY:
            timeout = policy.delay_ns  # type: ignore[attr-defined]
        max_events = policy.max_events if kind == POLICY_MAX else 0  # type: ignore[attr-defined]
        step = layout.boundary_step if kind == POLICY_PERIOD else 1
        delay = policy.delay_ns if kind == POLICY_PERIOD else 0  # type: ignore[attr-defined]
        self.policy = np.array([kind, max_events, timeout, step, delay], dtype=np.int64)
        # without timers, keys are independent: each key's events of a batch are processed together
        self._groupable = kind in (0, 4) or (kind == POLICY_MAX and timeout < 0)
        self.em = np.zeros(cg.N_EM, dtype=np.int64)
        self.em[cg.E_C] = NO_TIME
        self.ek = np.zeros((16, 4), dtype=np.int64)
        self.heap = np.zeros((64, 4), dtype=np.int64)
        self.ctr = np.zeros(cg.N_CTR, dtype=np.int64)
        self.n_keys = 0
        self.last_time: np.ndarray = np.zeros(16, dtype=np.int64)
        self.seen = np.zeros(16, dtype=bool)
        self._first = np.full(16, -1, dtype=np.int64)
        self._last = np.empty(16, dtype=np.int64)
        self.metrics = {"events": 0, "late_events": 0, "skipped_values": 0}
        self._ones = np.ones(0, dtype=bool)
        self._gbufs: dict[int, list[np.ndarray]] = {}

    # ---------------------------------------------------------------------------------- key state
    def add_keys(self, n_keys: int) -> None:
        if n_keys <= self.n_keys:
            return
        cap = len(self.ek)
        if n_keys > cap:
            cap = max(n_keys, 2 * cap)
            for st in self.aggs:
                st.grow_keys(cap)
            ek = np.zeros((cap, 4), dtype=np.int64)
            ek[: len(self.ek)] = self.ek
            self.ek = ek
            lt = np.zeros(cap, dtype=np.int64)
            lt[: len(self.last_time)] = self.last_time
            self.last_time = lt
            seen = np.zeros(cap, dtype=bool)
            seen[: len(self.seen)] = self.seen
            self.seen = seen
            self._first = np.full(cap, -1, dtype=np.int64)
            self._last = np.empty(cap, dtype=np.int64)
        for a, st in enumerate(self.aggs):  # reserve room for many tiles per key: untouched pages cost no
            # memory, and fewer pool growths mean fewer copies
            st.grow_pool(max(len(st.pk), min(16 * _SEG0 * n_keys, 1 << 26) + 2 * st.maxseg), self.tops[a, 0])
        self.n_keys = n_keys

    def install(self, kid: int, states: list[KeyState]) -> None:
        for a, (st, ks) in enumerate(zip(self.aggs, states, strict=True)):
            st.install(kid, ks, self.tops, a)

    def export(self) -> Iterator[tuple[int, list[KeyState], int | None]]:
        for kid in range(self.n_keys):
            if self.seen[kid]:
                yield kid, [st.export(kid) for st in self.aggs], int(self.last_time[kid])

    def pending_refs(self) -> set[int]:
        live = np.flatnonzero(self.ek[: self.n_keys, cg.K_EPISODE] != 0)
        return set(self.ek[live, cg.K_LATEST_REF].tolist())

    # ---------------------------------------------------------------------------------- processing
    def _outputs(self, cap: int) -> tuple[list[Any], list[Any]]:
        outs = []
        for shape in self.shapes:
            oi = np.empty((len(shape.int_out), cap), dtype=np.int64)
            of = np.empty((len(shape.float_out), cap), dtype=np.float64)
            pr = np.empty(cap, dtype=np.bool_)
            outs.append((oi, of, pr))
        common = [np.empty(cap, dtype=np.int64) for _ in range(3)]
        return outs, common

    def _collect(self, outs: list[Any], common: list[Any], j: int) -> Emissions:
        feats: list[np.ndarray] = []
        present: list[np.ndarray] = []
        for shape, (oi, of, pr) in zip(self.shapes, outs, strict=True):
            feats += shape.feature_rows(oi, of, j)
            present.append(pr[:j])
        return Emissions(common[0][:j], common[1][:j], common[2][:j], feats, present)

    def _call(
        self, batch: Batch | None, first_row: int, final: bool
    ) -> tuple[Emissions, BaseException | None]:
        n = 0 if batch is None else batch.n
        if batch is not None and n:
            self._group(batch)
        need_heap = int(self.em[cg.E_HEAP]) + n + 1
        if len(self.heap) < need_heap:
            heap = np.zeros((max(need_heap, 2 * len(self.heap)), 4), dtype=np.int64)
            heap[: len(self.heap)] = self.heap
            self.heap = heap
        timers = self.layout.policy_kind != 0
        cap = max(n, 1) + ((self.n_keys + 1) if timers else 0)
        args: list[Any] = []
        tiles: dict[int, np.ndarray] = {}
        empty_i = np.empty(0, dtype=np.int64)
        empty_f = np.empty(0, dtype=np.float64)
        empty_s = np.empty(0, dtype=np.int8)
        if len(self._ones) < n:
            self._ones = np.ones(max(n, 2 * len(self._ones)), dtype=bool)
        outs, common = self._outputs(cap)
        for a, st in enumerate(self.aggs):
            if batch is not None:
                tk = tiles.get(st.P)
                if tk is None:
                    tk = tiles[st.P] = batch.times // np.int64(st.P)
                val = batch.values[a]
                sta = batch.status[a]
                flt = batch.filters[a]
                flt = self._ones[:n] if flt is None else flt
            else:
                tk, val, sta, flt = empty_i, empty_f, empty_s, self._ones[:0]
            args.append([tk, val, sta, flt, st, outs[a]])
        times = batch.times if batch is not None else empty_i
        kids = batch.kids if batch is not None else empty_i
        ctr = self.ctr
        ctr[:] = 0
        parts: list[Emissions] = []
        error: BaseException | None = None
        while True:
            flat: list[Any] = []
            for tk, val, sta, flt, st, (oi, of, pr) in args:
                flat += [
                    tk,
                    val,
                    sta,
                    flt,
                    st.hd,
                    st.pk,
                    st.wi,
                    st.wf,
                    st.ci,
                    st.cf,
                    st.ip,
                    st.fp,
                    oi,
                    of,
                    pr,
                ]
            self._loop()(
                first_row, n, kids, times, *flat, self.tops, self.maxseg, self.policy, self.em, self.ek,
                self.heap, common[0], common[1], common[2], ctr, final,
            )  # fmt: skip
            status = int(ctr[cg.C_STATUS])
            if status == cg.DONE:
                break
            if status == cg.NEED_POOL:
                st = self.aggs[int(ctr[cg.C_ARG])]
                st.grow_pool(4 * len(st.pk) + st.maxseg, self.tops[int(ctr[cg.C_ARG]), 0])
                continue
            if status == cg.NEED_OUT:
                parts.append(self._collect(outs, common, int(ctr[cg.C_OUT])))
                outs, common = self._outputs(cap)
                for arg, out in zip(args, outs, strict=True):
                    arg[5] = out
                ctr[cg.C_OUT] = 0
                continue
            assert status == cg.INVALID_VALUE and batch is not None
            a = int(ctr[cg.C_ARG])
            error = invalid_value_error(self.layout.aggregates[a], batch, int(ctr[cg.C_POS]), self.where)
            break
        parts.append(self._collect(outs, common, int(ctr[cg.C_OUT])))
        self.metrics["events"] += int(ctr[cg.C_EVENTS])
        self.metrics["late_events"] += int(ctr[cg.C_LATE])
        self.metrics["skipped_values"] += int(ctr[cg.C_SKIPPED])
        return Emissions.concat(parts), error

    def process(self, batch: Batch, first_row: int) -> tuple[Emissions, BaseException | None]:
        for a in range(len(self.aggs)):
            if batch.values[a] is None:
                msg = "the compiled engine needs column values"
                raise TypeError(msg)
        # a batch that may fail on a row is run in arrival order, so the rows before it are processed
        failing = any(bool((s == INVALID).any()) for s in batch.status if s is not None)
        if self._groupable and not failing:
            return self._call_grouped(batch, first_row), None
        return self._call(batch, first_row, False)

    def _group(self, batch: Batch) -> np.ndarray:
        """The batch's rows grouped by key (also notes each key's last event time)."""
        from storey.frames._group import group_rows

        return group_rows(batch.kids, batch.times, self._first, self._last, self.last_time, self.seen)

    def _loop(self) -> Any:
        """The arrival-order loop of this step (built on first use: only timer policies need it)."""
        if self._step_run is None:
            names = [m.__name__ for m in self.modules]
            module = load_generated_module(cg.step_source(self.shapes, names), "storey_frames_step")
            self._step_run = module.run
        return self._step_run

    def _call_grouped(self, batch: Batch, first_row: int) -> Emissions:
        from storey.frames._group import gather, inverse, max_events_mask, ungroup

        n = batch.n
        order = self._group(batch)
        outs, _ = self._outputs(n)
        kind = self.layout.policy_kind
        all_emitted = kind == 0
        emitted = np.zeros(n if kind != 0 else 0, dtype=np.bool_)
        if kind == POLICY_MAX:
            max_events_mask(order, batch.kids, batch.times, first_row, self.ek, int(self.policy[1]), emitted)
        any_emitted = all_emitted or bool(emitted.any())
        inv = inverse(order) if any_emitted else order
        # the grouped loops read their inputs and write their outputs in key-grouped order (sequentially);
        # the outputs go back to arrival order at the end
        kids = gather(batch.kids, order)
        times = gather(batch.times, order)
        emitted_g = gather(emitted, order) if kind != 0 else emitted
        late = np.zeros(n, dtype=np.bool_)  # grouped order (only counted)
        if len(self._ones) < n:
            self._ones = np.ones(max(n, 2 * len(self._ones)), dtype=bool)
        tiles: dict[int, np.ndarray] = {}
        jobs = []
        for a, st in enumerate(self.aggs):
            tk = tiles.get(st.P)
            if tk is None:
                tk = tiles[st.P] = times // np.int64(st.P)
            jobs.append((a, tk, outs[a]))

        def run_one(job: tuple[int, np.ndarray, tuple[Any, ...]]) -> int:
            a, tk, (oi, of, pr) = job
            st = self.aggs[a]
            flt = batch.filters[a]
            flt = self._ones[:n] if flt is None else gather(flt, order)
            args = (n, kids, times, tk, gather(batch.values[a], order), gather(batch.status[a], order), flt)
            oi_g, of_g, pr_g = self._grouped_buffers(a, oi, of, n)
            ctr = np.zeros(cg.N_CTR, dtype=np.int64)
            grouped = self.modules[a].grouped
            while True:
                grouped(
                    *args, st.hd, st.pk, st.wi, st.wf, st.ci, st.cf, st.ip, st.fp, oi_g, of_g, pr_g[0],
                    self.tops, a, st.maxseg, emitted_g, all_emitted, late, ctr,
                )  # fmt: skip
                if int(ctr[cg.C_STATUS]) != cg.NEED_POOL:
                    break
                st.grow_pool(4 * len(st.pk) + st.maxseg, self.tops[a, 0])
            if any_emitted:
                ungroup(oi_g, inv, oi)
                ungroup(of_g, inv, of)
                ungroup(pr_g, inv, pr.reshape(1, n))
            return int(ctr[cg.C_SKIPPED])

        skipped = _map(run_one, jobs, n)
        self.metrics["events"] += n
        self.metrics["late_events"] += int(np.count_nonzero(late))
        for count in skipped:  # ints (the static parity check bans `sum` in fold modules)
            self.metrics["skipped_values"] += count
        em = self._collect(outs, [np.arange(first_row, first_row + n), batch.kids, batch.times], n)
        if all_emitted:
            return em
        idx = np.flatnonzero(emitted)
        return Emissions(
            em.src[idx],
            em.kid[idx],
            em.time[idx],
            [f[idx] for f in em.features],
            [p[idx] for p in em.present],
        )

    def _grouped_buffers(self, a: int, oi: np.ndarray, of: np.ndarray, n: int) -> tuple[Any, Any, Any]:
        """Aggregator `a`'s outputs in key-grouped order: C-contiguous views of scratch buffers reused across
        batches (fresh pages would cost a fault each)."""
        shapes = ((oi.shape[0], np.int64), (of.shape[0], np.float64), (1, np.bool_))
        bufs = self._gbufs.get(a)
        if bufs is None or len(bufs[2]) < n:
            size = max(n, 2 * len(bufs[2])) if bufs is not None else n
            bufs = [np.empty(rows * size, dtype=dt) for rows, dt in shapes]
            self._gbufs[a] = bufs
        oi_g, of_g, pr_g = (b[: rows * n].reshape(rows, n) for b, (rows, _) in zip(bufs, shapes, strict=True))
        return oi_g, of_g, pr_g

    def finish(self) -> Emissions:
        out, _ = self._call(None, 0, True)
        return out
