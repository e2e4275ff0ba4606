"""`NoopDriver`: the in-memory reference driver (spec STEPS.md §9.2).

The data lives in a dict inside the driver object, so several Tables that use the same driver object share
it, and nothing outlives the process. Values are kept in the typed encoding of `storey.drivers._encoding`,
the same bytes that `SQLiteDriver` and `RedisDriver` store, so this driver accepts and returns exactly what
they do, and a load never aliases a saved object (the stored form is immutable bytes: a deep copy on save
and on load). The name is the original one; it no longer discards writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storey.drivers._encoding import decode_record, decode_schema, encode_record, encode_schema
from storey.drivers.base import Attributes, Driver
from storey.errors import StoreyError

__all__ = ["NoopDriver"]


class NoopDriver(Driver):
    """In-memory driver: a dict inside the driver object.

    It never fails transiently, so it has no retry settings. Unsupported values raise `StoreyError`.

    Examples
    --------
    >>> import asyncio
    >>> driver = NoopDriver()
    >>> asyncio.run(driver.save_key("tbl", "k", {"n": None, "x": float("-inf")}))
    >>> asyncio.run(driver.load_key("tbl", "k", ["x"]))
    {'x': -inf}
    """

    error_class = StoreyError

    def __init__(self) -> None:
        self._records: dict[str, dict[str, dict[str, bytes]]] = {}
        self._schemas: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"NoopDriver(tables={len(self._records)})"

    async def load_schema(self, table_path: str) -> dict[str, Any] | None:
        text = self._schemas.get(table_path)
        if text is None:
            return None
        return decode_schema(text, error_class=self.error_class, where=self._where(table_path))

    async def save_schema(self, table_path: str, schema: Mapping[str, Any]) -> None:
        where = self._where(table_path)
        self._schemas[table_path] = encode_schema(schema, error_class=self.error_class, where=where)

    async def load_key(
        self, table_path: str, key: str, attributes: Attributes = "*"
    ) -> dict[str, Any] | None:
        record = self._records.get(table_path, {}).get(key)
        if record is None:
            return None
        if attributes == "*":
            items = record.items()
        else:
            names = [attributes] if isinstance(attributes, str) else attributes
            items = [(name, record[name]) for name in names if name in record]
        return decode_record(items, error_class=self.error_class, where=self._where(table_path, key))

    async def load_keys(
        self, table_path: str, keys: Sequence[str]
    ) -> list[dict[str, Any] | BaseException | None]:
        records = self._records.get(table_path, {})
        out: list[dict[str, Any] | BaseException | None] = []
        for key in keys:  # nothing to wait for: one after the other
            if key not in records:
                out.append(None)
                continue
            try:
                out.append(await self.load_key(table_path, key))
            except Exception as exc:
                out.append(exc)
        return out

    async def save_key(self, table_path: str, key: str, attributes: Mapping[str, Any]) -> None:
        encoded = encode_record(attributes, error_class=self.error_class, where=self._where(table_path, key))
        if encoded:
            self._records.setdefault(table_path, {}).setdefault(key, {}).update(encoded)

    async def close(self) -> None:
        """Nothing to release: the data stays in the driver object."""
