"""The bundled demo dataset (`storey/data/demo_events.parquet`) and its generator `storey._demo`."""

from __future__ import annotations

import numpy as np
import pytest

from storey import _demo

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

DAY_NS = 86_400 * 10**9


def test_bundled_file_is_small_and_regenerable() -> None:
    path = _demo.demo_events_path()
    assert path.exists()
    assert path.stat().st_size < 5 * 2**20
    bundled = pq.read_table(path)
    # If a numpy release ever changes default_rng streams, regenerate with `python -m storey._demo`.
    assert bundled.equals(_demo.demo_table())


def test_bundled_schema_and_shape() -> None:
    table = pq.read_table(_demo.demo_events_path())
    assert table.schema == pa.schema(
        [
            ("key", pa.string()),
            ("time", pa.timestamp("ns", tz="UTC")),
            ("click", pa.int64()),
            ("purchase_amount", pa.float64()),
            ("activity_status", pa.string()),
        ]
    )
    assert table.num_rows == _demo.DEMO_ROWS
    assert len(table.column("key").unique()) == _demo.DEMO_KEYS
    assert set(table.column("activity_status").unique().to_pylist()) == set(_demo.STATUSES)
    assert 0 < table.column("purchase_amount").null_count < table.num_rows // 2


def _late_counts(keys: np.ndarray, times: np.ndarray, window_ns: int) -> tuple[int, int]:
    """(late, too late) events: older than the key's running maximum, by less / more than ``window_ns``."""
    high: dict[int, int] = {}
    late = too_late = 0
    for k, t in zip(keys.tolist(), times.tolist(), strict=True):
        h = high.get(k)
        if h is not None and t < h:
            if h - t > window_ns:
                too_late += 1
            else:
                late += 1
        high[k] = t if h is None else max(h, t)
    return late, too_late


def test_streams_are_mostly_in_order_with_late_and_too_late_events() -> None:
    cols = _demo.demo_columns(50_000, n_keys=200, seed=3)
    times = cols["time_ns"]
    span_days = (np.percentile(times, 99) - np.percentile(times, 1)) / DAY_NS
    assert 0.3 < span_days < 0.5  # 50 000 events at 1.5/s
    late, too_late = _late_counts(cols["key_id"], times, DAY_NS)
    assert 0.001 * len(times) < late < 0.02 * len(times)
    assert 1 <= too_late < 0.002 * len(times)


def test_deterministic_by_seed() -> None:
    a, b, c = (_demo.demo_columns(1_000, seed=s) for s in (7, 7, 8))
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    assert not np.array_equal(a["time_ns"], c["time_ns"])
