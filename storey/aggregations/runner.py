"""Run the §5 state machine over many keys' events at once: the batch engine's entry point.

`run_keys` takes one aggregator plan and the events of many keys, grouped by key (each key's events
contiguous, in arrival order), and returns what the streaming `AggregateByKey` would compute for them:
acceptance, the features as of each event's own time, features at extra as-of times ("queries", e.g. timer
emissions of the emit policies) and the final per-key states.

Two engines give the same bits:

``engine='python'``
    drives `KeyState` (the streaming state machine itself) event by event;
``engine='numba'``
    one compiled function generated from the **same kernel templates** as `KeyState`'s fused code
    (`storey.aggregations._fused`), folding the same tiles in the same order (oldest → newest, the tile
    of τ last, with the same left-fold cache rule). No fastmath, no parallel. Needs ``storey[fast]``.

``engine='auto'`` picks numba when it is importable and every kernel has templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from storey.aggregations._fused import _merge_block, _update_block
from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.aggregations.kernels._codegen import indent
from storey.aggregations.kernels.base import _numba_enabled
from storey.aggregations.kernels.compiled import load_generated_module
from storey.aggregations.state import NO_TIME, AggregatorPlan, KeyState

__all__ = ["KeysRun", "run_keys"]


@dataclass
class KeysRun:
    """The result of `run_keys` (arrays are aligned with the input events / queries).

    Attributes
    ----------
    accepted
        bool[m]: the event was not too late (§5.2).
    present
        bool[m]: features were evaluated as of the event's time (requested and accepted).
    features
        ``{feature name: array[m]}`` in feature order; int64 for integer counts, float64 otherwise; only
        meaningful where `present`.
    query_present, query_features
        The same for the queries.
    query_has_data
        bool[q]: the largest window holds a value as of the query time (`KeyState.has_data`; decides which
        keys qualify for an `EmitAfterPeriod`/`EmitAfterWindow` boundary).
    final_H, final_offsets, final_tiles, final_columns
        Final states: ``final_H[k]``; the retained tiles of key ``k`` are
        ``final_tiles[final_offsets[k]:final_offsets[k + 1]]`` with one array per field in
        ``plan.row_fields`` order (what a §7.2 blob stores; see `storey.aggregations.blob.encode`).
    """

    plan: AggregatorPlan
    accepted: np.ndarray
    present: np.ndarray
    features: dict[str, np.ndarray]
    query_present: np.ndarray
    query_features: dict[str, np.ndarray]
    query_has_data: np.ndarray
    final_H: np.ndarray
    final_offsets: np.ndarray
    final_tiles: np.ndarray
    final_columns: list[np.ndarray]

    def state(self, k: int) -> KeyState:
        """The final `KeyState` of key segment `k`."""
        lo, hi = int(self.final_offsets[k]), int(self.final_offsets[k + 1])
        rows = list(zip(*(c[lo:hi].tolist() for c in self.final_columns), strict=True))
        return self.plan.state_from_tiles(int(self.final_H[k]), self.final_tiles[lo:hi].tolist(), rows)


def _feature_dtypes(plan: AggregatorPlan) -> list[bool]:
    """Per feature (feature order): True when it is an int64 count."""
    out = []
    for a in plan.aggregations:
        is_int = a == "count" and (plan.max_value is None or isinstance(plan.max_value, int))
        out.extend([is_int] * len(plan.windows.windows))
    return out


def run_keys(
    plan: AggregatorPlan,
    starts: Sequence[int] | np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    *,
    evaluate: np.ndarray | bool = True,
    query_keys: np.ndarray | None = None,
    query_before: np.ndarray | None = None,
    query_times: np.ndarray | None = None,
    init: Sequence[KeyState | None] | None = None,
    engine: str = "auto",
) -> KeysRun:
    """Process the events of ``len(starts) - 1`` keys through the state machine of `plan`.

    Parameters
    ----------
    starts
        Segment offsets: key ``k``'s events are ``[starts[k], starts[k + 1])``, in arrival order.
    times
        int64 event times (ns).
    values
        float64 values (ignored where not `valid`; any value for a count-only plan).
    valid
        bool: the value is aggregated if the event is accepted (False for filtered-out events and
        skipped values, which still advance ``H``).
    evaluate
        bool mask (or scalar): evaluate the features as of the event's own time after applying it.
    query_keys, query_before, query_times
        Extra evaluations, sorted by (key, before): as of ``query_times[i]``, on key ``query_keys[i]``'s state
        before its event ``query_before[i]`` is applied (a global event index; ``starts[k + 1]`` means after
        the key's last event).
    init
        Starting `KeyState` per key (``None``: a new key), e.g. loaded from blobs.
    engine
        ``'auto'``, ``'python'`` or ``'numba'``.

    Examples
    --------
    >>> from storey.aggregations.field import FieldAggregator
    >>> from storey.aggregations.windows import SlidingWindows
    >>> plan = AggregatorPlan(FieldAggregator("s", "x", ["sum"], SlidingWindows(["1h"], "10m")))
    >>> m = 60 * 10**9
    >>> t = np.array([21 * 60, 21 * 60 + 30, 21 * 60 + 10, 21 * 60 + 35]) * m
    >>> r = run_keys(plan, [0, 4], t, np.array([1.0, 2, 4, 8]), np.ones(4, bool), engine="python")
    >>> r.features["s_sum_1h"].tolist()
    [1.0, 3.0, 5.0, 15.0]
    """
    starts = np.asarray(starts, dtype=np.int64)
    times = np.ascontiguousarray(times, dtype=np.int64)
    m = len(times)
    values = np.ascontiguousarray(values, dtype=np.float64) if plan.kernels != ("count",) else np.zeros(m)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    evalmask = np.ascontiguousarray(np.broadcast_to(np.asarray(evaluate, dtype=np.bool_), (m,)))
    if query_times is None:
        query_keys = query_before = query_times = np.zeros(0, dtype=np.int64)
    q_key = np.ascontiguousarray(query_keys, dtype=np.int64)
    q_before = np.ascontiguousarray(query_before, dtype=np.int64)
    q_tau = np.ascontiguousarray(query_times, dtype=np.int64)
    n_keys = len(starts) - 1
    if len(q_key) and np.any(np.diff(q_key * (m + 1) + q_before) < 0):
        msg = "queries must be sorted by (key, before)"
        raise ValueError(msg)
    if engine == "auto":
        engine = (
            "numba" if _numba_enabled() and all(get_kernel(k).fusable for k in plan.kernels) else "python"
        )
    if engine == "python":
        return _run_python(plan, starts, times, values, valid, evalmask, q_key, q_before, q_tau, init)
    if engine == "numba":
        return _run_numba(plan, starts, times, values, valid, evalmask, q_key, q_before, q_tau, init, n_keys)
    msg = f"engine must be 'auto', 'python' or 'numba', got {engine!r}"
    raise ValueError(msg)


def _empty_outputs(plan: AggregatorPlan, m: int, q: int) -> tuple[dict, dict]:
    ints = _feature_dtypes(plan)
    feats = {
        f: np.zeros(m, np.int64 if i else np.float64) for f, i in zip(plan.feature_names, ints, strict=True)
    }
    qfeats = {
        f: np.zeros(q, np.int64 if i else np.float64) for f, i in zip(plan.feature_names, ints, strict=True)
    }
    return feats, qfeats


def _run_python(
    plan: AggregatorPlan,
    starts: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    evalmask: np.ndarray,
    q_key: np.ndarray,
    q_before: np.ndarray,
    q_tau: np.ndarray,
    init: Sequence[KeyState | None] | None,
) -> KeysRun:
    m, q = len(times), len(q_tau)
    accepted = np.zeros(m, np.bool_)
    present = np.zeros(m, np.bool_)
    q_present = np.zeros(q, np.bool_)
    q_has = np.zeros(q, np.bool_)
    feats, qfeats = _empty_outputs(plan, m, q)
    names = plan.feature_names
    columns = [feats[f] for f in names]
    qcolumns = [qfeats[f] for f in names]
    tl, vl, okl, el = times.tolist(), values.tolist(), valid.tolist(), evalmask.tolist()
    qk, qb, qt = q_key.tolist(), q_before.tolist(), q_tau.tolist()
    finals: list[KeyState] = []
    qi = 0
    for key in range(len(starts) - 1):
        start = init[key] if init is not None else None
        st = start.copy() if start is not None else plan.new_state()  # never mutate the caller's states
        for e in range(int(starts[key]), int(starts[key + 1]) + 1):
            while qi < q and qk[qi] == key and qb[qi] == e:
                q_has[qi] = st.has_data(qt[qi])
                vals = st.values(qt[qi])
                if vals is not None:
                    q_present[qi] = True
                    for col, x in zip(qcolumns, vals, strict=True):
                        col[qi] = x
                qi += 1
            if e == starts[key + 1]:
                break
            t = tl[e]
            if st.observe(t):
                accepted[e] = True
                if okl[e]:
                    st.add(vl[e], t)
                if el[e]:
                    present[e] = True
                    for col, x in zip(columns, st.values(t), strict=True):  # type: ignore[arg-type]
                        col[e] = x
        finals.append(st)
    if qi != q:
        msg = "queries must be sorted by (key, before) and reference existing keys and events"
        raise ValueError(msg)
    offsets = [0]
    tiles: list[int] = []
    cols: list[list[Any]] = [[] for _ in plan.row_fields]
    for st in finals:
        keys, rows = st.retained()
        tiles.extend(keys)
        for j, col in enumerate(cols):
            col.extend(r[j] for r in rows)
        offsets.append(len(tiles))
    dtypes = _row_dtypes(plan)
    return KeysRun(
        plan,
        accepted,
        present,
        feats,
        q_present,
        qfeats,
        q_has,
        np.array([st.H for st in finals], dtype=np.int64),
        np.array(offsets, dtype=np.int64),
        np.array(tiles, dtype=np.int64),
        [np.array(c, dtype=d) for c, d in zip(cols, dtypes, strict=True)],
    )


def _row_dtypes(plan: AggregatorPlan) -> list[type]:
    out = []
    for k in plan.kernels:
        out.extend(np.int64 if dt == "i8" else np.float64 for _, dt in get_kernel(k).fields)
    return out


# -- numba engine -----------------------------------------------------------------------------------------

_COMPILED: dict[int, Any] = {}


def _run_numba(
    plan: AggregatorPlan,
    starts: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    evalmask: np.ndarray,
    q_key: np.ndarray,
    q_before: np.ndarray,
    q_tau: np.ndarray,
    init: Sequence[KeyState | None] | None,
    n_keys: int,
) -> KeysRun:
    fn = _compiled(plan)
    dtypes = _row_dtypes(plan)
    i_cols = [j for j, d in enumerate(dtypes) if d is np.int64]
    f_cols = [j for j, d in enumerate(dtypes) if d is np.float64]
    init_h = np.full(n_keys, NO_TIME, np.int64)
    init_off = np.zeros(n_keys + 1, np.int64)
    t_list: list[int] = []
    rows: list[list[Any]] = []
    for key in range(n_keys):
        st = init[key] if init is not None else None
        if st is not None:
            init_h[key] = st.H
            t_list.extend(st.keys)
            rows.extend(st.rows)
        init_off[key + 1] = len(t_list)
    init_keys = np.array(t_list, np.int64)
    init_i = np.array([[r[j] for j in i_cols] for r in rows], np.int64).reshape(len(rows), len(i_cols))
    init_f = np.array([[r[j] for j in f_cols] for r in rows], np.float64).reshape(len(rows), len(f_cols))
    m, q = len(times), len(q_tau)
    ints = _feature_dtypes(plan)
    n_int = ints.count(True)
    out_i = np.zeros((m, n_int), np.int64, order="F")  # columns are the feature arrays: no copies
    out_f = np.zeros((m, len(ints) - n_int), np.float64, order="F")
    qout_i = np.zeros((q, n_int), np.int64, order="F")
    qout_f = np.zeros((q, len(ints) - n_int), np.float64, order="F")
    accepted = np.zeros(m, np.bool_)
    present = np.zeros(m, np.bool_)
    q_present = np.zeros(q, np.bool_)
    q_has = np.zeros(q, np.bool_)
    # retained tiles of a key lie in [M - NRET, M]; a key has at most its init tiles plus one per event
    per_key = np.minimum(
        np.diff(init_off) + np.diff(starts), (3 if plan.window_type == "fixed" else 2) * plan.n_slots - 1
    )
    bound = int(np.cumsum(per_key)[-1]) if n_keys else 0
    fin_h = np.zeros(n_keys, np.int64)
    fin_off = np.zeros(n_keys + 1, np.int64)
    fin_keys = np.zeros(bound, np.int64)
    fin_i = np.zeros((bound, len(i_cols)), np.int64)
    fin_f = np.zeros((bound, len(f_cols)), np.float64)
    n_done = fn(
        starts, times, values, valid, evalmask, q_key, q_before, q_tau,
        init_h, init_off, init_keys, init_i, init_f,
        accepted, present, out_i, out_f, q_present, q_has, qout_i, qout_f,
        fin_h, fin_off, fin_keys, fin_i, fin_f,
    )  # fmt: skip
    if n_done != q:
        msg = "queries must be sorted by (key, before) and reference existing keys and events"
        raise ValueError(msg)
    feats, qfeats = {}, {}
    ii = fi = 0
    for name, is_int in zip(plan.feature_names, ints, strict=True):
        if is_int:
            feats[name], qfeats[name] = out_i[:, ii], qout_i[:, ii]
            ii += 1
        else:
            feats[name], qfeats[name] = out_f[:, fi], qout_f[:, fi]
            fi += 1
    total = int(fin_off[-1])
    columns: list[np.ndarray] = []
    for j, d in enumerate(dtypes):
        columns.append(
            fin_i[:total, i_cols.index(j)].copy() if d is np.int64 else fin_f[:total, f_cols.index(j)].copy()
        )
    tiles = fin_keys[:total].copy()
    return KeysRun(plan, accepted, present, feats, q_present, qfeats, q_has, fin_h, fin_off, tiles, columns)


def _compiled(plan: AggregatorPlan) -> Any:
    fn = _COMPILED.get(id(plan))
    if fn is None or fn[0] is not plan:
        for k in plan.kernels:
            if not get_kernel(k).fusable:
                msg = f"engine='numba' needs template kernels; {k!r} overrides update/merge; use 'python'"
                raise TypeError(msg)
        module = load_generated_module(numba_source(plan), "storey_runner")
        fn = (plan, module.run)
        _COMPILED[id(plan)] = fn
    return fn[1]


def _constants(plan: AggregatorPlan) -> dict[str, Any]:
    count_cap = plan.max_value if "count" in plan.aggregations else None
    ns: dict[str, Any] = {"CAP": plan.cap, "CCAP": count_cap}
    ns["CC0"] = (0.0 if isinstance(count_cap, float) else 0) if count_cap is not None else 0
    for j, a in enumerate(plan.aggregations):
        ns[f"EMPTY{j}"] = get_aggregation(a).empty
    return ns


def _literal(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "NAN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "INF" if value > 0 else "-INF"
    return repr(value)


def numba_source(plan: AggregatorPlan) -> str:
    """The generated source of the compiled runner of `plan` (for inspection and tests)."""
    kernels = [(i, get_kernel(k)) for i, k in enumerate(plan.kernels)]
    dtypes = _row_dtypes(plan)
    row_fields = plan.row_fields
    i_idx = {f: n for n, f in enumerate(f for f, d in zip(row_fields, dtypes, strict=True) if d is np.int64)}
    f_idx = {
        f: n for n, f in enumerate(f for f, d in zip(row_fields, dtypes, strict=True) if d is np.float64)
    }
    acc_fields = plan.fused.acc_fields
    capped_count = "count" in plan.aggregations and plan.max_value is not None
    acc_slots = acc_fields + (("_cc",) if capped_count else ())
    ai_idx = {f: n for n, f in enumerate(f for f in acc_fields if f in i_idx)}
    if capped_count and isinstance(plan.max_value, int):
        ai_idx["_cc"] = len(ai_idx)
    af_idx = {f: n for n, f in enumerate(f for f in acc_fields if f in f_idx)}
    if capped_count and not isinstance(plan.max_value, int):
        af_idx["_cc"] = len(af_idx)
    acc_kernels = [(i, k) for i, k in kernels if set(k.field_names) <= set(acc_fields)]
    contrib = "(CCAP if {n} > CCAP else {n})"
    kind = (
        0
        if plan.window_type == "sliding"
        else (2 if plan.fixed_window_type.name == "LastClosedWindow" else 1)
    )
    fixed = plan.window_type == "fixed"
    nret = (3 if fixed else 2) * plan.n_slots - 2
    n1 = plan.n_slots - 1
    period = plan.period_ns
    nw_list = plan.windows.tiles_per_window
    n_w = len(nw_list)

    def load(prefix: str, row: str, fields: Sequence[str]) -> str:
        out = []
        for f in fields:
            if f in i_idx:
                out.append(f"{prefix}{f} = wi[{row}, {i_idx[f]}]")
            else:
                out.append(f"{prefix}{f} = wf[{row}, {f_idx[f]}]")
        return "\n".join(out)

    def store_row(row: str) -> str:
        out = []
        for f in row_fields:
            out.append(f"wi[{row}, {i_idx[f]}] = {f}" if f in i_idx else f"wf[{row}, {f_idx[f]}] = {f}")
        return "\n".join(out)

    def load_cache(w: str) -> str:
        return "\n".join(
            f"a_{f} = c_ai[{w}, {ai_idx[f]}]" if f in ai_idx else f"a_{f} = c_af[{w}, {af_idx[f]}]"
            for f in acc_slots
        )

    def store_cache(w: str) -> str:
        return "\n".join(
            f"c_ai[{w}, {ai_idx[f]}] = a_{f}" if f in ai_idx else f"c_af[{w}, {af_idx[f]}] = a_{f}"
            for f in acc_slots
        )

    empty_acc = {f: v for f, v in zip(row_fields, plan.fused.empty_row, strict=True) if f in acc_fields}
    merge = _merge_block(acc_kernels)
    rebind = "\n".join(f"a_{f} = {f}" for f in acc_fields)
    cc_step = f"a__cc = a__cc + {contrib.format(n='b_n')}" if capped_count else ""
    cc_first = f"a__cc = CC0 + {contrib.format(n='a_n')}" if capped_count else ""

    # -- evaluate(tau): writes one output row; returns presence -------------------------------------------
    ev = [
        "def evaluate(tau, M, T, wkeys, wi, wf, c_ok, c_lo, c_hi, c_first, c_last, c_has, c_ai, c_af, oi,",
        "             of):",
        "    k = tau // P",
        f"    if k < M - {n1}:",
        "        return False",
        "    keys = wkeys",
    ]
    if kind == 2:
        ev.append("    has_cur = False")
    else:
        ev += [
            "    jc = bisect_left(keys, T, k)",
            "    has_cur = jc < T and keys[jc] == k",
        ]
    for w, nw in enumerate(nw_list):
        if kind == 0:
            ev += [f"    lo = k - {nw - 1}", "    hi = k - 1"]
        elif kind == 1:
            ev += [f"    lo = (k // {nw}) * {nw}", "    hi = k - 1"]
        else:
            ev += [f"    hi = (k // {nw}) * {nw} - 1", f"    lo = hi - {nw - 1}"]
        block = [
            f"if not (c_ok[{w}] and c_lo[{w}] == lo and c_hi[{w}] == hi):",
            "    j0 = bisect_left(keys, T, lo)",
            "    j1 = bisect_right(keys, T, hi)",
            "    if j0 >= j1:",
            f"        c_has[{w}] = False",
            "    else:",
            "        first = keys[j0]",
            "        last = keys[j1 - 1]",
            f"        if c_ok[{w}] and c_has[{w}] and c_first[{w}] == first and c_last[{w}] <= last:",
            indent(load_cache(str(w)), 3),
            f"            start = bisect_right(keys, T, c_last[{w}])",
            "        else:",
            indent(load("a_", "j0", acc_fields), 3),
            indent(cc_first, 3),
            "            start = j0 + 1",
            "        for j in range(start, j1):",
            indent(load("b_", "j", acc_fields), 3),
            indent(merge, 3),
            indent(cc_step, 3),
            indent(rebind, 3),
            indent(store_cache(str(w)), 2),
            f"        c_has[{w}] = True",
            f"        c_first[{w}] = first",
            f"        c_last[{w}] = last",
            f"    c_ok[{w}] = True",
            f"    c_lo[{w}] = lo",
            f"    c_hi[{w}] = hi",
            # merge the closed-part fold with the tile of τ (an absent operand is the empty summary)
            f"if c_has[{w}]:",
            indent(load_cache(str(w)), 1),
            "    if has_cur:",
            indent(load("b_", "jc", acc_fields), 2),
            indent(merge, 2),
            indent(f"_cc = a__cc + {contrib.format(n='b_n')}" if capped_count else "", 2),
            "    else:",
            indent("\n".join(f"{f} = a_{f}" for f in acc_slots), 2),
            "elif has_cur:",
            indent(load("", "jc", acc_fields), 1),
            indent(f"_cc = CC0 + {contrib.format(n='n')}" if capped_count else "", 1),
            "else:",
            indent("\n".join(f"{f} = {_literal(v)}" for f, v in empty_acc.items()), 1),
            indent("_cc = CC0" if capped_count else "", 1),
        ]
        ev.append(indent("\n".join(line for line in block if line.strip()), 1))
        col_i = col_f = 0
        for j, agg_name in enumerate(plan.aggregations):
            agg = get_aggregation(agg_name)
            is_int = agg_name == "count" and (plan.max_value is None or isinstance(plan.max_value, int))
            if agg_name == "count" and capped_count:
                expr, empty = "_cc", "CC0"
            else:
                expr, empty = f"({agg.expr})", f"EMPTY{j}"
            target = f"oi[{col_i * n_w + w}]" if is_int else f"of[{col_f * n_w + w}]"
            ev.append(f"    {target} = {empty} if n == 0 else {expr}")
            if is_int:
                col_i += 1
            else:
                col_f += 1
    ev.append("    return True")

    # -- run(...): the per-key event loop ------------------------------------------------------------------
    empty_row = dict(zip(row_fields, plan.fused.empty_row, strict=True))
    init_row = "\n".join(
        f"wi[j, {i_idx[f]}] = {empty_row[f]!r}"
        if f in i_idx
        else f"wf[j, {f_idx[f]}] = {_literal(empty_row[f])}"
        for f in row_fields
    )
    update = _update_block(kernels, plan.cap is not None)
    nmax = plan.windows.n_tiles
    has_range = {
        0: f"    lo = k - {nmax - 1}\n    hi = k",
        1: f"    lo = (k // {nmax}) * {nmax}\n    hi = k",
        2: f"    hi = (k // {nmax}) * {nmax} - 1\n    lo = hi - {nmax - 1}",
    }[kind]
    run = f"""
def run(starts, times, values, valid, evalmask, q_key, q_before, q_tau,
        init_h, init_off, init_keys, init_i, init_f,
        accepted, present, out_i, out_f, q_present, q_has, qout_i, qout_f,
        fin_h, fin_off, fin_keys, fin_i, fin_f):
    n_keys = starts.shape[0] - 1
    nq = q_tau.shape[0]
    size = {4 * plan.n_slots + 16}
    wkeys = np.empty(size, np.int64)
    wi = np.empty((size, {len(i_idx)}), np.int64)
    wf = np.empty((size, {len(f_idx)}), np.float64)
    c_ok = np.zeros({n_w}, np.bool_)
    c_has = np.zeros({n_w}, np.bool_)
    c_lo = np.zeros({n_w}, np.int64)
    c_hi = np.zeros({n_w}, np.int64)
    c_first = np.zeros({n_w}, np.int64)
    c_last = np.zeros({n_w}, np.int64)
    c_ai = np.zeros(({n_w}, {max(len(ai_idx), 1)}), np.int64)
    c_af = np.zeros(({n_w}, {max(len(af_idx), 1)}), np.float64)
    qi = 0
    fo = 0
    for key in range(n_keys):
        H = init_h[key]
        T = 0
        for j in range(init_off[key], init_off[key + 1]):
            if T == wkeys.shape[0]:
                wkeys, wi, wf = grow(wkeys, wi, wf)
            wkeys[T] = init_keys[j]
            for c in range(wi.shape[1]):
                wi[T, c] = init_i[j, c]
            for c in range(wf.shape[1]):
                wf[T, c] = init_f[j, c]
            T += 1
        M = H // P
        c_ok[:] = False
        e_end = starts[key + 1]
        for e in range(starts[key], e_end + 1):
            while qi < nq and q_key[qi] == key and q_before[qi] == e:
                q_has[qi] = has_data(q_tau[qi], M, T, wkeys)
                q_present[qi] = evaluate(q_tau[qi], M, T, wkeys, wi, wf, c_ok, c_lo, c_hi, c_first, c_last,
                                         c_has, c_ai, c_af, qout_i[qi], qout_f[qi])
                qi += 1
            if e == e_end:
                break
            t = times[e]
            if t > H:
                H = t
                M = t // P
            k = t // P
            if k < M - {n1}:
                continue
            accepted[e] = True
            if valid[e]:
                j = bisect_left(wkeys, T, k)
                if j == T or wkeys[j] != k:
                    if T == wkeys.shape[0]:
                        # full: first drop the tiles below the retention bound (lazily, amortised O(1);
                        # keeping more tiles never changes a result), grow only if nothing can go
                        cut = bisect_left(wkeys, T, M - {nret})
                        if cut > 0:
                            for x in range(cut, T):
                                wkeys[x - cut] = wkeys[x]
                                for c in range(wi.shape[1]):
                                    wi[x - cut, c] = wi[x, c]
                                for c in range(wf.shape[1]):
                                    wf[x - cut, c] = wf[x, c]
                            T -= cut
                            j -= cut
                            for w in range({n_w}):
                                c_ok[w] = False
                                c_has[w] = False
                        else:
                            wkeys, wi, wf = grow(wkeys, wi, wf)
                    for x in range(T, j, -1):
                        wkeys[x] = wkeys[x - 1]
                        for c in range(wi.shape[1]):
                            wi[x, c] = wi[x - 1, c]
                        for c in range(wf.shape[1]):
                            wf[x, c] = wf[x - 1, c]
                    wkeys[j] = k
{indent(init_row, 5)}
                    T += 1
                v = values[e]
{indent(load("", "j", row_fields), 4)}
{indent(update, 4)}
{indent(store_row("j"), 4)}
                for w in range({n_w}):
                    if c_ok[w] and c_lo[w] <= k and k <= c_hi[w]:
                        c_ok[w] = False
                        c_has[w] = False
            if evalmask[e]:
                present[e] = evaluate(t, M, T, wkeys, wi, wf, c_ok, c_lo, c_hi, c_first, c_last, c_has, c_ai,
                                      c_af, out_i[e], out_f[e])
        fin_h[key] = H
        j0 = bisect_left(wkeys, T, M - {nret})
        for j in range(j0, T):
            fin_keys[fo] = wkeys[j]
            for c in range(wi.shape[1]):
                fin_i[fo, c] = wi[j, c]
            for c in range(wf.shape[1]):
                fin_f[fo, c] = wf[j, c]
            fo += 1
        fin_off[key + 1] = fo
    return qi


def has_data(tau, M, T, wkeys):
    k = tau // P
    if k < M - {n1}:
        return False
{has_range}
    j = bisect_left(wkeys, T, lo)
    return j < T and wkeys[j] <= hi


def grow(wkeys, wi, wf):
    size = wkeys.shape[0] * 2
    nk = np.empty(size, np.int64)
    ni = np.empty((size, wi.shape[1]), np.int64)
    nf = np.empty((size, wf.shape[1]), np.float64)
    for x in range(wkeys.shape[0]):
        nk[x] = wkeys[x]
        for c in range(wi.shape[1]):
            ni[x, c] = wi[x, c]
        for c in range(wf.shape[1]):
            nf[x, c] = wf[x, c]
    return nk, ni, nf


def bisect_left(a, hi, x):
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def bisect_right(a, hi, x):
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo
"""
    consts = "".join(f"{name} = {_literal(value)}\n" for name, value in _constants(plan).items())
    header = (
        f'"""Generated by storey.aggregations.runner for aggregator {plan.name!r}: do not edit."""\n\n'
        "import numpy as np\n\n"
        "from storey.aggregations.kernels._codegen import safe_sqrt\n"
        "from storey.aggregations.kernels.compiled import njit\n\n"
        f"P = {period}\nINF = float('inf')\nNAN = float('nan')\n{consts}"
        "sqrt = njit(safe_sqrt)\n\n\n"
    )
    body = "\n".join(ev) + "\n\n" + run
    # every function is compiled with the parity settings of `njit` (and cached on disk when possible)
    body = body.replace("\ndef ", "\n@njit\ndef ")
    return header + ("@njit\n" + body if body.startswith("def ") else body)
