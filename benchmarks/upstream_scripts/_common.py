"""Helpers shared by the scripts that run inside the upstream-storey venv (see ``benchmarks/_upstream.py``).

Each script reads one JSON argument (its parameters) and prints one JSON line (its result).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC
from typing import Any


def params() -> dict[str, Any]:
    """The script's JSON parameters (``sys.argv[1]``), after checking that storey is upstream's."""
    import storey

    if sys.prefix not in storey.__file__:
        msg = f"storey imported from {storey.__file__}, not from the upstream venv {sys.prefix}"
        raise SystemExit(msg)
    return json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def emit_result(result: dict[str, Any]) -> None:
    """Print the result as the last line of stdout, adding the upstream version."""
    import storey

    result.setdefault("storey_version", storey.__version__)
    print(json.dumps(result))


def rate(events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds, 1),
        **extra,
    }


def load_rows(path: str, n: int | None) -> list[dict[str, Any]]:
    """The first ``n`` rows of a workload Parquet file as dict bodies (aware UTC datetimes, nulls None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if n is not None:
        table = table.slice(0, n)
    # Python datetimes (not pandas Timestamps) so the bodies match what a streaming user emits.
    ns = table.column("time").cast(pa.int64()).to_numpy()
    from datetime import datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = [epoch + timedelta(microseconds=int(v) // 1000) for v in ns]
    rows = table.drop(["time"]).to_pylist()
    for row, t in zip(rows, times, strict=True):
        row["time"] = t
    return rows


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
