"""`RedisDriver`: tables in Redis hashes, through ``redis.asyncio`` (spec STEPS.md §9.2).

Layout:

- a record is the hash ``{key_prefix}{table_path}:{encoded key}``; its fields are the attribute names and
  its values the typed encoding of `storey.drivers._encoding` (``n:``, ``b:``, ``i:``, ``f:``, ``s:``,
  ``y:``, ``t:``), so aggregation blobs are ``y:`` fields holding the exact bytes;
- the schema is the string ``{key_prefix}{table_path}:.schema`` (JSON), so the encoded key ``.schema`` is
  reserved.

``save_key`` is **one** ``HSET`` with every given field: a single command, hence atomic. ``save_keys``
sends one ``HSET`` per record in a non-transactional pipeline (each record stays atomic; the batch needs
not be). ``load_key`` is one ``HGETALL`` (or ``HMGET``, plus ``EXISTS`` when none of the names exist).

**Server-side merges: not implemented, by decision.** The spec allows a registered script that merges
state on the server, provided that the stored record is byte-identical to a plain upsert. The kernels
already compute the exact bytes of the state blob, so a script could only re-derive what the client sends,
at the cost of a second implementation of the state layout in Lua that would have to stay bit-identical to
the kernels. A plain ``HSET`` of whole values is simpler, is trivially byte-identical, and makes a retried
write idempotent. If a merge is ever added it goes in one table mapping merge operations to Redis
operations in this module, never in the kernels.

Retries: connection errors (refused, reset, lost), timeouts, ``LOADING`` and ``BUSY`` are transient and
retried under the `RetryPolicy`; redis-py's own retries are switched off for clients this driver creates, so
there is one retry policy. Everything else is raised as `RedisError` with the redis-py error as
``__cause__``. A client passed as ``redis_client`` is used as is (its own retry settings included) and is
never closed by the driver; a client the driver creates from the URL is closed by `close` and re-created
on the next call (also when the driver is used from another event loop, since redis-py connections belong
to the loop that opened them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from storey._utils._imports import require
from storey.drivers._encoding import decode_record, decode_schema, encode_record, encode_schema
from storey.drivers._retry import RetryPolicy
from storey.drivers.base import Attributes, Driver
from storey.errors import RedisError

__all__ = ["RedisDriver"]

T = TypeVar("T")
"""The result of a retried Redis call."""

_SCHEMA_SUFFIX = ".schema"
_BATCH_RECORDS = 512
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "TRYAGAIN")


def _is_transient(exc: BaseException) -> bool:
    """Connection refused/reset/lost, timeouts, ``LOADING`` and ``BUSY`` replies (not bad credentials)."""
    if isinstance(exc, OSError):  # includes TimeoutError and ConnectionResetError
        return True
    exceptions = require("redis.exceptions")
    if isinstance(exc, exceptions.AuthenticationError | exceptions.AuthorizationError):
        return False  # ConnectionError subclasses in redis-py, but retrying cannot fix credentials
    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError):  # incl. BusyLoadingError
        return True
    if isinstance(exc, exceptions.ResponseError):
        return str(exc).upper().startswith(_TRANSIENT_REPLIES)
    return False


class RedisDriver(Driver):
    """Stores tables in Redis, one hash per record.

    Parameters
    ----------
    redis_url
        E.g. ``redis://localhost:6379/0``; falls back to the ``REDIS_URL`` environment variable.
    key_prefix
        Prepended to every Redis key.
    redis_client
        A ``redis.asyncio.Redis`` to use instead of a URL (created with ``decode_responses=False``). The
        driver never closes it.
    retry_backoff_secs, max_retries
        Retries of transient failures (`storey.drivers._retry.RetryPolicy`).

    Raises
    ------
    ValueError
        Neither a URL (argument or ``REDIS_URL``) nor a client is given.

    Examples
    --------
    >>> driver = RedisDriver("redis://127.0.0.1:6379/0", key_prefix="app:")
    >>> driver.record_key("purchases", "user1")
    'app:purchases:user1'
    """

    error_class = RedisError

    def __init__(
        self,
        redis_url: str | None = None,
        key_prefix: str = "storey:",
        redis_client: Any = None,
        retry_backoff_secs: float = 0.1,
        max_retries: int = 5,
    ) -> None:
        if redis_url is None and redis_client is None:
            redis_url = os.environ.get("REDIS_URL") or None
        if redis_url is None and redis_client is None:
            msg = "RedisDriver: pass redis_url or redis_client, or set the REDIS_URL environment variable"
            raise ValueError(msg)
        self._url = redis_url
        self._key_prefix = key_prefix
        self._own_client = redis_client is None
        self._client = redis_client
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._retry = RetryPolicy(retry_backoff_secs, max_retries)

    def __repr__(self) -> str:
        target = self._url if self._own_client else "<client>"
        return f"RedisDriver({target!r}, key_prefix={self._key_prefix!r})"

    def record_key(self, table_path: str, key: str) -> str:
        """The Redis key of a record's hash."""
        return f"{self._key_prefix}{table_path}:{key}"

    def schema_key(self, table_path: str) -> str:
        """The Redis key of a table's schema string."""
        return f"{self._key_prefix}{table_path}:{_SCHEMA_SUFFIX}"

    # -- driver interface ---------------------------------------------------------------------------------

    async def load_schema(self, table_path: str) -> dict[str, Any] | None:
        where = self._where(table_path)
        text = await self._call(
            lambda client: client.get(self.schema_key(table_path)), f"{where}: load_schema"
        )
        return None if text is None else decode_schema(text, error_class=RedisError, where=where)

    async def save_schema(self, table_path: str, schema: Mapping[str, Any]) -> None:
        where = self._where(table_path)
        text = encode_schema(schema, error_class=RedisError, where=where)
        await self._call(
            lambda client: client.set(self.schema_key(table_path), text), f"{where}: save_schema"
        )

    async def load_key(
        self, table_path: str, key: str, attributes: Attributes = "*"
    ) -> dict[str, Any] | None:
        where = self._where(table_path, key)
        hkey = self._checked_record_key(table_path, key)
        if attributes == "*":
            raw = await self._call(lambda client: client.hgetall(hkey), f"{where}: load_key")
            if not raw:
                return None
            items = [(name.decode(), value) for name, value in raw.items()]
            return decode_record(items, error_class=RedisError, where=where)
        names = [attributes] if isinstance(attributes, str) else list(dict.fromkeys(attributes))
        values = await self._call(lambda client: _hmget(client, hkey, names), f"{where}: load_key")
        if values is None:
            return None
        items = [(name, value) for name, value in zip(names, values, strict=True) if value is not None]
        return decode_record(items, error_class=RedisError, where=where)

    async def save_key(self, table_path: str, key: str, attributes: Mapping[str, Any]) -> None:
        where = self._where(table_path, key)
        hkey = self._checked_record_key(table_path, key)
        encoded = encode_record(attributes, error_class=RedisError, where=where)
        if encoded:
            await self._call(lambda client: client.hset(hkey, mapping=encoded), f"{where}: save_key")

    async def save_keys(self, table_path: str, records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        for start in range(0, len(records), _BATCH_RECORDS):
            batch = []
            for key, attributes in records[start : start + _BATCH_RECORDS]:
                hkey = self._checked_record_key(table_path, key)
                encoded = encode_record(
                    attributes, error_class=RedisError, where=self._where(table_path, key)
                )
                if encoded:
                    batch.append((hkey, encoded))
            if batch:
                await self._call(
                    lambda client, batch=batch: _hset_many(client, batch),
                    f"{self._where(table_path)}: save_keys",
                )

    async def close(self) -> None:
        if not self._own_client:
            return
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.aclose()
        except Exception as exc:
            msg = f"RedisDriver: close failed: {exc!r}"
            raise RedisError(msg) from exc

    # -- internals ------------------------------------------------------------------------------------------

    def _checked_record_key(self, table_path: str, key: str) -> str:
        if key == _SCHEMA_SUFFIX:
            msg = (
                f"{self._where(table_path, key)}: the key {_SCHEMA_SUFFIX!r} is reserved for the table schema"
            )
            raise RedisError(msg)
        return self.record_key(table_path, key)

    async def _call(self, op: Callable[[Any], Awaitable[T]], what: str) -> T:
        return await self._retry.call(
            lambda: op(self._get_client()), is_transient=_is_transient, error_class=RedisError, what=what
        )

    def _get_client(self) -> Any:
        if not self._own_client:
            return self._client
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            asyncio_redis = require("redis.asyncio")
            retry = require("redis.asyncio.retry").Retry(require("redis.backoff").NoBackoff(), 0)
            self._client = asyncio_redis.Redis.from_url(self._url, decode_responses=False, retry=retry)
            self._client_loop = loop
        return self._client


async def _hmget(client: Any, hkey: str, names: list[str]) -> list[bytes | None] | None:
    values = await client.hmget(hkey, names) if names else []
    if any(value is not None for value in values):
        return values
    return values if await client.exists(hkey) else None


async def _hset_many(client: Any, batch: list[tuple[str, dict[str, bytes]]]) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for hkey, encoded in batch:
            pipe.hset(hkey, mapping=encoded)
        await pipe.execute()
