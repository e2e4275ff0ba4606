"""`WriteToV3IOStream` (alias `StreamTarget`): write events to a V3IO stream (spec STEPS.md §8.2)."""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from storey.errors import V3ioError
from storey.event import Event
from storey.flow.step import Flow
from storey.targets._columns import ColumnSelector

__all__ = ["StreamTarget", "WriteToV3IOStream"]

logger = logging.getLogger("storey.targets.streams")


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    msg = f"{type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


class WriteToV3IOStream(Flow):
    """Write each event as a record of a V3IO stream, batched per shard, and forward it unchanged.

    Parameters
    ----------
    storage
        A `V3ioDriver` (``None``: one built from ``V3IO_API``/``V3IO_ACCESS_KEY``). Its retry settings
        apply to failed records too.
    stream_path
        ``/<container>/<path>``.
    sharding_func
        ``sharding_func(event) -> int`` picks the shard; by default ``crc32(str(key)) % shards``, and
        round-robin for events whose key is ``None``.
    batch_size
        Records per ``put_records`` call; each shard has its own buffer, flushed when full and at termination.
    columns, infer_columns_from_data
        Column notation of STEPS.md §8.1. A dict row is sent as UTF-8 JSON, a ``str`` body as UTF-8 and a
        ``bytes`` body as is.
    shards, retention_in_hours
        If the stream does not exist, create it with this many shards (retention default 24 h); without
        `shards`, a missing stream fails the flow with `V3ioError`.

    Examples
    --------
    >>> import asyncio
    >>> from storey import build_flow, Source
    >>> from storey.drivers.v3io import V3ioDriver
    >>> from storey.testing.v3io_emulator import V3ioEmulator
    >>> emu = V3ioEmulator().start()
    >>> driver = V3ioDriver(emu.url, access_key="k")
    >>> c = build_flow([Source(), WriteToV3IOStream(driver, "/bigdata/clicks", shards=1)]).run()
    >>> _ = c.emit({"user": "u1", "n": 1}, key="u1")
    >>> c.terminate(wait=True)
    >>> emu.stream_records("/bigdata/clicks", 0)
    [b'{"user": "u1", "n": 1}']
    >>> emu.stop()
    """

    def __init__(
        self,
        storage: Any,
        stream_path: str,
        sharding_func: Callable[[Event], int] | None = None,
        batch_size: int = 8,
        columns: Sequence[str] | None = None,
        infer_columns_from_data: bool | None = None,
        shards: int | None = None,
        retention_in_hours: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            msg = f"step {self.name!r}: batch_size must be an int >= 1, got {batch_size!r}"
            raise ValueError(msg)
        for label, value in (("shards", shards), ("retention_in_hours", retention_in_hours)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                msg = f"step {self.name!r}: {label} must be an int >= 1 or None, got {value!r}"
                raise ValueError(msg)
        if storage is None:
            from storey.drivers.v3io import V3ioDriver

            storage = V3ioDriver()
        self._storage = storage
        self._stream_path = stream_path
        self._sharding_func = sharding_func
        self._batch_size = batch_size
        self._shards_to_create = shards
        self._retention = retention_in_hours or 24
        self._explicit_columns = bool(columns)
        self._selector = ColumnSelector(
            columns, infer_columns_from_data=infer_columns_from_data, step=self.name
        )
        self._shard_count: int | None = None
        self._buffers: dict[int, list[bytes]] = {}
        self._round_robin = itertools.count()

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._selector.reset()
        self._shard_count = None
        self._buffers = {}
        self._round_robin = itertools.count()
        run.add_closeable(self._storage)

    # ------------------------------------------------------------------------------------ per event
    def _do(self, event: Event) -> Awaitable[Any] | None:
        if self._shard_count is None:
            return self._open_then_handle(event)
        return self._handle(event)

    async def _open_then_handle(self, event: Event) -> None:
        await self._open()
        pending = self._handle(event)
        if pending is not None:
            await pending

    def _handle(self, event: Event) -> Awaitable[Any] | None:
        data = self._payload(event)
        shard = self._shard(event)
        buffer = self._buffers.setdefault(shard, [])
        buffer.append(data)
        if len(buffer) >= self._batch_size:
            return self._send_then_forward(shard, event)
        return self._forward(event)

    async def _send_then_forward(self, shard: int, event: Event) -> None:
        await self._send_buffer(shard)
        pending = self._forward(event)
        if pending is not None:
            await pending

    async def _flush(self) -> None:
        for shard in sorted(self._buffers):
            await self._send_buffer(shard)

    # ------------------------------------------------------------------------------------- helpers
    async def _open(self) -> None:
        """Learn the shard count, creating the stream when it is missing and `shards` is set."""
        info = await self._storage.describe_stream(self._stream_path)
        if info is None:
            if self._shards_to_create is None:
                msg = (
                    f"step {self.name!r}: stream {self._stream_path!r} does not exist "
                    "(set shards= to create it)"
                )
                raise V3ioError(msg)
            await self._storage.create_stream(self._stream_path, self._shards_to_create, self._retention)
            info = await self._storage.describe_stream(self._stream_path)  # a concurrent creator may differ
            if info is None:
                msg = f"step {self.name!r}: stream {self._stream_path!r} is missing right after its creation"
                raise V3ioError(msg)
        self._shard_count = info.shard_count

    def _payload(self, event: Event) -> bytes:
        body = event.body
        if not self._explicit_columns and isinstance(body, str):
            return body.encode()
        if not self._explicit_columns and isinstance(body, bytes | bytearray):
            return bytes(body)
        if not self._explicit_columns and not isinstance(body, dict) and not self._selector.resolved:
            msg = (
                f"step {self.name!r}: a stream record is a dict (sent as JSON), str or bytes, "
                f"got {type(body).__name__} in event {event.id!r}"
            )
            raise TypeError(msg)
        row = self._selector.as_dict(event)
        return json.dumps(row, default=_json_default).encode()

    def _shard(self, event: Event) -> int:
        count = self._shard_count
        assert count is not None
        if self._sharding_func is not None:
            shard = self._sharding_func(event)
            if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < count:
                msg = (
                    f"step {self.name!r}: sharding_func returned {shard!r} for event {event.id!r}; "
                    f"expected an int in [0, {count})"
                )
                raise ValueError(msg)
            return shard
        if event.key is None:
            return next(self._round_robin) % count
        return zlib.crc32(str(event.key).encode()) % count

    async def _send_buffer(self, shard: int) -> None:
        records = self._buffers.pop(shard, [])
        while records:
            batch, records = records[: self._batch_size], records[self._batch_size :]
            await self._put(shard, batch)

    async def _put(self, shard: int, batch: list[bytes]) -> None:
        """Send one batch; re-send only the failed records, under the driver's retry policy."""
        delays = self._storage.retry.delays()
        pending = batch
        attempt = 0
        while pending:
            attempt += 1
            results = await self._storage.put_records(
                self._stream_path, [{"shard_id": shard, "data": data} for data in pending]
            )
            failed = [(data, r) for data, r in zip(pending, results, strict=True) if not r.ok]
            if not failed:
                return
            first = failed[0][1]
            delay = next(delays, None)
            if delay is None:
                msg = (
                    f"step {self.name!r}: {len(failed)} record(s) to shard {shard} of stream "
                    f"{self._stream_path!r} still failing after {attempt} attempts: "
                    f"error code {first.error_code}: {first.error_message}"
                )
                raise V3ioError(msg)
            logger.warning(
                "step %r: %d record(s) to shard %d of stream %r failed (error code %s: %s); "
                "re-sending in %.3g s",
                self.name,
                len(failed),
                shard,
                self._stream_path,
                first.error_code,
                first.error_message,
                delay,
            )
            await asyncio.sleep(delay)
            pending = [data for data, _ in failed]


StreamTarget = WriteToV3IOStream
