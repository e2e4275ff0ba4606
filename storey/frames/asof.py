"""`as_of`: leak-free point-in-time features at label times (spec AGGREGATIONS.md §8.5).

For a label ``(k, q)``, each window folds the events of key ``k`` whose time is ``≤ q`` (``< q`` with
``inclusive=False``) and whose tiles fall in the window as of ``q``; within a tile, events are folded in
input row order, tiles oldest → newest (the canonical fold of §5.3). Nothing later than ``q`` contributes,
even in ``q``'s own tile, and nothing is ever too late.

Algorithm (sort-merge, no per-label scan of the events): events are grouped by key (input order kept) and
labels sorted by ``(key, q)``. Per key and aggregator, every tile is summarised once from all its events
(the `update` kernels, in input order); per label only ``q``'s own tile is re-folded from its events with
time ``≤ q``, and the label is evaluated with the state machine's own evaluation over the tiles its windows
can reach, that partial tile last. The windows' older tiles never hold anything later than ``q``.

Two implementations of that algorithm give the same bits: the generated ``asof`` loop of
`storey.frames._codegen` (numba; the same tile update and canonical fold code as `aggregate`), and a Python
loop over `KeyState.values` (no numba, or `LastClosedWindow` reads of fixed windows).
"""

from __future__ import annotations

import json
import warnings
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from storey.aggregations.field import FieldAggregator, normalize_aggregates
from storey.aggregations.naming import check_unique_features
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import FixedWindowType
from storey.errors import PerformanceWarning
from storey.frames._batch import INVALID, SKIP, Batch, fill_aggregator_columns, invalid_value_error
from storey.frames._keys import KeyEncoder

__all__ = ["as_of"]

_WHERE = "storey.frames.as_of"


def as_of(
    labels: Any,
    data: Any,
    aggregates: Sequence[Any],
    *,
    key: str | Sequence[str] | Callable[[dict[str, Any]], Any],
    time_field: str,
    label_key: str | Sequence[str] | None = None,
    label_time: str | None = None,
    inclusive: bool = True,
    fixed_window_type: FixedWindowType = FixedWindowType.CurrentOpenWindow,
    batch_size: int = 65536,
    on_error: str = "raise",
    output: str | None = None,
    engine: str = "local",
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Features of each label's key at exactly the label's time, from events up to that time.

    Parameters
    ----------
    labels
        Table-like (as `data`): one row per label.
    data
        The events (as for `storey.frames.aggregate`).
    aggregates
        `FieldAggregator`s or dicts.
    key, time_field
        The events' key and time columns.
    label_key, label_time
        The labels' key and time columns (default: `key` and `time_field`).
    inclusive
        Events at exactly the label time count (``≤ q``); ``False``: only earlier ones (``< q``).
    fixed_window_type
        For fixed windows: the current open window (default) or the last closed one.
    batch_size, on_error, storage_options
        As for `storey.frames.aggregate`.
    output
        Stream the rows to Parquet/CSV and return the metrics instead.
    engine
        ``'local'``, or ``'dask'`` (`storey.frames.dask`).

    Returns
    -------
    pyarrow.Table
        The label columns, then the feature columns; one row per label in label order. A key without
        events gets the empty results (0 / 0.0 / NaN).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from storey import FieldAggregator, SlidingWindows
    >>> events = pa.table({"user": ["a", "a", "a"], "t": [0, 60_000, 120_000], "x": [1.0, 2.0, 4.0]})
    >>> labels = pa.table({"user": ["a", "a", "b"], "t": [60_000, 59_999, 60_000]})
    >>> agg = FieldAggregator("x", "x", ["sum"], SlidingWindows(["1h"], "10m"))
    >>> as_of(labels, events, [agg], key="user", time_field="t").column("x_sum_1h").to_pylist()
    [3.0, 1.0, 0.0]
    """
    import pyarrow as pa

    from storey.frames.aggregate import _dask_call, check_engine
    from storey.frames.io import iter_batches

    if engine == "dask":
        return _dask_call("as_of", locals())
    check_engine(engine, _WHERE)
    aggs = normalize_aggregates(aggregates, _WHERE)
    check_unique_features(aggs, _WHERE)
    if not isinstance(time_field, str):
        msg = f"{_WHERE}: `time_field` must be a column name, got {time_field!r}"
        raise TypeError(msg)
    label_key = key if label_key is None else label_key
    label_time = time_field if label_time is None else label_time
    plans = [AggregatorPlan(a, fixed_window_type=fixed_window_type) for a in aggs]
    keys = KeyEncoder(key, _WHERE)
    slow = [a.name for a in aggs if not isinstance(a.field, str)]
    slow += [a.name for a in aggs if a.aggr_filter is not None and not _column_filter(a)]
    if slow or keys.callable is not None:
        warnings.warn(
            f"{_WHERE}: user functions are called row by row (aggregators {slow})",
            PerformanceWarning,
            stacklevel=2,
        )
    events = _read_events(data, aggs, keys, time_field, batch_size, on_error, storage_options)
    label_keys = KeyEncoder(label_key, _WHERE)
    label_keys.ids = keys.ids  # one key space: label keys map onto the events' ids (new keys have no events)
    label_keys.values = keys.values
    label_tables: list[Any] = []
    label_kids: list[np.ndarray] = []
    label_times: list[np.ndarray] = []
    skipped_rows = 0
    for ib in iter_batches(
        labels,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        time_field=label_time,
        key_fields=label_keys.columns,
    ):
        skipped_rows += ib.skipped_rows
        if ib.num_rows == 0:
            continue
        batch = Batch(ib.batch, ib.source, ib.row_offset)
        label_kids.append(label_keys.encode(ib.batch, batch.rows))
        label_times.append(ib.time_ns)
        label_tables.append(pa.Table.from_batches([ib.batch]))
    lk = np.concatenate(label_kids) if label_kids else np.empty(0, dtype=np.int64)
    lq = np.concatenate(label_times) if label_times else np.empty(0, dtype=np.int64)
    if _compiled_plans(plans):
        columns = _evaluate_compiled(plans, events, lk, lq, inclusive)
    else:
        columns = _feature_columns(plans, aggs, _evaluate(plans, events, lk, lq, len(keys), inclusive))
    if label_tables:
        out = pa.concat_tables(label_tables, promote_options="permissive")
    else:
        out = pa.table({})
    for name, arr in columns.items():
        if name in out.schema.names:
            out = out.set_column(out.schema.get_field_index(name), name, arr)
        else:
            out = out.append_column(name, arr)
    metrics = {"events": int(len(events["kids"])), "labels": int(len(lk)), "skipped_rows": skipped_rows}
    out = out.replace_schema_metadata({b"storey.metrics": json.dumps(metrics).encode()})
    if output is not None:
        from storey.frames.io import OutputSink

        with OutputSink(output, storage_options=storage_options, batch_size=batch_size) as sink:
            sink.write(out)
        return {**metrics, "rows_out": out.num_rows}
    return out


#: Use the compiled label loop when numba is available (tests switch it off to compare the two paths).
USE_COMPILED = True


def _compiled_plans(plans: list[AggregatorPlan]) -> bool:
    """Whether every aggregator can run the generated ``asof`` loop (numba importable, template kernels, no
    `LastClosedWindow` reads: the generated evaluation reads the window that holds the label)."""
    from storey.aggregations.kernels.base import _numba_enabled
    from storey.frames._codegen import AggShape

    if not USE_COMPILED or not _numba_enabled():
        return False
    for p in plans:
        if p.window_type == "fixed" and p.fixed_window_type is FixedWindowType.LastClosedWindow:
            return False
    return all(AggShape(p).fusable for p in plans)


def _evaluate_compiled(
    plans: list[AggregatorPlan],
    events: dict[str, Any],
    lk: np.ndarray,
    lq: np.ndarray,
    inclusive: bool,
) -> dict[str, Any]:
    """The feature columns of every label, by the generated ``asof`` loop of each aggregator.

    The events are ordered by ``(key, tile)`` (input order within a tile, a stable sort; one order per tile
    period) and the labels by ``(key, q)``; each aggregator's loop then walks both once, in memory order,
    skipping the events it does not count (see `AggShape.asof_source`).
    """
    from storey.frames import _codegen as cg
    from storey.frames._compiled import _AggState, _map, _shape_module
    from storey.frames._output import features_array

    lab_order = np.lexsort((lq, lk))
    lk_s = np.ascontiguousarray(lk[lab_order])
    lq_s = np.ascontiguousarray(lq[lab_order])
    n_labels = len(lk)
    kids, times = events["kids"], events["times"]
    orders = _key_tile_orders(kids, times, {p.period_ns for p in plans})

    def run_one(a: int) -> list[tuple[str, Any]]:
        plan = plans[a]
        shape = cg.AggShape(plan)
        module = _shape_module(shape)
        P = np.int64(plan.period_ns)
        st = _AggState(shape, 1, 0)
        st.grow_pool(4 * st.maxseg)
        tops = np.full((1, 1 + cg.N_SIZE_CLASSES), -1, dtype=np.int64)
        tops[0, 0] = 0
        oi = np.empty((len(shape.int_out), n_labels), dtype=np.int64)
        of = np.empty((len(shape.float_out), n_labels), dtype=np.float64)
        ctr = np.zeros(cg.N_CTR, dtype=np.int64)
        order, ek, et = orders[plan.period_ns]
        ev = events["values"][a][order]
        eu = events["used"][a][order]
        module.asof(
            ek, et, ev, eu, P, lk_s, lq_s, lq_s // P, lab_order, inclusive, st.hd[0, cg.H_], st.hd[0, cg.M_],
            st.hd, st.pk, st.wi, st.wf, st.ci, st.cf, st.ip, st.fp, oi, of, tops, 0, st.maxseg, ctr,
        )  # fmt: skip
        if int(ctr[cg.C_STATUS]) != cg.DONE:  # pragma: no cover - the pool holds one key's largest segment
            msg = f"{_WHERE}: internal error: the tile pool of aggregator {plan.name!r} is too small"
            raise RuntimeError(msg)
        rows = shape.feature_rows(oi, of, n_labels)
        return [(name, features_array(v, None)) for name, v in zip(plan.feature_names, rows, strict=True)]

    columns: dict[str, Any] = {}
    for part in _map(run_one, list(range(len(plans))), n_labels + len(kids)):
        columns.update(part)
    return columns


def _key_tile_orders(
    kids: np.ndarray, times: np.ndarray, periods: set[int]
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per tile period: the event order by ``(key, tile)`` (input order within a ``(key, tile)``: a stable
    sort), and the keys and times in that order.

    Events usually arrive in time order: a stable sort by key alone (a radix sort for up to 65 536 keys) is
    then already in tile order within each key, for every period; where it is not (late events), the
    composite ``(key, tile)`` is nearly sorted and a stable (run-adaptive) sort of it finishes the order.
    """
    if int(kids.max(initial=0)) < 1 << 16:
        by_key = np.argsort(kids.astype(np.uint16), kind="stable")
    else:
        by_key = np.argsort(kids, kind="stable")
    k = kids[by_key]
    t = times[by_key]
    same_key = k[1:] == k[:-1]
    orders: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for period in periods:
        tiles = t // np.int64(period)
        if not bool(np.any((tiles[1:] < tiles[:-1]) & same_key)):
            orders[period] = (by_key, k, t)
            continue
        lo = int(tiles.min())
        span = int(tiles.max()) - lo + 1
        if int(k[-1]) < (2**62) // span:
            fix = np.argsort(k * np.int64(span) + (tiles - np.int64(lo)), kind="stable")
            orders[period] = (by_key[fix], k[fix], t[fix])
        else:  # pragma: no cover - tile spans beyond 2**62 / keys
            order = np.lexsort((times // np.int64(period), kids))
            orders[period] = (order, kids[order], times[order])
    return orders


def _column_filter(agg: FieldAggregator) -> bool:
    from storey.aggregations.field import FieldEquals

    return isinstance(agg.aggr_filter, FieldEquals)


def _read_events(
    data: Any,
    aggs: list[FieldAggregator],
    keys: KeyEncoder,
    time_field: str,
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
) -> dict[str, Any]:
    """Key ids, times and, per aggregator, the values that count (filter passed, not skipped)."""
    from storey.aggregations.step import ValueReader
    from storey.frames.io import iter_batches

    value_fields = [a.field for a in aggs if isinstance(a.field, str)]
    value_fields += [a.aggr_filter.field for a in aggs if _column_filter(a)]  # type: ignore[union-attr]
    kids: list[np.ndarray] = []
    times: list[np.ndarray] = []
    values: list[list[np.ndarray]] = [[] for _ in aggs]
    used: list[list[np.ndarray]] = [[] for _ in aggs]
    readers = [ValueReader(a, _WHERE) for a in aggs]
    for ib in iter_batches(
        data,
        batch_size=batch_size,
        on_error=on_error,
        storage_options=storage_options,
        time_field=time_field,
        key_fields=keys.columns,
        value_fields=list(dict.fromkeys(value_fields)),
    ):
        if ib.num_rows == 0:
            continue
        batch = Batch(ib.batch, ib.source, ib.row_offset)
        batch.times = ib.time_ns
        batch.kids = keys.encode(ib.batch, batch.rows)
        fill_aggregator_columns(batch, aggs)
        kids.append(batch.kids)
        times.append(batch.times)
        for a, agg in enumerate(aggs):
            v, ok = _agg_values(agg, batch, a, readers[a])
            values[a].append(v)
            used[a].append(ok)
    cat = np.concatenate
    return {
        "kids": cat(kids) if kids else np.empty(0, dtype=np.int64),
        "times": cat(times) if times else np.empty(0, dtype=np.int64),
        "values": [cat(v) if v else np.empty(0) for v in values],
        "used": [cat(u) if u else np.empty(0, dtype=bool) for u in used],
    }


def _agg_values(agg: FieldAggregator, batch: Batch, a: int, reader: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values and whether each row is aggregated (filter passed, value not skipped); nothing is too late."""
    n = batch.n
    flt = batch.filters[a]
    if flt is None:
        passed = np.ones(n, dtype=bool)
    elif isinstance(flt, np.ndarray):
        passed = flt
    else:
        rows = batch.rows()
        passed = np.fromiter((bool(flt(r)) for r in rows), dtype=bool, count=n)
    vals = batch.values[a]
    if vals is not None:
        status = batch.status[a]
        assert status is not None
        bad = np.flatnonzero(passed & (status == INVALID))
        if len(bad):
            raise invalid_value_error(agg, batch, int(bad[0]), _WHERE)
        return vals, passed & (status != SKIP)
    rows = batch.rows()
    out = np.zeros(n, dtype=np.float64)
    ok = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(passed).tolist():
        v = reader.convert(agg.field(rows[i]), None)  # type: ignore[misc]
        if type(v) is float:
            out[i] = v
            ok[i] = True
    return out, ok


def _evaluate(
    plans: list[AggregatorPlan],
    events: dict[str, Any],
    lk: np.ndarray,
    lq: np.ndarray,
    n_keys: int,
    inclusive: bool,
) -> list[list[tuple[Any, ...]]]:
    """Per aggregator, the features of every label (in label order)."""
    n_labels = len(lk)
    out: list[list[tuple[Any, ...]]] = [[()] * n_labels for _ in plans]
    ev_order = np.argsort(events["kids"], kind="stable")
    ev_kids = events["kids"][ev_order]
    lab_order = np.lexsort((lq, lk))  # by key, then time (stable for equal (key, time))
    lab_kids = lk[lab_order]
    ev_bounds = np.searchsorted(ev_kids, np.arange(n_keys + 1), side="left")
    lab_bounds = np.searchsorted(lab_kids, np.arange(n_keys + 1), side="left")
    times = events["times"]
    empty = [p.new_state().values(0) for p in plans]
    for kid in range(n_keys):
        l0, l1 = int(lab_bounds[kid]), int(lab_bounds[kid + 1])
        if l0 == l1:
            continue
        e0, e1 = int(ev_bounds[kid]), int(ev_bounds[kid + 1])
        rows_ev = ev_order[e0:e1]  # the key's events, input order
        label_rows = lab_order[l0:l1].tolist()
        for a, plan in enumerate(plans):
            if e0 == e1:
                for r in label_rows:
                    out[a][r] = empty[a]
                continue
            used = events["used"][a][rows_ev]
            sel = rows_ev[used]
            _key_labels(plan, times[sel], events["values"][a][sel], lq, label_rows, inclusive, out[a])
    return out


def _key_labels(
    plan: AggregatorPlan,
    t: np.ndarray,
    v: np.ndarray,
    lq: np.ndarray,
    label_rows: list[int],
    inclusive: bool,
    out: list[tuple[Any, ...]],
) -> None:
    """One key and aggregator: full tile summaries, then each label with its own tile re-folded."""
    P = plan.period_ns
    update_row = plan.fused.update_row
    empty_row = plan.fused.empty_row
    tiles = t // P
    order = np.argsort(tiles, kind="stable")  # by tile, input order within a tile
    tl = t[order].tolist()
    vl = v[order].tolist()
    kl = tiles[order].tolist()
    keys: list[int] = []
    rows: list[list[Any]] = []
    spans: dict[int, tuple[int, int]] = {}
    i = 0
    m = len(kl)
    while i < m:
        k = kl[i]
        j = i
        row = list(empty_row)
        while j < m and kl[j] == k:
            row = _updated(update_row, row, vl[j], tl[j])
            j += 1
        keys.append(k)
        rows.append(row)
        spans[k] = (i, j)
        i = j
    reach = 3 * plan.windows.n_tiles  # no window as of tile k reads a tile below k - reach
    for r in label_rows:
        q = int(lq[r])
        k = q // P
        j0 = bisect_left(keys, k - reach)
        j1 = bisect_left(keys, k)
        ks = keys[j0:j1]
        rs = rows[j0:j1]
        span = spans.get(k)
        if span is not None:
            row = list(empty_row)
            n = 0
            for x in range(span[0], span[1]):
                if tl[x] <= q if inclusive else tl[x] < q:
                    row = _updated(update_row, row, vl[x], tl[x])
                    n += 1
            if n:
                ks = [*ks, k]
                rs = [*rs, row]
        values = plan.state_from_tiles(q, ks, rs).values(q)
        assert values is not None
        out[r] = values


def _updated(update_row: Callable[..., Any], row: Any, v: float, t: int) -> Any:
    """One `update` of a tile row with the fused kernel templates (in place, or returning the new row)."""
    new = update_row(row, v, t)
    return row if new is None else new


def _feature_columns(
    plans: list[AggregatorPlan], aggs: list[FieldAggregator], features: list[list[tuple[Any, ...]]]
) -> dict[str, Any]:
    import pyarrow as pa

    columns: dict[str, Any] = {}
    for plan, agg, values in zip(plans, aggs, features, strict=True):
        n_w = len(plan.windows.windows)
        f = 0
        for aggr in plan.aggregations:
            is_int = aggr == "count" and not isinstance(agg.max_value, float)
            for _ in range(n_w):
                col = [vals[f] for vals in values]
                columns[plan.feature_names[f]] = pa.array(col, type=pa.int64() if is_int else pa.float64())
                f += 1
    return columns
