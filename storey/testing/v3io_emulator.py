"""`V3ioEmulator`: an in-memory loopback server speaking the V3IO data-service protocol (spec STEPS.md §9.3).

The unmodified ``v3io`` SDK (``v3io.aio.dataplane`` and the synchronous ``v3io.dataplane`` clients) and the
``v3io-frames`` HTTP client work against it, so storey's V3IO code paths are tested without a cluster::

    async with V3ioEmulator() as emu:
        client = v3io.aio.dataplane.Client(endpoint=emu.url, access_key="any")

    emu = V3ioEmulator(); emu.start()   # from synchronous code: a background thread
    ...; emu.stop()

    python -m storey.testing.v3io_emulator --port 8081      # standalone

What it serves
--------------
Every request is HTTP to ``/<container>/<path>`` with the operation in the ``X-v3io-function`` header
(paths are read from the raw request line, because the aio client sends ``//container/...``; empty
segments are ignored, as ``GET /bigdata/agg//.schema`` needs). Containers exist on first use
(``bigdata``, ``users`` and ``projects`` are listed from the start).

- **KV** (`storey.testing._v3io_kv`): PutItem (replaces the item; with ``UpdateMode`` merges), UpdateItem
  with update expressions, ``ConditionExpression`` (false: HTTP 400, ``ErrorCode`` 16777244, nothing
  changed) and ``AlternateUpdateExpression``, GetItem (``*``, ``**`` and named attributes, system
  attributes such as ``__mtime_secs`` and ``__size``), GetItems with ``Limit``/``Marker`` paging,
  ``FilterExpression``, ``Segment``/``TotalSegment`` and sharding-key ranges. Typed attributes N, S, BOOL,
  B, TS; arrays are B blobs in the SDK's ``kv_array`` layout. Every write gives the item a strictly later
  mtime, sent back as ``X-v3io-transaction-verifier: __mtime_secs==<s> and __mtime_nsecs==<ns>``.
  The expression grammar is in `storey.testing._v3io_expr`.
- **Objects and directories** (`storey.testing._v3io_objects`): PUT (``Range: -1`` appends; a trailing
  ``/`` makes a directory), GET (with ``Range``), HEAD, DELETE (empty directories only), container listings
  (``ListBucketResult`` XML) and the container list.
- **Streams** (`storey.testing._v3io_streams`): CreateStream (204; 409 if the path exists), DescribeStream,
  UpdateStream (grow only), PutRecords (per-record failures with HTTP 200, e.g. a bad shard id),
  SeekShard (EARLIEST, LATEST, SEQUENCE, TIME) and GetRecords (``NextLocation``, lag fields).
- **framesd** (`storey.testing._v3io_frames`): ``/version``, ``/create``, ``/write`` and ``/delete`` of the
  ``v3io-frames`` HTTP client for TSDB tables (``V3ioEmulator.frames_url``); ``/read`` is not emulated.
- **Auth**: with ``access_key`` set, a request whose ``X-v3io-session-key`` (or ``Authorization``) differs
  gets HTTP 401.
- **Fault injection** (`V3ioEmulator.inject_fault`, `V3ioEmulator.inject_record_failures`): forced statuses,
  delays and dropped connections for the next N matching requests; per-record stream failures.

Faithful vs assumed
-------------------
*Confirmed on the wire or in the SDK source*: URLs, headers, methods and JSON field names of every
operation; typed-attribute encodings; the verifier header and its use as a condition; 400/16777244 for a
false condition; 404 with ``"No such file or directory"`` for missing paths; 204/409 for CreateStream;
per-record PutRecords failures with HTTP 200; the listing XML elements the SDK reads; the framesd routes,
framing and TSDB write rules (from ``v3io/frames``). *Documented by Iguazio*: the expression language,
``*``/``**``, conditions on missing attributes being false, empty conditions being true. *Checked against
upstream storey 1.14.1* (``tests/unit/testing/upstream_v3io``): its V3ioDriver and StreamTarget traffic
(``init_array``/``psum``/``pmax``/``pmin``/``blob`` slices, the ``if_else``/``if_not_exists`` form, empty
conditions, schema objects, streams) through the emulator gives the same results as its in-memory runs,
including after a restart from the persisted state.

*Assumed* (only a live cluster could confirm): the exact ``ErrorCode``/``ErrorMessage`` of other errors
(negative errno values: -17 exists, -22 invalid, -39 not empty, -201326594 bad shard) and of 401s; the
``NextMarker``/``Location`` formats (opaque here); GetItems order (name order here, hash order on a
cluster) and page size (1000, configurable); that GetItems skips names starting with ``.``; the hash
that places records by ``PartitionKey`` (crc32 here) and round-robin placement of records with neither
shard nor key; sequence numbers starting at 1; how doubles are rendered (here ``repr``, which always
round-trips); 206 for ranged GETs; 64-bit wrap-around and C-style integer ``/`` in expressions; that no
retention is ever applied to stream records.

Not emulated: ``Key`` in KV request bodies (the SDK never sends it), KV schema inference, stream
retention, consumer groups (their state objects are plain objects), TSDB reads and aggregates, sessions
other than the access key, and TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fnmatch
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from storey.testing import _v3io_kv as kv
from storey.testing import _v3io_objects as objects
from storey.testing import _v3io_streams as streams
from storey.testing._v3io_frames import FRAMES_ACTIONS, Sample, TsdbStore, handle_frames
from storey.testing._v3io_model import EACCES, EAGAIN, Namespace, OpError, Reply, Request, error_reply

__all__ = ["Fault", "RecordFailures", "RecordedRequest", "V3ioEmulator"]

logger = logging.getLogger("storey.testing.v3io_emulator")

_MAX_RECORDED = 10_000
_DROP = Reply(-1)


@dataclass
class RecordedRequest:
    """One request the emulator received (see `V3ioEmulator.requests`).

    ``path`` is ``/<container>/<path>`` (with a trailing ``/`` when the URL had one); ``function`` is the
    ``X-v3io-function`` header, or for plain requests ``GetObject``, ``PutObject``, ``HeadObject``,
    ``DeleteObject``, ``ListContainer``, ``ListContainers``, or ``Frames<Action>`` for framesd calls.
    ``status`` is the answer's status (``None`` while pending or when the connection was dropped).
    """

    method: str
    path: str
    function: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    status: int | None = None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Fault:
    """A fault armed by `V3ioEmulator.inject_fault`; ``hits`` counts the requests it hit so far."""

    status: int | None
    times: int | None
    function: str | None
    path: str | None
    method: str | None
    match: Callable[[RecordedRequest], bool] | None
    delay: float
    drop: bool
    error_code: int
    message: str
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, req: RecordedRequest) -> bool:
        if self.exhausted:
            return False
        if self.function is not None and req.function != self.function:
            return False
        if self.method is not None and req.method != self.method.upper():
            return False
        if self.path is not None and not fnmatch.fnmatchcase(req.path, self.path):
            return False
        return self.match is None or bool(self.match(req))


@dataclass
class RecordFailures:
    """Per-record PutRecords failures armed by `V3ioEmulator.inject_record_failures`."""

    stream: str
    times: int | None
    shard_id: int | None
    error_code: int
    message: str
    hits: int = 0

    def take(self, stream: str, shard_id: int) -> tuple[int, str] | None:
        if self.times is not None and self.hits >= self.times:
            return None
        if _norm(stream) != _norm(self.stream) or (self.shard_id is not None and shard_id != self.shard_id):
            return None
        self.hits += 1
        return self.error_code, self.message


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


class V3ioEmulator:
    """A loopback V3IO data-service (and framesd) server for tests; see the module docstring.

    Parameters
    ----------
    host
        Interface to listen on.
    port
        Port to listen on; 0 picks a free one (kept across `stop`/`start`, so `url` stays valid).
    access_key
        If set, requests must carry this key (``X-v3io-session-key``) or get HTTP 401.
    page_size
        The most items one GetItems response holds (a smaller ``Limit`` wins).

    Examples
    --------
    >>> import asyncio
    >>> import v3io.aio.dataplane
    >>> async def demo():
    ...     async with V3ioEmulator() as emu:
    ...         client = v3io.aio.dataplane.Client(endpoint=emu.url, access_key="k", logger_verbosity="ERROR")
    ...         await client.kv.put("bigdata", "tbl", "k1", {"n": 1, "s": "x"})
    ...         await client.kv.update("bigdata", "tbl", "k1", expression="n = n + 41")
    ...         item = (await client.kv.get("bigdata", "tbl", "k1")).output.item
    ...         await client.close()
    ...         return item
    >>> asyncio.run(demo())
    {'n': 42, 's': 'x'}
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, access_key: str | None = None, *, page_size: int = 1000
    ) -> None:
        if page_size < 1:
            msg = f"page_size must be >= 1, got {page_size!r}"
            raise ValueError(msg)
        self.host = host
        self.port = port
        self.access_key = access_key
        self.page_size = page_size
        self.namespace = Namespace()
        self.tsdb = TsdbStore()
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=_MAX_RECORDED)
        self._faults: list[Fault] = []
        self._record_faults: list[RecordFailures] = []
        self._lock = threading.Lock()
        self._runner: Any = None
        self._stopping = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handlers: dict[str, Callable[[Request], Reply]] = {
            "PutItem": kv.put_item,
            "UpdateItem": kv.update_item,
            "GetItem": kv.get_item,
            "GetItems": lambda req: kv.get_items(req, self.page_size),
            "CreateStream": streams.create_stream,
            "DescribeStream": streams.describe_stream,
            "UpdateStream": streams.update_stream,
            "PutRecords": lambda req: streams.put_records(req, self._record_fault),
            "SeekShard": streams.seek_shard,
            "GetRecords": streams.get_records,
            "GetObject": objects.get_object,
            "PutObject": objects.put_object,
            "HeadObject": objects.head_object,
            "DeleteObject": objects.delete_object,
            "ListContainer": objects.list_container,
        }

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The endpoint to pass as ``webapi`` (``http://host:port``)."""
        if self._runner is None:
            msg = "the V3IO emulator is not running: use `async with` or start()"
            raise RuntimeError(msg)
        return f"http://{self.host}:{self.port}"

    @property
    def frames_url(self) -> str:
        """The framesd address for ``v3io_frames.Client(address=...)`` (the same server)."""
        return self.url

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start_async(self) -> None:
        """Start serving on the current event loop."""
        from storey._utils._imports import require

        web = require("aiohttp.web")
        if self._runner is not None:
            msg = "the V3IO emulator is already running"
            raise RuntimeError(msg)
        server = web.Server(self._handle)
        # A short shutdown: requests held by an injected delay must not hold up stop().
        runner = web.ServerRunner(server, access_log=None, auto_decompress=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._stopping = asyncio.Event()
        logger.debug("V3IO emulator listening on %s", self.url)

    async def stop_async(self) -> None:
        """Stop serving (open connections are closed). Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopping.set()
            await runner.cleanup()

    async def __aenter__(self) -> V3ioEmulator:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    def start(self) -> V3ioEmulator:
        """Start serving on a background thread (for synchronous code); returns ``self``."""
        if self._thread is not None:
            msg = "the V3IO emulator is already running"
            raise RuntimeError(msg)
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        thread = threading.Thread(target=main, name=f"v3io-emulator-{self.port}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop
        return self

    def stop(self) -> None:
        """Stop the background server started by `start`. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = None

    def __enter__(self) -> V3ioEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- fault injection
    def inject_fault(
        self,
        status: int | None = None,
        *,
        times: int | None = 1,
        function: str | None = None,
        path: str | None = None,
        method: str | None = None,
        match: Callable[[RecordedRequest], bool] | None = None,
        delay: float = 0.0,
        drop: bool = False,
        error_code: int = EAGAIN,
        message: str = "injected fault",
    ) -> Fault:
        """Make the next ``times`` matching requests fail (``times=None``: every one, until cleared).

        Parameters
        ----------
        status
            Answer with this HTTP status and ``{"ErrorCode": error_code, "ErrorMessage": message}``.
        times
            How many requests the fault hits.
        function, path, method, match
            Which requests: an ``X-v3io-function`` (or pseudo-function, see `RecordedRequest`) name, a
            glob on ``/<container>/<path>``, an HTTP method, or a predicate on the `RecordedRequest`.
        delay
            Seconds to wait before answering (alone: a slow but correct answer; use it for timeouts).
        drop
            Close the connection without answering. Note that aiohttp clients transparently retry an
            idempotent request (GET/PUT/HEAD/DELETE, which includes GetItem and PutItem) once when a
            *reused* connection is dropped, so use ``times >= 2`` to make a drop visible to them.

        Returns
        -------
        Fault
            Its ``hits`` counts the requests it affected.
        """
        if status is None and not drop and delay <= 0:
            msg = "inject_fault needs a status, drop=True or a delay"
            raise ValueError(msg)
        if times is not None and times < 1:
            msg = f"times must be >= 1 or None, got {times!r}"
            raise ValueError(msg)
        fault = Fault(status, times, function, path, method, match, delay, drop, error_code, message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def inject_record_failures(
        self,
        stream: str,
        *,
        times: int | None = 1,
        shard_id: int | None = None,
        error_code: int = EAGAIN,
        message: str = "Resource temporarily unavailable (injected)",
    ) -> RecordFailures:
        """Fail the next ``times`` records put to ``stream`` (``/<container>/<path>``) with a per-record
        error (the PutRecords request still answers 200), optionally only those of one shard."""
        failures = RecordFailures(stream, times, shard_id, error_code, message)
        with self._lock:
            self._record_faults.append(failures)
        return failures

    def clear_faults(self) -> None:
        """Disarm every fault and record failure."""
        with self._lock:
            self._faults.clear()
            self._record_faults.clear()

    def _take_fault(self, req: RecordedRequest) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(req):
                    fault.hits += 1
                    return fault
        return None

    def _record_fault(self, stream: str, shard_id: int) -> tuple[int, str] | None:
        with self._lock:
            for failures in self._record_faults:
                taken = failures.take(stream, shard_id)
                if taken is not None:
                    return taken
        return None

    # ---------------------------------------------------------------------------------- inspection
    def _split(self, path: str) -> tuple[str, str]:
        parts = [p for p in path.split("/") if p]
        if not parts:
            msg = f"expected '/<container>/<path>', got {path!r}"
            raise ValueError(msg)
        return parts[0], "/".join(parts[1:])

    def item(self, path: str) -> dict[str, Any] | None:
        """The user attributes of the item at ``/<container>/<path>`` (stored values), or ``None``."""
        container, rest = self._split(path)
        node = self.namespace.container(container).get(rest)
        return None if node is None or node.is_dir else dict(node.attrs)

    def object_data(self, path: str) -> bytes | None:
        """The content of the object at ``/<container>/<path>``, or ``None``."""
        container, rest = self._split(path)
        node = self.namespace.container(container).get(rest)
        return None if node is None or node.is_dir else bytes(node.data)

    def stream_records(self, path: str, shard_id: int) -> list[bytes]:
        """The data of every record in one shard of the stream at ``/<container>/<path>``."""
        container, rest = self._split(path)
        stream = self.namespace.container(container).streams.get(rest)
        if stream is None:
            msg = f"no stream at {path!r}"
            raise KeyError(msg)
        return [r.data for r in stream.shards[shard_id].records]

    def tsdb_samples(self, path: str) -> list[Sample]:
        """Every sample written to the TSDB table at ``/<container>/<path>``, in write order."""
        table = self.tsdb.tables.get(self._split(path))
        if table is None:
            msg = f"no TSDB table at {path!r}"
            raise KeyError(msg)
        return list(table.samples)

    def reset(self) -> None:
        """Forget all data, recorded requests and faults."""
        self.namespace = Namespace()
        self.tsdb = TsdbStore()
        self.requests.clear()
        self.clear_faults()

    # ------------------------------------------------------------------------------------- serving
    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        raw_path, _, raw_query = request.raw_path.partition("?")
        path = unquote(raw_path)
        segments = [s for s in path.split("/") if s]
        trailing = path.endswith("/") and bool(segments)
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        body = await request.read()
        function = request.headers.get("X-v3io-function") or _pseudo_function(request.method, segments, query)
        rec = RecordedRequest(
            request.method,
            "/" + "/".join(segments) + ("/" if trailing else ""),
            function,
            dict(request.headers),
            body,
            query,
        )
        self.requests.append(rec)
        reply = await self._apply_faults(rec)
        if reply is _DROP:
            # Close the connection without a status line; aiohttp ignores the response written after.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if reply is None:
            reply = self._serve(rec, segments, trailing)
        rec.status = reply.status
        return web.Response(status=reply.status, body=reply.body or None, headers=reply.headers)

    async def _apply_faults(self, rec: RecordedRequest) -> Reply | None:
        fault = self._take_fault(rec)
        if fault is None:
            return None
        if fault.delay > 0:
            with contextlib.suppress(TimeoutError):  # cut short by stop()
                await asyncio.wait_for(self._stopping.wait(), fault.delay)
        if fault.drop:
            return _DROP
        if fault.status is not None:
            return error_reply(fault.status, fault.error_code, fault.message)
        return None

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self.access_key is None:
            return True
        if headers.get("X-v3io-session-key") == self.access_key:
            return True
        auth = headers.get("Authorization", "")
        return auth == self.access_key or auth.partition(" ")[2] == self.access_key

    def _serve(self, rec: RecordedRequest, segments: list[str], trailing: bool) -> Reply:
        try:
            if rec.function.startswith("Frames"):
                return handle_frames(segments[0], rec.body, self.namespace, self.tsdb, self.access_key)
            if not self._authorized(rec.headers):
                return error_reply(401, EACCES, "Unauthorized: invalid access key")
            if rec.function == "ListContainers":
                return objects.list_containers(self.namespace)
            handler = self._handlers.get(rec.function)
            if handler is None or not segments:
                return error_reply(400, -22, f"unsupported operation {rec.function!r} ({rec.method})")
            req = Request(
                rec.method,
                self.namespace.container(segments[0]),
                "/".join(segments[1:]),
                trailing,
                rec.query,
                rec.function,
                rec.headers,
                rec.body,
            )
            return handler(req)
        except OpError as exc:
            return exc.reply()
        except Exception as exc:
            logger.exception("V3IO emulator: internal error on %s %s", rec.method, rec.path)
            return error_reply(500, -1, f"internal emulator error: {exc!r}")


def _pseudo_function(method: str, segments: list[str], query: dict[str, str]) -> str:
    """The operation of a request without ``X-v3io-function`` (objects, listings, framesd)."""
    if method == "POST" and len(segments) == 1 and segments[0] in FRAMES_ACTIONS:
        return "Frames" + segments[0].capitalize()
    if method == "GET" and not segments:
        return "ListContainers"
    if method == "GET" and (len(segments) == 1 or "prefix" in query):
        return "ListContainer"
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
        method, f"Unknown{method.capitalize()}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the emulator standalone until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m storey.testing.v3io_emulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--access-key", default=None, help="require this access key (default: accept any)")
    parser.add_argument("--page-size", type=int, default=1000, help="most items per GetItems response")
    args = parser.parse_args(argv)

    async def serve() -> None:
        async with V3ioEmulator(args.host, args.port, args.access_key, page_size=args.page_size) as emu:
            print(f"V3IO emulator listening on {emu.url} (V3IO_API={emu.url})", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
