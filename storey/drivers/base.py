"""`Driver`, the abstract storage interface behind a `storey.table.Table` (spec STEPS.md §9.2).

A driver stores **records**: for each ``(table_path, key)`` a flat mapping of attribute names to values, plus
one JSON **schema** document per table path. ``key`` is always the encoded key of STEPS.md §9.1 (a `str`),
produced by the `Table`. Every method is a coroutine.

Rules every driver follows (the contract tests in ``tests/unit/drivers`` check them for each driver):

- Values round-trip exactly: ``None``, ``bool``, signed 64-bit ``int``, ``float`` (bit-exact, including
  ±inf and -0.0; a NaN loads as a NaN), ``str``, ``bytes`` and aware datetimes (ns precision). Any other
  value fails with the driver's `error_class`, naming the attribute, before anything is written.
- A record exists while it has at least one attribute; saving ``{}`` is a no-op. Attributes are never
  deleted (there is no delete operation).
- ``save_key`` upserts exactly the given attributes, atomically: after it returns, every given attribute
  holds its new value and no other attribute changed; a reader never sees half of it.
- Transient failures are retried under the driver's `RetryPolicy` (`storey.drivers._retry`); other failures
  and exhausted retries raise `error_class` with the last error as ``__cause__``.
- ``close()`` releases connections and is idempotent. A closed driver reopens lazily on its next call, so a
  `Table` can be used again after ``close()``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from storey.errors import StoreyError

__all__ = ["Attributes", "Driver"]

Attributes = str | Sequence[str]
"""``'*'`` (every attribute) or the names of the attributes to load."""


class Driver(abc.ABC):
    """Abstract storage backend of a `storey.table.Table`.

    Subclasses implement the five coroutines below, and may override `save_keys` when their store can
    write several records in one round trip.

    Examples
    --------
    >>> import asyncio
    >>> from storey.drivers import NoopDriver
    >>> async def demo(driver: Driver):
    ...     await driver.save_key("tbl", "k1", {"a": 1, "b": b"\\x00"})
    ...     await driver.save_key("tbl", "k1", {"a": 2.5})
    ...     return await driver.load_key("tbl", "k1"), await driver.load_key("tbl", "nope")
    >>> asyncio.run(demo(NoopDriver()))
    ({'a': 2.5, 'b': b'\\x00'}, None)
    """

    error_class: ClassVar[type[StoreyError]] = StoreyError
    """The exception class this driver raises (`SQLiteError`, `RedisError`, `V3ioError`, ...)."""

    @abc.abstractmethod
    async def load_schema(self, table_path: str) -> dict[str, Any] | None:
        """The stored aggregation schema document of the table, or ``None`` if there is none."""

    @abc.abstractmethod
    async def save_schema(self, table_path: str, schema: Mapping[str, Any]) -> None:
        """Store the schema document (JSON-serialisable), replacing any previous one."""

    @abc.abstractmethod
    async def load_key(
        self, table_path: str, key: str, attributes: Attributes = "*"
    ) -> dict[str, Any] | None:
        """Load a record.

        Parameters
        ----------
        table_path
            The table.
        key
            The encoded key.
        attributes
            ``'*'`` for every attribute (``_storey_*`` included), or the names to load; names the record
            does not have are left out of the result.

        Returns
        -------
        dict or None
            ``None`` if the record does not exist.
        """

    @abc.abstractmethod
    async def save_key(self, table_path: str, key: str, attributes: Mapping[str, Any]) -> None:
        """Upsert exactly the given attributes of the record, atomically."""

    async def load_keys(
        self, table_path: str, keys: Sequence[str]
    ) -> list[dict[str, Any] | BaseException | None]:
        """Load several records (every attribute), each as by `load_key`.

        `Table.load_records` uses this to load a batch's new keys at once. Returns, per key, its record,
        ``None`` if it does not exist, or the exception its load raised (one failing key does not fail the
        others). The default runs `load_key` for every key concurrently; drivers override it to use one round
        trip.
        """
        return await asyncio.gather(*(self.load_key(table_path, key) for key in keys), return_exceptions=True)

    async def save_keys(self, table_path: str, records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Save several records, each as by `save_key` (the batch as a whole need not be atomic).

        `Table.flush` uses this to write many dirty keys at once. The default calls `save_key` for each
        record in order; drivers override it to use one round trip or one transaction.
        """
        for key, attributes in records:
            await self.save_key(table_path, key, attributes)

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent; the driver reopens lazily on its next call."""

    def _where(self, table_path: str, key: str | None = None) -> str:
        """The location prefix of this driver's error messages."""
        name = type(self).__name__
        if key is None:
            return f"{name}: table {table_path!r}"
        return f"{name}: table {table_path!r}, key {key!r}"
