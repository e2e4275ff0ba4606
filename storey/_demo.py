"""Synthetic click/purchase events: the bundled demo dataset and the benchmark workload.

The events are those of the README's aggregation example:

=====================  ======================  ===================================================
column                 type                    content
=====================  ======================  ===================================================
``key``                string                  ``user_00042``, uniform over ``n_keys`` keys
``time``               timestamp[ns, UTC]      whole milliseconds, mostly increasing (see below)
``click``              int64                   Poisson(1)
``purchase_amount``    float64, nullable       log-normal, rounded to cents; null for ~20% of events
``activity_status``    string                  ``ok`` 90%, ``fail`` 7%, ``pending`` 3%
=====================  ======================  ===================================================

Rows are in arrival order. Arrival times are a Poisson process at ``events_per_second`` from
``start`` (2024-01-01T00:00:00Z). A fraction ``late_fraction`` of events carries a time up to 30 min
before its arrival (late, but inside every window of the README features); a fraction
``too_late_fraction`` carries a time 30 to 48 h before its arrival (older than a 24 h window: too late
for the key). Everything is a pure function of the arguments, through ``numpy.random.default_rng(seed)``.

The bundled file ``storey/data/demo_events.parquet`` is ``generate_demo_events(path)`` with the defaults:
250 000 events, 2 000 keys, about two days.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from storey._utils._imports import require

__all__ = ["DEMO_EVENTS_PATH", "demo_columns", "demo_events_path", "demo_table", "generate_demo_events"]

DEMO_EVENTS_PATH = Path(__file__).resolve().parent / "data" / "demo_events.parquet"
START_NS = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
STATUSES = ("ok", "fail", "pending")
_STATUS_P = (0.90, 0.07, 0.03)
_MS = 1_000_000
_LATE_MAX_MS = 30 * 60_000
_TOO_LATE_MS = (30 * 3_600_000, 48 * 3_600_000)

DEMO_ROWS = 250_000
DEMO_KEYS = 2_000
DEMO_EVENTS_PER_SECOND = 1.5  # 250 000 events in ~46 h


def demo_columns(
    n_rows: int,
    *,
    n_keys: int = DEMO_KEYS,
    seed: int = 0,
    events_per_second: float = DEMO_EVENTS_PER_SECOND,
    late_fraction: float = 0.01,
    too_late_fraction: float = 0.0005,
    null_fraction: float = 0.2,
    start_ns: int = START_NS,
) -> dict[str, np.ndarray]:
    """Generate the events as numpy arrays.

    Returns
    -------
    dict
        ``key_id`` (int64 in ``[0, n_keys)``), ``time_ns`` (int64 epoch ns), ``click`` (int64),
        ``purchase_amount`` (float64, NaN where null) and ``status_id`` (index into `STATUSES`).

    Examples
    --------
    >>> cols = demo_columns(1_000, n_keys=10, seed=1)
    >>> sorted(cols), len(cols["time_ns"])
    (['click', 'key_id', 'purchase_amount', 'status_id', 'time_ns'], 1000)
    """
    rng = np.random.default_rng(seed)
    gaps_ms = rng.exponential(1000.0 / events_per_second, n_rows)
    time_ms = np.floor(np.cumsum(gaps_ms)).astype(np.int64)
    u = rng.random(n_rows)
    late = u < late_fraction
    too_late = (u >= late_fraction) & (u < late_fraction + too_late_fraction)
    shift_ms = np.zeros(n_rows, dtype=np.int64)
    shift_ms[late] = rng.integers(1, _LATE_MAX_MS, int(late.sum()))
    shift_ms[too_late] = rng.integers(*_TOO_LATE_MS, int(too_late.sum()))
    amount = np.round(rng.lognormal(3.0, 1.0, n_rows), 2)
    null = rng.random(n_rows) < null_fraction
    amount[null] = np.nan
    return {
        "key_id": rng.integers(0, n_keys, n_rows),
        "time_ns": start_ns + (time_ms - shift_ms) * _MS,
        "click": rng.poisson(1.0, n_rows).astype(np.int64),
        "purchase_amount": amount,
        "status_id": rng.choice(len(STATUSES), n_rows, p=_STATUS_P),
    }


def key_names(n_keys: int) -> list[str]:
    """The key strings, ``user_00000`` onwards (at least five digits).

    Examples
    --------
    >>> key_names(2)
    ['user_00000', 'user_00001']
    """
    width = max(5, len(str(n_keys - 1)))
    return [f"user_{i:0{width}d}" for i in range(n_keys)]


def demo_table(n_rows: int = DEMO_ROWS, *, n_keys: int = DEMO_KEYS, seed: int = 0, **kwargs: Any) -> Any:
    """Generate the events as a `pyarrow.Table` (schema in the module docstring).

    Keyword arguments go to `demo_columns`.

    Examples
    --------
    >>> table = demo_table(100, n_keys=5)
    >>> table.column_names
    ['key', 'time', 'click', 'purchase_amount', 'activity_status']
    >>> str(table.schema.field("time").type)
    'timestamp[ns, tz=UTC]'
    """
    pa = require("pyarrow")
    cols = demo_columns(n_rows, n_keys=n_keys, seed=seed, **kwargs)
    keys = pa.DictionaryArray.from_arrays(pa.array(cols["key_id"], pa.int32()), pa.array(key_names(n_keys)))
    status = pa.DictionaryArray.from_arrays(pa.array(cols["status_id"], pa.int32()), pa.array(STATUSES))
    amount = cols["purchase_amount"]
    return pa.table(
        {
            "key": keys.cast(pa.string()),
            "time": pa.array(cols["time_ns"], pa.timestamp("ns", tz="UTC")),
            "click": pa.array(cols["click"], pa.int64()),
            "purchase_amount": pa.array(amount, pa.float64(), mask=np.isnan(amount)),
            "activity_status": status.cast(pa.string()),
        }
    )


def generate_demo_events(
    path: str | Path, n_rows: int = DEMO_ROWS, seed: int = 0, *, n_keys: int = DEMO_KEYS, **kwargs: Any
) -> Path:
    """Write the demo events to a zstd-compressed Parquet file and return its path.

    ``storey/data/demo_events.parquet`` was made with the defaults; regenerate it with
    ``python -m storey._demo``.

    Examples
    --------
    >>> import tempfile, pyarrow.parquet as pq
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = generate_demo_events(f"{tmp}/demo.parquet", n_rows=1_000, n_keys=20)
    ...     pq.read_metadata(path).num_rows
    1000
    """
    pq = require("pyarrow.parquet")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = demo_table(n_rows, n_keys=n_keys, seed=seed, **kwargs)
    pq.write_table(table, path, row_group_size=65_536, compression="zstd")
    return path


def demo_events_path() -> Path:
    """The path of the bundled demo dataset.

    Examples
    --------
    >>> demo_events_path().name
    'demo_events.parquet'
    """
    return DEMO_EVENTS_PATH


if __name__ == "__main__":
    print(generate_demo_events(DEMO_EVENTS_PATH))
