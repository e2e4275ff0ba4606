"""Group a batch's rows by key id, keeping arrival order within each key (compiled; needs numba).

A stable argsort would do, but costs O(n log n); this is two O(n) passes over per-key linked lists, with
per-key scratch arrays that persist across batches (and are left reset).
"""

from __future__ import annotations

import numpy as np

from storey.frames._codegen import njit

__all__ = ["gather", "group_rows", "inverse", "max_events_mask", "ungroup"]


def _group_rows(
    kids: np.ndarray,
    times: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    nxt: np.ndarray,
    order: np.ndarray,
    last_time: np.ndarray,
    seen: np.ndarray,
) -> int:
    n = kids.shape[0]
    n_keys = 0
    for i in range(n):
        k = kids[i]
        if first[k] < 0:
            first[k] = i
            order[n_keys] = k  # the batch's keys in first-seen order (overwritten below, after use)
            n_keys += 1
        else:
            nxt[last[k]] = i
        last[k] = i
        nxt[i] = -1
    keys = order[:n_keys].copy()
    pos = 0
    for u in range(n_keys):
        k = keys[u]
        i = first[k]
        last_time[k] = times[last[k]]
        seen[k] = True
        while i >= 0:
            order[pos] = i
            pos += 1
            i = nxt[i]
        first[k] = -1
    return n_keys


_compiled = None


def group_rows(
    kids: np.ndarray,
    times: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    last_time: np.ndarray,
    seen: np.ndarray,
) -> np.ndarray:
    """Row indices grouped by key (keys in first-seen order, rows in arrival order within a key).

    `first` (``-1`` everywhere, left so) and `last` are int64 scratch arrays with one slot per key id;
    `last_time` and `seen` get each key's last event time and ``True``.
    """
    global _compiled
    if _compiled is None:
        _compiled = njit(_group_rows)
    n = len(kids)
    order = np.empty(n, dtype=np.int64)
    nxt = np.empty(n, dtype=np.int64)
    _compiled(kids, times, first, last, nxt, order, last_time, seen)
    return order


def _gather(src: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    for pos in range(order.shape[0]):
        out[pos] = src[order[pos]]


def _inverse(order: np.ndarray, out: np.ndarray) -> None:
    for pos in range(order.shape[0]):
        out[order[pos]] = pos


def _ungroup(src: np.ndarray, inv: np.ndarray, out: np.ndarray) -> None:
    for c in range(src.shape[0]):
        for i in range(inv.shape[0]):
            out[c, i] = src[c, inv[i]]


_compiled_gather = None
_compiled_inverse = None
_compiled_ungroup = None


def gather(src: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``src[order]``: a batch column in key-grouped order (compiled, so that the grouped loop then reads its
    inputs sequentially)."""
    global _compiled_gather
    if _compiled_gather is None:
        _compiled_gather = njit(_gather)
    out = np.empty(order.shape[0], dtype=src.dtype)
    _compiled_gather(src, order, out)
    return out


def inverse(order: np.ndarray) -> np.ndarray:
    """The inverse permutation of `order`: the grouped position of each row."""
    global _compiled_inverse
    if _compiled_inverse is None:
        _compiled_inverse = njit(_inverse)
    out = np.empty(order.shape[0], dtype=np.int64)
    _compiled_inverse(order, out)
    return out


def ungroup(src: np.ndarray, inv: np.ndarray, out: np.ndarray) -> None:
    """``out[:, i] = src[:, inv[i]]``: outputs computed in key-grouped order back in arrival order (`src` and
    `out` are 2-D, one row per output column; `inv` from `inverse`). A gather, not a scatter: random reads
    overlap, random writes would not."""
    global _compiled_ungroup
    if _compiled_ungroup is None:
        _compiled_ungroup = njit(_ungroup)
    _compiled_ungroup(src, inv, out)


def _max_events_mask(
    order: np.ndarray,
    kids: np.ndarray,
    times: np.ndarray,
    base_row: int,
    ek: np.ndarray,
    max_events: int,
    emitted: np.ndarray,
) -> None:
    # EmitAfterMaxEvent without a timeout: per-key counters only (storey.aggregations.emitter.on_event)
    for pos in range(order.shape[0]):
        i = order[pos]
        kid = kids[i]
        ek[kid, 2] = times[i]  # latest event (time, global row)
        ek[kid, 3] = base_row + i
        c = ek[kid, 0] + 1
        if c >= max_events:
            ek[kid, 0] = 0
            ek[kid, 1] = 0
            emitted[i] = True
        else:
            ek[kid, 0] = c
            if c == 1:
                ek[kid, 1] = base_row + i + 1  # the episode id: increasing in creation order


_compiled_mask = None


def max_events_mask(
    order: np.ndarray,
    kids: np.ndarray,
    times: np.ndarray,
    base_row: int,
    ek: np.ndarray,
    max_events: int,
    emitted: np.ndarray,
) -> None:
    """Mark the rows `EmitAfterMaxEvent(max_events)` emits and update the per-key emitter columns of `ek`
    (count, episode, latest time, latest row); rows in `order` (grouped by key, arrival order per key)."""
    from storey.frames import _codegen as cg

    assert (cg.K_COUNT, cg.K_EPISODE, cg.K_LATEST_T, cg.K_LATEST_REF) == (0, 1, 2, 3)
    global _compiled_mask
    if _compiled_mask is None:
        _compiled_mask = njit(_max_events_mask)
    _compiled_mask(order, kids, times, base_row, ek, max_events, emitted)
