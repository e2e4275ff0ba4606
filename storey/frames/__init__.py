"""`storey.frames`: the batch-first engine, bit-identical to the streaming `AggregateByKey` (spec §8–9).

Functions (all synchronous; they need pyarrow, and use numba when installed, ``storey[fast]``):

- `aggregate` — the rows the streaming `AggregateByKey` would emit over a table, a DataFrame or files;
- `build_state` — process history and persist the final per-key state into a `Table`;
- `backfill` — a linear list of steps (`Filter`, `Map`, `FlatMap`, `Extend`, `MapClass`, `AggregateByKey`);
- `as_of` — point-in-time features at label times, without leakage;
- `check_parity` — run the streaming flow and this engine on the same data and compare them.

Results are `pyarrow.Table`s (``.to_pandas()``, ``polars.from_arrow(...)``), or are streamed to Parquet/CSV
with ``output=``. `storey.frames.io` reads and writes the data.
"""

from __future__ import annotations

from storey._utils._lazy import lazy_getattr

# `aggregate` is both a submodule and a function: importing the submodule binds the package attribute to the
# module, so the function is imported eagerly here to win that name.
from storey.frames.aggregate import aggregate, build_state

__getattr__ = lazy_getattr(
    __name__,
    {
        "backfill": "storey.frames.plan",
        "as_of": "storey.frames.asof",
        "check_parity": "storey.frames.parity",
        "ParityReport": "storey.frames.parity",
    },
)

__all__ = ["ParityReport", "aggregate", "as_of", "backfill", "build_state", "check_parity"]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
