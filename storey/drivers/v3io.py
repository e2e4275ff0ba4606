"""`V3ioDriver`: records as V3IO KV items, through the real ``v3io`` SDK (spec STEPS.md §9.2).

Layout
------
``table_path`` is ``/<container>/<path>`` (a ``v3io://`` prefix is accepted). A record is the KV item
``<path>/<key>``; the schema document is the object ``<path>/.schema`` (JSON).

Values
------
V3IO attributes are numbers (``N``), strings (``S``), booleans (``BOOL``), blobs (``B``) and timestamps
(``TS``); there is no null. Values are written in native types where that is exact, so other V3IO readers
(frames, Spark, Presto, filter expressions) see ordinary attributes:

=========================================  ========================================================
value                                      stored as
=========================================  ========================================================
``bool``                                   ``BOOL``
``int`` (signed 64-bit)                    ``N``
finite ``float`` other than ``-0.0``       ``N``, written with a decimal point (never an exponent)
``str`` that fits a quoted literal         ``S`` (no ``\\``, no control characters, not both quotes)
``bytes``                                  ``B``, the raw bytes
aware ``datetime`` at or after 1970        ``TS`` ``secs:nsecs`` (UTC; ns kept)
anything else                              a **typed blob** (below)
=========================================  ========================================================

A typed blob is a ``B`` value holding ``b"\\x00storey:"`` followed by the tagged encoding of
`storey.drivers._encoding` (``b"\\x00storey:n:"`` for ``None``, ``b"\\x00storey:f:-0.0"``, ...). It holds
``None``, ``-0.0``, ±inf, NaN, strings that cannot be quoted, datetimes before 1970, and ``bytes`` that
start with the marker or look like a V3IO array blob, so that every value round-trips bit for bit.

Items are read from the raw response body (not through the SDK's decoder, which goes through ``float``
for timestamps and turns any array-looking blob into a list), so ints, timestamps and bytes come back
exactly. Blobs written by others that hold a V3IO array come back as a ``list``, as the SDK gives them.

Assumed of a live service (confirmed only against `storey.testing.v3io_emulator`): a double written as
``2.5`` or ``3.0`` is read back with a decimal point or exponent, so it stays a ``float``.

Writes
------
`save_key` is one ``UpdateItem`` (``SET a=...; SET b=...``) conditioned on the item's transaction verifier
(``__mtime_secs==S and __mtime_nsecs==N``) from this driver's last read or write of it. A false condition
(HTTP 400, error code 16777244) means another writer changed the item: the driver re-reads it, logs a
WARNING naming the table and key, and re-sends the write without a condition (last writer wins).

Failures
--------
Connection errors, timeouts and HTTP 5xx are retried with the driver's `RetryPolicy`; anything else, and
failures that outlast the retries, raise `V3ioError` with the last error (for HTTP errors, the SDK's
``HttpResponseError``) as ``__cause__``. A re-sent ``put_records`` batch may store a record twice if the
first attempt was applied but its answer was lost (at-least-once).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from storey._time import from_ns
from storey.drivers._encoding import decode_schema, decode_value, encode_schema, encode_value
from storey.drivers._retry import RetryPolicy
from storey.drivers.base import Attributes, Driver
from storey.errors import V3ioError

__all__ = ["PutRecordResult", "StreamInfo", "StreamRecord", "V3ioDriver"]

logger = logging.getLogger("storey.drivers.v3io")

FALSE_CONDITION_ERROR_CODE = 16777244
"""The ``ErrorCode`` V3IO answers (with HTTP 400) when a ``ConditionExpression`` is false."""

TYPED_BLOB_MARKER = b"\x00storey:"
"""Prefix of blobs holding a storey-typed value (``None``, non-finite floats, ...)."""

_VERIFIER_HEADER = "X-v3io-transaction-verifier"
_ARRAY_HEADER = (11223344).to_bytes(4, "little") + (1).to_bytes(4, "little")
_MAX_STRING = 61199
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPED_NAME = "_storey_x_"
_RESERVED = frozenset(
    "and or not in true false set remove inf nan if_else if_not_exists exists init_array min max pmin pmax "
    "psum blob length starts ends contains delete".split()
)
_UNSAFE_STR = re.compile(r"[\\\x00-\x1f\x7f]")
_INT64_MIN = -(2**63)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MAX_CACHED_VERIFIERS = 100_000
_SAVE_CONCURRENCY = 8


@dataclass(frozen=True)
class StreamInfo:
    """What DescribeStream tells about a stream."""

    shard_count: int
    retention_period_hours: int


@dataclass(frozen=True)
class PutRecordResult:
    """The outcome of one record of a `V3ioDriver.put_records` call."""

    shard_id: int | None
    sequence_number: int | None
    error_code: int | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True)
class StreamRecord:
    """A record read back by `V3ioDriver.get_records`."""

    shard_id: int
    sequence_number: int
    data: bytes
    arrival_time_ns: int
    partition_key: str | None = None
    client_info: bytes | None = None


class _SdkLogger:
    """The logger interface the SDK wants, forwarded to ``logging``.

    (The SDK's default logger adds a stdout handler to the global ``v3io_py`` logger.)
    """

    def __getattr__(self, name: str) -> Callable[..., None]:
        level = {
            "debug": logging.DEBUG,
            "info": logging.DEBUG,
            "warn": logging.WARNING,
            "error": logging.ERROR,
        }
        lvl = level[name.split("_")[0]]

        def log(message: str, *args: Any, **kwargs: Any) -> None:
            if logger.isEnabledFor(lvl):
                logger.log(lvl, "v3io sdk: %s %s", message % args if args else message, kwargs or "")

        return log


class V3ioDriver(Driver):
    """Stores Tables as V3IO KV items through the ``v3io`` SDK (``storey[v3io]``); see the module docstring.

    Parameters
    ----------
    webapi
        The V3IO web-API URL (``V3IO_API`` when ``None``); ``http://`` is added when there is no scheme.
    access_key
        The access key (``V3IO_ACCESS_KEY`` when ``None``).
    retry_backoff_secs, max_retries
        Retries of transient failures (STEPS.md §9.2).
    timeout_secs
        The most one request may take before it counts as a (transient) timeout; ``None`` for no limit.

    Raises
    ------
    ValueError
        If the URL or the access key is given neither here nor in the environment.

    Examples
    --------
    >>> import asyncio
    >>> from storey.testing.v3io_emulator import V3ioEmulator
    >>> async def demo():
    ...     async with V3ioEmulator() as emu:
    ...         driver = V3ioDriver(emu.url, access_key="k")
    ...         await driver.save_key("/bigdata/users", "u1", {"n": 1, "x": None, "f": -0.0})
    ...         record = await driver.load_key("/bigdata/users", "u1")
    ...         await driver.close()
    ...         return record
    >>> asyncio.run(demo())
    {'n': 1, 'x': None, 'f': -0.0}
    """

    error_class: ClassVar[type[V3ioError]] = V3ioError

    def __init__(
        self,
        webapi: str | None = None,
        access_key: str | None = None,
        retry_backoff_secs: float = 0.1,
        max_retries: int = 5,
        *,
        timeout_secs: float | None = 60.0,
    ) -> None:
        webapi = webapi or os.environ.get("V3IO_API")
        access_key = access_key or os.environ.get("V3IO_ACCESS_KEY")
        if not webapi:
            msg = "V3ioDriver needs a web-API URL: pass webapi= or set the V3IO_API environment variable"
            raise ValueError(msg)
        if not access_key:
            msg = (
                "V3ioDriver needs an access key: pass access_key= or set the V3IO_ACCESS_KEY "
                "environment variable"
            )
            raise ValueError(msg)
        if "://" not in webapi:
            webapi = "http://" + webapi
        if timeout_secs is not None and not timeout_secs > 0:
            msg = f"timeout_secs must be > 0 or None, got {timeout_secs!r}"
            raise ValueError(msg)
        self.webapi = webapi.rstrip("/")
        self._access_key = access_key
        self.retry = RetryPolicy(retry_backoff_secs=retry_backoff_secs, max_retries=max_retries)
        self.timeout_secs = timeout_secs
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._verifiers: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"V3ioDriver(webapi={self.webapi!r})"

    # ------------------------------------------------------------------------------------- plumbing
    async def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            if self._client is not None:
                _discard(self._client)
            from storey._utils._imports import require

            dataplane = require("v3io.aio.dataplane")
            # retry_intervals=(0,): the SDK must not retry on its own; our RetryPolicy does.
            self._client = dataplane.Client(
                logger=_SdkLogger(), endpoint=self.webapi, access_key=self._access_key, retry_intervals=(0,)
            )
            self._client_loop = loop
        return self._client

    async def close(self) -> None:
        """Close the HTTP connections. Idempotent; the driver reconnects on its next call.

        Call it on the event loop that used the driver (a `Table` does, at the end of each run): a client
        left behind on a finished loop can only be abandoned.
        """
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is None:
            return
        if loop is asyncio.get_running_loop():
            await client.close()
        else:
            _discard(client)

    async def _call(
        self,
        what: str,
        op: Callable[[Any], Awaitable[Any]],
        accept: Callable[[Any], bool] = lambda r: r.status_code == 200,
    ) -> Any:
        """Send one request through the SDK, retrying transient failures; ``accept`` picks good answers."""

        async def attempt() -> Any:
            client = await self._get_client()
            if self.timeout_secs is None:
                response = await op(client)
            else:
                response = await asyncio.wait_for(op(client), self.timeout_secs)
            if accept(response):
                return response
            raise _http_error(response)

        return await self.retry.call(attempt, is_transient=_is_transient, error_class=V3ioError, what=what)

    def _remember(self, where: tuple[str, str], response: Any) -> None:
        verifier = response.headers.get(_VERIFIER_HEADER)
        if verifier is None:
            self._verifiers.pop(where, None)
            return
        self._verifiers[where] = verifier
        self._verifiers.move_to_end(where)
        if len(self._verifiers) > _MAX_CACHED_VERIFIERS:
            self._verifiers.popitem(last=False)

    # ------------------------------------------------------------------------------------- schemas
    async def load_schema(self, table_path: str) -> dict[str, Any] | None:
        container, path = _split(table_path)
        where = self._where(table_path)
        response = await self._call(
            f"{where}: load_schema",
            lambda c: c.object.get(container, _join(path, ".schema"), raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 404),
        )
        if response.status_code == 404:
            return None
        return decode_schema(response.body, error_class=V3ioError, where=where)

    async def save_schema(self, table_path: str, schema: Mapping[str, Any]) -> None:
        container, path = _split(table_path)
        where = self._where(table_path)
        body = encode_schema(schema, error_class=V3ioError, where=where).encode()
        await self._call(
            f"{where}: save_schema",
            lambda c: c.object.put(container, _join(path, ".schema"), body=body, raise_for_status="never"),
        )

    # ------------------------------------------------------------------------------------- records
    async def load_key(
        self, table_path: str, key: str, attributes: Attributes = "*"
    ) -> dict[str, Any] | None:
        """Read a record (an item); ``None`` if it does not exist.

        Also the item read of `JoinWithV3IOTable`: items written by other tools decode to their plain
        values (arrays to lists).
        """
        container, path = _split(table_path)
        _check_key(key, self._where(table_path, key))
        names = (
            ["*"] if attributes == "*" else [attributes] if isinstance(attributes, str) else list(attributes)
        )
        if not names:
            return {}
        where = self._where(table_path, key)
        response = await self._call(
            f"{where}: load_key",
            lambda c: c.kv.get(container, path, key, attribute_names=names, raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 404),
        )
        if response.status_code == 404:
            self._verifiers.pop((container, _join(path, key)), None)
            return None
        self._remember((container, _join(path, key)), response)
        item = _decode_item(_json_body(response, where).get("Item", {}), where)
        if attributes == "*" and not item:
            return None
        return item

    async def save_key(self, table_path: str, key: str, attributes: Mapping[str, Any]) -> None:
        if not attributes:
            return
        container, path = _split(table_path)
        where = self._where(table_path, key)
        _check_key(key, where)
        expression = update_expression(attributes, where=where)
        item = (container, _join(path, key))
        condition = self._verifiers.get(item)

        def update(cond: str | None) -> Callable[[Any], Awaitable[Any]]:
            return lambda c: c.kv.update(
                container, path, key, expression=expression, condition=cond, raise_for_status="never"
            )

        response = await self._call(
            f"{where}: save_key",
            update(condition),
            accept=lambda r: r.status_code == 200 or (condition is not None and _is_false_condition(r)),
        )
        if response.status_code != 200:
            await self.load_key(table_path, key, "*")
            logger.warning(
                "%s: the item was changed by another writer since this driver last read or wrote it; "
                "re-read it and overwrote the attributes being saved (last writer wins)",
                where,
            )
            response = await self._call(f"{where}: save_key (unconditioned)", update(None))
        self._remember(item, response)

    async def save_keys(self, table_path: str, records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Save several records, up to 8 requests in flight (V3IO has no multi-item write)."""
        semaphore = asyncio.Semaphore(_SAVE_CONCURRENCY)

        async def one(key: str, attributes: Mapping[str, Any]) -> None:
            async with semaphore:
                await self.save_key(table_path, key, attributes)

        await asyncio.gather(*(one(key, attributes) for key, attributes in records))

    async def delete_key(self, table_path: str, key: str) -> None:
        """Delete an item (absent items are fine)."""
        container, path = _split(table_path)
        where = self._where(table_path, key)
        _check_key(key, where)
        await self._call(
            f"{where}: delete_key",
            lambda c: c.object.delete(container, _join(path, key), raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 204, 404),
        )
        self._verifiers.pop((container, _join(path, key)), None)

    async def scan(
        self, table_path: str, attributes: Attributes = "*", filter_expression: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every item of the table as ``(key, attributes)``, optionally filtered by a V3IO expression."""
        container, path = _split(table_path)
        where = self._where(table_path)
        names = [*_stored_names(attributes, where), "__name"]
        out: list[tuple[str, dict[str, Any]]] = []
        marker: str | None = None
        while True:
            response = await self._call(
                f"{where}: scan",
                lambda c, m=marker: c.kv.scan(
                    container,
                    path,
                    attribute_names=names,
                    filter_expression=filter_expression,
                    marker=m,
                    raise_for_status="never",
                ),
                accept=lambda r: r.status_code in (200, 404),
            )
            if response.status_code == 404:
                return out
            body = _json_body(response, where)
            for typed in body.get("Items", []):
                item = _decode_item(typed, where)
                out.append((str(item.pop("__name", "")), item))
            if body.get("LastItemIncluded") == "TRUE" or not body.get("Items"):
                return out
            marker = body.get("NextMarker")

    # ------------------------------------------------------------------------------------- streams
    def _stream_where(self, stream_path: str) -> str:
        return f"{type(self).__name__}: stream {stream_path!r}"

    async def create_stream(self, stream_path: str, shard_count: int, retention_hours: int = 24) -> bool:
        """Create a stream; ``False`` if it already exists (HTTP 409), ``True`` if created."""
        container, path = _split(stream_path)
        response = await self._call(
            f"{self._stream_where(stream_path)}: create_stream",
            lambda c: c.stream.create(
                container,
                path,
                shard_count=shard_count,
                retention_period_hours=retention_hours,
                raise_for_status="never",
            ),
            accept=lambda r: r.status_code in (200, 204, 409),
        )
        return response.status_code != 409

    async def describe_stream(self, stream_path: str) -> StreamInfo | None:
        """The stream's shard count and retention, or ``None`` if it does not exist."""
        container, path = _split(stream_path)
        response = await self._call(
            f"{self._stream_where(stream_path)}: describe_stream",
            lambda c: c.stream.describe(container, path, raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 404),
        )
        if response.status_code == 404:
            return None
        out = response.output
        return StreamInfo(int(out.shard_count), int(out.retention_period_hours))

    async def delete_stream(self, stream_path: str) -> None:
        """Delete a stream with its shards and any other files in its directory (absent is fine)."""
        container, path = _split(stream_path)
        what = f"{self._stream_where(stream_path)}: delete_stream"
        listing = await self._call(
            what,
            lambda c: c.container.list(container, path + "/", raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 404),
        )
        if listing.status_code == 404:
            return
        for content in listing.output.contents:
            await self._call(
                what,
                lambda c, k=content.key: c.object.delete(container, k, raise_for_status="never"),
                accept=lambda r: r.status_code in (200, 204, 404),
            )
        await self._call(
            what,
            lambda c: c.object.delete(container, path + "/", raise_for_status="never"),
            accept=lambda r: r.status_code in (200, 204, 404),
        )

    async def put_records(
        self, stream_path: str, records: Sequence[Mapping[str, Any]]
    ) -> list[PutRecordResult]:
        """Add records to a stream; one result per record, in order (failed ones have an ``error_code``).

        Each record is a mapping with ``data`` (bytes or str) and optionally ``shard_id``,
        ``partition_key`` and ``client_info``. A partial failure is not an exception: the caller decides
        what to re-send.
        """
        container, path = _split(stream_path)
        if not records:
            return []
        payload = [dict(r) for r in records]
        response = await self._call(
            f"{self._stream_where(stream_path)}: put_records",
            lambda c: c.stream.put_records(container, path, payload, raise_for_status="never"),
        )
        results = [
            PutRecordResult(r.shard_id, r.sequence_number, r.error_code, r.error_message)
            for r in response.output.records
        ]
        if len(results) != len(records):
            msg = (
                f"{self._stream_where(stream_path)}: put_records: the answer has {len(results)} results "
                f"for {len(records)} records"
            )
            raise V3ioError(msg)
        return results

    async def seek_shard(
        self,
        stream_path: str,
        shard_id: int,
        seek: str = "EARLIEST",
        *,
        sequence_number: int | None = None,
        timestamp: _dt.datetime | None = None,
    ) -> str:
        """A location in a shard (``EARLIEST``, ``LATEST``, ``SEQUENCE`` or ``TIME``) for `get_records`."""
        container, path = _split(stream_path)
        secs = nsecs = None
        if timestamp is not None:
            delta = timestamp.astimezone(_dt.UTC) - _EPOCH
            secs = delta // _dt.timedelta(seconds=1)
            nsecs = (delta - _dt.timedelta(seconds=secs)) // _dt.timedelta(microseconds=1) * 1000
        response = await self._call(
            f"{self._stream_where(stream_path)}: seek_shard",
            lambda c: c.stream.seek(
                container,
                path,
                shard_id,
                seek,
                starting_sequence_number=sequence_number,
                timestamp_sec=secs,
                timestamp_nsec=nsecs,
                raise_for_status="never",
            ),
        )
        return str(response.output.location)

    async def get_records(
        self, stream_path: str, shard_id: int, location: str, limit: int | None = None
    ) -> tuple[list[StreamRecord], str]:
        """Records from ``location`` on, and the location after them."""
        container, path = _split(stream_path)
        response = await self._call(
            f"{self._stream_where(stream_path)}: get_records",
            lambda c: c.stream.get_records(
                container, path, shard_id, location, limit=limit, raise_for_status="never"
            ),
        )
        out = response.output
        records = [
            StreamRecord(
                shard_id,
                int(r.sequence_number),
                bytes(r.data or b""),
                int(r.arrival_time_sec or 0) * 1_000_000_000 + int(r.arrival_time_nsec or 0),
                r.partition_key,
                r.client_info,
            )
            for r in out.records
        ]
        return records, str(out.next_location)


# ------------------------------------------------------------------------------------------- helpers
def _split(table_path: str) -> tuple[str, str]:
    """``(container, path)`` of ``/container/path`` (or ``v3io:///container/path``)."""
    if not isinstance(table_path, str):
        msg = f"V3ioDriver: a table path must be a str '/<container>/<path>', got {type(table_path).__name__}"
        raise V3ioError(msg)
    text = table_path[len("v3io://") :] if table_path.startswith("v3io://") else table_path
    parts = [p for p in text.split("/") if p]
    if len(parts) < 2:
        msg = f"V3ioDriver: expected a table path '/<container>/<path>', got {table_path!r}"
        raise V3ioError(msg)
    return parts[0], "/".join(parts[1:])


def _stored_names(attributes: Attributes, where: str) -> list[str]:
    if attributes == "*":
        return ["*"]
    names = [attributes] if isinstance(attributes, str) else list(attributes)
    return [stored_name(n, where) for n in names]


def _join(path: str, name: str) -> str:
    return f"{path}/{name}"


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/"):
        msg = f"{where}: an item key must be a non-empty str that neither starts nor ends with '/'"
        raise V3ioError(msg)


def _discard(client: Any) -> None:
    """Release a client made on another (usually finished) event loop, which cannot be awaited from here.

    Closing its aiohttp connector synchronously closes the sockets and keeps aiohttp from warning about an
    unclosed session.
    """
    connector = getattr(getattr(client, "_transport", None), "_connector", None)
    with contextlib.suppress(Exception):
        connector._close()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status >= 500
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - the SDK depends on aiohttp
        return False
    return isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)


def _http_error(response: Any) -> Exception:
    from v3io.dataplane.response import HttpResponseError

    body = response.body.decode(errors="replace") if isinstance(response.body, bytes) else response.body
    return HttpResponseError(
        f"request failed with status {response.status_code}: {body}", response.status_code
    )


def _is_false_condition(response: Any) -> bool:
    return response.status_code == 400 and str(FALSE_CONDITION_ERROR_CODE).encode() in bytes(
        response.body or b""
    )


def _json_body(response: Any, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(response.body or b"{}")
    except ValueError as exc:
        msg = f"{where}: V3IO answered a body that is not JSON: {response.body[:200]!r}"
        raise V3ioError(msg) from exc
    if not isinstance(doc, dict):
        msg = f"{where}: V3IO answered a JSON body that is not an object"
        raise V3ioError(msg)
    return doc


# ------------------------------------------------------------------------------------------ encoding
def stored_name(name: Any, where: str) -> str:
    """The V3IO attribute name under which attribute ``name`` is stored.

    Identifiers are stored as they are. Any other name (and one starting with ``__``, which V3IO reserves
    for system attributes, or with the escape prefix itself) is stored as ``_storey_x_<utf-8 hex>``; the
    ``_storey_`` prefix is reserved, so this never collides with a user attribute.

    Examples
    --------
    >>> stored_name("amount", "t"), stored_name("a b", "t"), attribute_name("_storey_x_612062")
    ('amount', '_storey_x_612062', 'a b')
    """
    if not isinstance(name, str) or not name:
        msg = f"{where}: attribute names must be non-empty str, got {name!r}"
        raise V3ioError(msg)
    if _NAME.match(name) and not name.startswith(("__", _ESCAPED_NAME)):
        return name
    return _ESCAPED_NAME + name.encode("utf-8", "surrogatepass").hex()


def attribute_name(stored: str) -> str:
    """The attribute name of a stored V3IO attribute name (the inverse of `stored_name`)."""
    if stored.startswith(_ESCAPED_NAME):
        try:
            return bytes.fromhex(stored[len(_ESCAPED_NAME) :]).decode("utf-8", "surrogatepass")
        except ValueError:
            return stored
    return stored


def _expression_name(stored: str) -> str:
    """A stored name as it appears in an expression (reserved words in backticks)."""
    return f"`{stored}`" if stored.lower() in _RESERVED else stored


def _typed_blob(tagged: bytes) -> str:
    return f"blob('{base64.b64encode(TYPED_BLOB_MARKER + tagged).decode('ascii')}')"


def _float_literal(x: float) -> str:
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text if "." in text else text + ".0"


def _str_literal(s: str) -> str | None:
    if len(s) > _MAX_STRING or _UNSAFE_STR.search(s):
        return None
    if "'" not in s:
        return f"'{s}'"
    if '"' not in s:
        return f'"{s}"'
    return None


def _ts_literal(tagged: bytes) -> str | None:
    # tagged is b"t:YYYY-MM-DDTHH:MM:SS.fffffffff+00:00" (UTC, from storey.drivers._encoding)
    text = tagged[2:].decode()
    base = _dt.datetime.fromisoformat(text[:19] + "+00:00")
    secs = (base - _EPOCH) // _dt.timedelta(seconds=1)
    if secs < 0:
        return None
    return f"{secs}:{int(text[20:29])}"


def value_literal(value: Any, *, name: str, where: str) -> str:
    """The update-expression literal that stores ``value`` exactly (see the module docstring).

    Examples
    --------
    >>> value_literal(2.5, name="a", where="t"), value_literal(1e20, name="a", where="t")
    ('2.5', '100000000000000000000.0')
    >>> value_literal(None, name="a", where="t")
    "blob('AHN0b3JleTpuOg==')"
    """
    tagged = encode_value(value, name=name, error_class=V3ioError, where=where)
    tag, payload = tagged[:2], tagged[2:]
    if tag == b"b:":
        return "true" if payload == b"1" else "false"
    if tag == b"i:":
        return "(-9223372036854775807-1)" if int(payload) == _INT64_MIN else payload.decode()
    if tag == b"f:":
        x = float(payload)
        if math.isfinite(x) and not (x == 0.0 and math.copysign(1.0, x) < 0):
            return _float_literal(x)
    elif tag == b"s:":
        literal = _str_literal(payload.decode())
        if literal is not None:
            return literal
    elif tag == b"y:":
        if not payload.startswith(TYPED_BLOB_MARKER) and not payload.startswith(_ARRAY_HEADER):
            return f"blob('{base64.b64encode(payload).decode('ascii')}')"
    elif tag == b"t:":
        literal = _ts_literal(tagged)
        if literal is not None:
            return literal
    return _typed_blob(tagged)


def update_expression(attributes: Mapping[str, Any], *, where: str) -> str:
    """The ``SET`` update expression that writes exactly ``attributes`` (every value checked first)."""
    return "; ".join(
        f"SET {_expression_name(stored_name(name, where))}={value_literal(value, name=name, where=where)}"
        for name, value in attributes.items()
    )


def _decode_item(typed: Any, where: str) -> dict[str, Any]:
    if not isinstance(typed, dict):
        msg = f"{where}: malformed item in the answer: {typed!r}"
        raise V3ioError(msg)
    out: dict[str, Any] = {}
    for name, typed_value in typed.items():
        if not isinstance(typed_value, dict) or len(typed_value) != 1:
            msg = f"{where}: malformed attribute {name!r} in the answer: {typed_value!r}"
            raise V3ioError(msg)
        ((kind, raw),) = typed_value.items()
        name = attribute_name(name)
        try:
            out[name] = _decode_attribute(kind, raw, name, where)
        except (ValueError, TypeError) as exc:
            msg = f"{where}: attribute {name!r} holds an invalid {kind!r} value: {raw!r}"
            raise V3ioError(msg) from exc
    return out


def _decode_attribute(kind: str, raw: Any, name: str, where: str) -> Any:
    if kind == "N":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return raw
        try:
            return int(raw)
        except ValueError:
            return float(raw)
    if kind == "S":
        return raw if isinstance(raw, str) else str(raw)
    if kind == "BOOL":
        return bool(raw)
    if kind == "TS":
        secs, _, nsecs = str(raw).partition(":")
        return from_ns(int(secs) * 1_000_000_000 + int(nsecs or 0))
    if kind == "B":
        blob = base64.b64decode(raw)
        if blob.startswith(TYPED_BLOB_MARKER):
            return decode_value(blob[len(TYPED_BLOB_MARKER) :], name=name, error_class=V3ioError, where=where)
        if blob.startswith(_ARRAY_HEADER):
            from v3io.dataplane import kv_array

            try:
                return kv_array.decode(blob)
            except Exception:
                return blob
        return blob
    return raw
