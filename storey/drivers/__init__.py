"""Storage drivers behind `storey.table.Table` (spec STEPS.md §9.2).

`Driver` is the abstract interface; `NoopDriver` (in memory), `SQLiteDriver` (embedded), `RedisDriver` and
`V3ioDriver` implement it. Backend packages (redis-py, the v3io SDK) are imported on first use.
"""

from __future__ import annotations

from typing import Any

from storey.drivers.base import Driver
from storey.drivers.memory import NoopDriver
from storey.drivers.redis import RedisDriver
from storey.drivers.sqlite import SQLiteDriver

__all__ = ["Driver", "NoopDriver", "RedisDriver", "SQLiteDriver", "V3ioDriver"]


def __getattr__(name: str) -> Any:
    if name == "V3ioDriver":  # its own module, written separately; imported on first access
        from storey.drivers.v3io import V3ioDriver

        return V3ioDriver
    msg = f"module 'storey.drivers' has no attribute {name!r}"
    raise AttributeError(msg)
