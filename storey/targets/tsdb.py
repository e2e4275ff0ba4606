"""`WriteToTSDB` (alias `TSDBTarget`): write rows to a V3IO TSDB table through ``v3io-frames``
(spec STEPS.md §8.2).

How a batch becomes a TSDB write
--------------------------------
Rows are built with the column notation of §8.1 (`ColumnSelector`): the time column first, then the label
columns (`index_cols`), then the metric columns. A batch becomes one flat pandas DataFrame, sent with
``client.write("tsdb", table, frame, index_cols=[time, *labels])``, so the frame's index on the wire is the
time followed by the labels. Within a batch, rows are sorted by time (stable): framesd rejects a frame
without labels whose times go back, and a sample is keyed by its labels and time, so the order of a
batch's rows carries nothing else. The frame is built the way the ``v3io_frames`` client needs it under
pandas 3:

- times as ``datetime64[ns, UTC]`` built from int64 nanoseconds (with µs times the client would send µs
  that framesd reads as ns);
- labels as ``object`` columns of ``str`` (the client rejects pandas' ``str`` dtype); a ``None`` label is
  written empty (§3.5), any other value with ``str()``;
- metric columns as pandas infers them, ``str`` dtypes cast to ``object`` and a column of nulls only as
  ``float64``. A ``None`` metric is sent as a null (the client sends a zero with a null flag).

Threads, order and retries
--------------------------
The client is synchronous, so every call (client creation, ``create``, ``write``) runs in a worker thread
(`asyncio.to_thread`) and the event loop never blocks. Writes are chained: each batch is written after the
previous one finished, in input order. The client is built without its version check, so it makes no
request of its own. Each ``create`` and ``write`` is retried under the default `RetryPolicy` of §9.2
(0.1 s doubling, at most 5 s apart, 5 retries) when the failure is transient: a connection refused, reset
or lost, a timeout, or an HTTP 5xx from framesd (the HTTP client does not report statuses, so a response
hook on its ``requests`` session records them), or gRPC ``UNAVAILABLE``/``DEADLINE_EXCEEDED``. Any other
failure, and a transient one that outlasts the retries, raises `V3ioError` with the last error as
``__cause__``. A retried write re-sends the whole batch, so if a failed attempt had already stored part of
it on the server, those samples are sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from storey._time import to_ns
from storey._utils._imports import require
from storey.drivers._retry import RetryPolicy
from storey.errors import FlowError, MissingFieldError, V3ioError
from storey.event import Event
from storey.flow.step import Flow
from storey.steps.batching import pop_synonym
from storey.targets._columns import ColumnSelector, parse_columns

__all__ = ["FramesServerError", "TSDBTarget", "WriteToTSDB"]

logger = logging.getLogger("storey.targets.tsdb")

_FRAMES_SCHEMES = ("grpc", "http", "https")
_NS_TIME_ATTRIBUTES = frozenset({"time", "time_ns"})  # '$time' is given as int ns (time_as_ns=True)


class FramesServerError(Exception):
    """framesd answered with an HTTP 5xx (a transient failure, §9.2); ``__cause__`` is the client's error."""

    def __init__(self, status: int, error: BaseException) -> None:
        super().__init__(f"framesd answered HTTP {status}: {error}")
        self.status = status


class WriteToTSDB(Flow):
    """Write events as samples of a V3IO TSDB table through the ``v3io-frames`` client (``storey[tsdb]``).

    Parameters
    ----------
    path
        The table: ``/<container>/<table path>`` or ``v3io://<container>/<table path>``; with `container`
        set, the table path inside that container. With `frames_client` and no container anywhere, the
        client's own session container is used.
    time_col
        The sample time (§8.1 entry; default the event time). It is the first index column of the frame. A
        body field is converted like any storey time (datetime, ISO string, epoch milliseconds).
    columns, infer_columns_from_data
        The metric columns (§8.1 notation). Without `columns`, the keys of the first dict body that are not
        the time or a label become the metrics, in body key order.
    index_cols
        The metric labels (§8.1 entries), index columns after the time. Values are written as strings.
    v3io_frames
        The framesd URL (``http://``, ``https://`` or ``grpc://``; no scheme means gRPC); default the
        ``V3IO_FRAMES`` environment variable.
    access_key
        Default the ``V3IO_ACCESS_KEY`` environment variable.
    container
        The container of `path`, when `path` does not name it.
    rate, aggr, aggr_granularity
        With `rate` set (e.g. ``'1/s'``), the table is created before the first write of every run, with
        server-side aggregates `aggr` (e.g. ``'count,sum'``) and `aggr_granularity` (e.g. ``'1h'``); an
        existing table is kept as it is.
    frames_client
        A ``v3io_frames`` client to use instead of building one from `v3io_frames` and `access_key`.
    max_events, timeout_secs
        Rows per write, and wall-clock seconds after a batch's first row (synonym ``flush_after_seconds``).
        By default everything is written at termination. Rows not yet written when the flow fails are
        written while the flow closes.

    Raises
    ------
    ValueError
        No framesd URL (argument or ``V3IO_FRAMES``) and no `frames_client`; a URL with another scheme; a
        path without a container; `aggr`/`aggr_granularity` without `rate`; no metric column possible;
        `max_events` < 1 or `timeout_secs` <= 0.

    Notes
    -----
    The client is synchronous and every call runs in a worker thread. Batches are written in input order,
    each one sorted by time.
    Transient failures are retried (§9.2, default policy) and a write that still fails raises `V3ioError`,
    so the flow fails with `FlowError`. Each event is forwarded unchanged once its row is buffered; the
    event that completes a batch of `max_events` is forwarded once that batch is written.

    Examples
    --------
    >>> from storey import build_flow, Source
    >>> from storey.testing.v3io_emulator import V3ioEmulator
    >>> emu = V3ioEmulator().start()
    >>> target = WriteToTSDB("/bigdata/metrics", index_cols=["host"], rate="1/s",
    ...                      v3io_frames=emu.frames_url, access_key="k")
    >>> c = build_flow([Source(), target]).run()
    >>> _ = c.emit({"host": "a", "cpu": 0.5}, event_time="2024-01-01T00:00:00.25Z")
    >>> c.terminate(wait=True)
    >>> [(s.metric, dict(s.labels)["host"], s.time_ms, s.value) for s in emu.tsdb_samples("/bigdata/metrics")]
    [('cpu', 'a', 1704067200250, 0.5)]
    >>> emu.stop()
    """

    def __init__(
        self,
        path: str,
        time_col: str = "$time",
        columns: Sequence[str] | str | None = None,
        infer_columns_from_data: bool | None = None,
        index_cols: Sequence[str] | str | None = None,
        v3io_frames: str | None = None,
        access_key: str | None = None,
        container: str = "",
        rate: str = "",
        aggr: str = "",
        aggr_granularity: str = "",
        frames_client: Any = None,
        max_events: int | None = None,
        timeout_secs: float | None = None,
        **kwargs: Any,
    ) -> None:
        timeout_secs = pop_synonym(
            kwargs, "flush_after_seconds", "timeout_secs", timeout_secs, None, "WriteToTSDB"
        )
        super().__init__(**kwargs)
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1
        ):
            msg = f"step {self.name!r}: max_events must be an int >= 1 or None, got {max_events!r}"
            raise ValueError(msg)
        if timeout_secs is not None and not timeout_secs > 0:
            msg = f"step {self.name!r}: timeout_secs must be positive or None, got {timeout_secs!r}"
            raise ValueError(msg)
        if (aggr or aggr_granularity) and not rate:
            msg = (
                f"step {self.name!r}: aggr={aggr!r} and aggr_granularity={aggr_granularity!r} only apply "
                "when the table is created, which needs rate= (e.g. rate='1/s')"
            )
            raise ValueError(msg)
        if frames_client is None:
            url = v3io_frames or os.environ.get("V3IO_FRAMES")
            if not url:
                msg = (
                    f"step {self.name!r}: no framesd URL: pass v3io_frames= or frames_client=, "
                    "or set V3IO_FRAMES"
                )
                raise ValueError(msg)
            _check_url(url, self.name)
        else:
            url = v3io_frames
        self._url = url
        self._access_key = access_key or os.environ.get("V3IO_ACCESS_KEY")
        self._user_client = frames_client
        self._container, self._table = _split_table(path, container, frames_client is not None, self.name)
        self._rate = rate
        self._aggr = aggr
        self._aggr_granularity = aggr_granularity
        self._max_events = max_events
        self._timeout_secs = timeout_secs
        self._retry = RetryPolicy()

        labels = parse_columns(index_cols)
        self._selector = ColumnSelector(
            columns,
            index_cols=[time_col, *(c.entry for c in labels)],
            infer_columns_from_data=infer_columns_from_data,
            step=self.name,
            time_as_ns=True,
        )
        time = self._selector.index[0]
        self._time_is_ns = time.meta and time.field in _NS_TIME_ATTRIBUTES
        self._n_index = self._selector.n_index
        if not self._selector.infer and len(self._selector.columns or []) == self._n_index:
            msg = (
                f"step {self.name!r}: no metric columns: pass columns=, or leave infer_columns_from_data "
                "on to take them from the first dict body"
            )
            raise ValueError(msg)
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        self._rows: list[list[Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._generation = 0
        self._last: asyncio.Task[None] | None = None
        self._broken = False
        self._finished = False
        self._client: Any = self._user_client
        self._created = False
        self._checked_columns = False

    def _init_run(self, run: Any) -> None:
        super()._init_run(run)
        self._selector.reset()
        self._reset_run_state()
        run.add_closeable(_Closer(self))

    # ------------------------------------------------------------------------------------ per event
    def _do(self, event: Event) -> Awaitable[Any] | None:
        self._rows.append(self._row(event))
        if self._timeout_secs is not None and len(self._rows) == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout_secs, self._on_timer, self._generation)
        if self._max_events is not None and len(self._rows) >= self._max_events:
            task = self._submit(fail_run=False)
            if task is not None:
                return self._write_then_forward(task, event)
        return self._forward(event)

    def _row(self, event: Event) -> list[Any]:
        row = self._selector.row(event)
        if not self._checked_columns:
            self._check_columns(event)
        value = row[0]
        if not self._time_is_ns or type(value) is not int:
            row[0] = self._time_ns(value, event)
        return row

    def _check_columns(self, event: Event) -> None:
        names = self._selector.names
        if names is None:
            msg = (
                f"step {self.name!r}: the columns are not known: pass columns=, or send a dict body first "
                f"(got {type(event.body).__name__} in event {event.id!r})"
            )
            raise ValueError(msg)
        if len(names) == self._n_index:
            msg = (
                f"step {self.name!r}: no metric columns: the body of event {event.id!r} has only the time "
                f"and label columns {names}"
            )
            raise ValueError(msg)
        self._checked_columns = True

    def _time_ns(self, value: Any, event: Event) -> int:
        field = self._selector.index[0].entry
        try:
            return to_ns(value)
        except MissingFieldError:
            msg = f"step {self.name!r}: time column {field!r} is null in event {event.id!r}"
            raise MissingFieldError(msg) from None
        except (TypeError, ValueError) as exc:
            msg = f"step {self.name!r}: time column {field!r} in event {event.id!r}: {exc}"
            raise type(exc)(msg) from None

    async def _write_then_forward(self, task: asyncio.Task[None], event: Event) -> None:
        await task
        pending = self._forward(event)
        if pending is not None:
            await pending

    def _on_timer(self, generation: int) -> None:
        if generation == self._generation and not self._finished:
            self._submit(fail_run=True)

    # --------------------------------------------------------------------------------------- batches
    def _submit(self, *, fail_run: bool) -> asyncio.Task[None] | None:
        """Take the buffered rows and schedule their write after the previous one; return the newest
        write (``None`` if there never was one)."""
        rows, self._rows = self._rows, []
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not rows:
            return self._last
        task = asyncio.get_running_loop().create_task(self._write_after(self._last, rows))
        task.add_done_callback(self._timer_write_done if fail_run else _retrieve)
        self._last = task
        return task

    def _timer_write_done(self, task: asyncio.Task[None]) -> None:
        exc = _retrieve(task)
        if exc is not None and self._run is not None:
            self._run.fail(self._fail(exc, None))

    async def _write_after(self, previous: asyncio.Task[None] | None, rows: list[list[Any]]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if self._broken:
            logger.error(
                "step %r: %d row(s) not written to TSDB table %r: an earlier write failed",
                self.name,
                len(rows),
                self._table,
            )
            return
        try:
            await self._write(rows)
        except BaseException:
            self._broken = True
            raise

    async def _write_pending(self) -> None:
        """Write what is buffered and wait for every write (termination, or closing after a failure)."""
        if self._finished:
            return
        self._finished = True
        task = self._submit(fail_run=False)
        if task is None:
            return
        await asyncio.wait([task])
        exc = task.exception()
        if exc is None:
            return
        error = self._run.error if self._run is not None else None
        if error is not None and error.__cause__ is exc:
            raise error  # this write failure already failed the flow
        raise exc

    async def _flush(self) -> None:
        await self._write_pending()

    async def _close(self) -> None:
        try:
            await self._write_pending()
        except FlowError as err:
            if self._run is None or err is not self._run.error:
                raise  # (the flow's own error was reported already)
        finally:
            self._client = self._user_client  # drop a client built for this run

    # ----------------------------------------------------------------------------------- frames I/O
    async def _write(self, rows: list[list[Any]]) -> None:
        if self._client is None:
            self._client = await asyncio.to_thread(self._make_client)
        _watch_statuses(self._client)
        frame = await asyncio.to_thread(self._frame, rows)
        if self._rate and not self._created:
            await self._call(self._create, f"create of TSDB table {self._table!r}")
            self._created = True
        index = (self._selector.names or [])[: self._n_index]
        await self._call(
            lambda: self._client.write("tsdb", self._table, frame, index_cols=index),
            f"write of {len(rows)} row(s) to TSDB table {self._table!r}",
        )

    async def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return await self._retry.call(
            lambda: asyncio.to_thread(_call_recording_status, fn),
            is_transient=is_transient,
            error_class=V3ioError,
            what=f"step {self.name!r}: {what}",
        )

    def _make_client(self) -> Any:
        frames = require("v3io_frames")
        return frames.Client(
            self._url, container=self._container, token=self._access_key or "", should_check_version=False
        )

    def _create(self) -> Any:
        frames = require("v3io_frames")
        return self._client.create(
            "tsdb",
            self._table,
            if_exists=frames.IGNORE,
            rate=self._rate,
            aggregates=self._aggr,
            aggregation_granularity=self._aggr_granularity,
        )

    def _frame(self, rows: list[list[Any]]) -> Any:
        """The batch as a flat DataFrame: time (ns, UTC), labels (object of str), metrics; rows in time
        order (stable)."""
        pd = require("pandas")
        names = self._selector.names or []
        times = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        if len(times) > 1 and bool((times[1:] < times[:-1]).any()):
            order = np.argsort(times, kind="stable")  # framesd needs ascending times in a frame
            rows = [rows[i] for i in order]
            times = times[order]
        columns = list(zip(*rows, strict=True))
        data: dict[str, Any] = {}
        for i, (name, values) in enumerate(zip(names, columns, strict=True)):
            if i == 0:
                data[name] = pd.to_datetime(times, unit="ns", utc=True)
            elif i < self._n_index:
                data[name] = pd.Series([_label(v) for v in values], dtype=object)
            else:
                data[name] = _metric(pd, values)
        return pd.DataFrame(data)


def _metric(pd: Any, values: Sequence[Any]) -> Any:
    """A metric column: what pandas infers, except that a column of nulls only is a float column (the
    client would send it untyped) and a ``str`` column is ``object`` (which the client can encode)."""
    series = pd.Series(values)
    if series.dtype == object and series.isna().all():
        return series.astype("float64")
    if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
        return series.astype(object)
    return series


class _Closer:
    """The run's closeable: writes what is buffered and waits for every write (idempotent)."""

    def __init__(self, target: WriteToTSDB) -> None:
        self._target = target

    async def close(self) -> None:
        await self._target._close()


def _retrieve(task: asyncio.Task[Any]) -> BaseException | None:
    """The task's exception, marked as retrieved (``None`` if it succeeded or was cancelled)."""
    return None if task.cancelled() else task.exception()


def _label(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _check_url(url: str, step: str) -> None:
    if "://" in url:
        scheme = url.split("://", 1)[0]
        if scheme not in _FRAMES_SCHEMES:
            msg = f"step {step!r}: the framesd URL must start with http://, https:// or grpc://, got {url!r}"
            raise ValueError(msg)


def _split_table(path: str, container: str, has_client: bool, step: str) -> tuple[str, str]:
    """``(container, table path)`` from the `path` and `container` arguments."""
    if not isinstance(path, str) or not path.strip("/"):
        msg = f"step {step!r}: path must name a TSDB table, got {path!r}"
        raise ValueError(msg)
    if container:
        return container, path.strip("/")
    parts = urlparse(path)
    if parts.scheme:
        if parts.scheme != "v3io":
            msg = (
                f"step {step!r}: a TSDB path is /<container>/<table> or v3io://<container>/<table>, "
                f"got {path!r}"
            )
            raise ValueError(msg)
        segments = [s for s in (parts.netloc + "/" + parts.path).split("/") if s]
    else:
        segments = [s for s in path.split("/") if s]
    if len(segments) >= 2:
        return segments[0], "/".join(segments[1:])
    if has_client:
        return "", segments[0]
    msg = (
        f"step {step!r}: path {path!r} does not name a container: use /<container>/<table> or pass container="
    )
    raise ValueError(msg)


# ------------------------------------------------------------------------------- transient failures
_status = threading.local()


def _record_status(response: Any, *args: Any, **kwargs: Any) -> None:
    """A ``requests`` response hook: remember the last HTTP status seen by this thread."""
    _status.code = getattr(response, "status_code", None)


def _watch_statuses(client: Any) -> None:
    """Add `_record_status` to the response hooks of an HTTP frames client's ``requests`` session (the
    client turns every non-2xx answer into the same error class, without the status)."""
    hooks = getattr(getattr(client, "_session", None), "hooks", None)
    if isinstance(hooks, dict):
        response_hooks = hooks.setdefault("response", [])
        if _record_status not in response_hooks:
            response_hooks.append(_record_status)


def _call_recording_status(fn: Callable[[], Any]) -> Any:
    """Run one client call (in a worker thread); an HTTP 5xx answer is raised as `FramesServerError`."""
    _status.code = None
    try:
        return fn()
    except Exception as exc:
        code = getattr(_status, "code", None)
        if isinstance(code, int) and code >= 500:
            raise FramesServerError(code, exc) from exc
        raise


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and the errors behind it (``__cause__``, ``__context__``, and the gRPC client's ``cause``)."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 16:
        e = todo.pop()
        if any(e is seen for seen in out):
            continue
        out.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "cause", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return out


def is_transient(exc: BaseException) -> bool:
    """Whether a frames client failure is worth retrying (§9.2): an HTTP 5xx, a connection refused, reset
    or lost, a timeout, or gRPC ``UNAVAILABLE``/``DEADLINE_EXCEEDED``."""
    requests = sys.modules.get("requests")
    urllib3 = sys.modules.get("urllib3")
    grpc = sys.modules.get("grpc")
    for e in _causes(exc):
        if isinstance(e, FramesServerError | ConnectionError | TimeoutError):
            return True
        if requests is not None and isinstance(
            e,
            requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | requests.exceptions.ChunkedEncodingError,
        ):
            return not isinstance(e, requests.exceptions.SSLError)
        if urllib3 is not None and isinstance(
            e, urllib3.exceptions.ProtocolError | urllib3.exceptions.TimeoutError
        ):
            return True
        if grpc is not None and isinstance(e, grpc.RpcError):
            code = getattr(e, "code", None)
            if callable(code) and code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return True
    return False


TSDBTarget = WriteToTSDB
