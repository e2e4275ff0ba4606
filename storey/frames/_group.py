"""Group a batch's rows by key id, keeping arrival order within each key (compiled; needs numba).

A stable argsort would do, but costs O(n log n); this is two O(n) passes over per-key linked lists, with
per-key scratch arrays that persist across batches (and are left reset).
"""

from __future__ import annotations

import numpy as np

from storey.aggregations.kernels.compiled import njit

__all__ = ["group_rows"]


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
