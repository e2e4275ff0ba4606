"""The framesd HTTP endpoints that the ``v3io-frames`` HTTP client uses for TSDB tables.

The ``v3io_frames`` client never talks to the V3IO web API itself: it talks to the *framesd* service, over
gRPC or over HTTP. The emulator serves framesd's HTTP protocol on the same port (point the client at
``http://<emulator>``), following ``v3io/frames: http/server.go`` and ``backends/tsdb``:

- ``POST /version`` → ``{"version": ...}`` (the installed client's version, so no mismatch warning).
- ``POST /create`` (JSON ``CreateRequest``; backend ``tsdb``): needs ``rate`` ("Must specify 'rate' ..."),
  fails with "TSDB table already exists" unless ``if_exists`` is IGNORE (1); writes the table's
  ``.schema`` object into the emulated container, so the table is visible to listings.
- ``POST /write``: a stream of little-endian int64 length-prefixed protobuf messages, an
  ``InitialWriteRequest`` then ``Frame`` messages. As the real TSDB backend does: the frame needs a TIME
  index (times are kept in **milliseconds**, truncated); every column is a metric (float or int; anything
  else is an error); other index columns and the frame labels become labels; with a single index the times
  must be ascending. A table without ``.schema`` fails with "no TSDB schema file found". Nulls arrive as
  zeros (the client replaces them before sending) and are stored as zeros, like the real service.
  Answers ``{"num_frames": n, "num_rows": m}``.
- ``POST /delete`` (backend ``tsdb``): deletes the whole table (time ranges are not emulated).

Errors answer HTTP 500 with a text body, as framesd does (the client raises ``CreateError``/``Error``).
With an emulator access key, a session token that differs fails like the real chain does (framesd's V3IO
call is refused): HTTP 500 whose text contains ``401``.

Not emulated: ``/read`` (inspect samples with `V3ioEmulator.tsdb_samples` instead), ``/exec``,
``/history``, the gRPC protocol, and the ``kv``/``stream`` backends of framesd.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from storey.testing._v3io_model import Namespace, Reply, join

__all__ = ["FRAMES_ACTIONS", "Sample", "TsdbStore", "handle_frames"]

FRAMES_ACTIONS = ("version", "create", "write", "read", "delete", "exec", "history")
_HEADER = struct.Struct("<q")


@dataclass(frozen=True)
class Sample:
    """One TSDB sample: the label set (``__name__`` is the metric), the time in ms and the value."""

    labels: tuple[tuple[str, str], ...]
    time_ms: int
    value: float

    @property
    def metric(self) -> str:
        return dict(self.labels)["__name__"]


@dataclass
class TsdbTable:
    rate: str
    aggregates: str
    granularity: str
    samples: list[Sample] = field(default_factory=list)


class FramesError(Exception):
    """Answered as HTTP 500 with the message as text."""


@dataclass
class TsdbStore:
    """The emulated TSDB tables, keyed by ``(container, path)``."""

    tables: dict[tuple[str, str], TsdbTable] = field(default_factory=dict)


def _text(status: int, message: str) -> Reply:
    return Reply(status, message.encode(), {"Content-Type": "text/plain; charset=utf-8"})


def _resolve(session: dict[str, Any], table: str) -> tuple[str, str]:
    """``(container, path)``: the session's container, else the table path's first segment."""
    parts = [p for p in str(table).split("/") if p]
    container = session.get("container") or ""
    if not container:
        if len(parts) < 2:
            msg = f"no container in the session and none in table path {table!r}"
            raise FramesError(msg)
        container, parts = parts[0], parts[1:]
    if not parts:
        msg = "empty table path"
        raise FramesError(msg)
    return container, "/".join(parts)


def _check_token(token: str | None, access_key: str | None) -> None:
    if access_key is not None and token != access_key:
        msg = "failed to access the V3IO web API: status 401: Unauthorized (wrong access key)"
        raise FramesError(msg)


def handle_frames(action: str, body: bytes, ns: Namespace, store: TsdbStore, access_key: str | None) -> Reply:
    """Serve one framesd HTTP request."""
    try:
        if action == "version":
            return _version()
        if action == "create":
            return _create(json.loads(body or b"{}"), ns, store, access_key)
        if action == "write":
            return _write(body, ns, store, access_key)
        if action == "delete":
            return _delete(json.loads(body or b"{}"), ns, store, access_key)
    except FramesError as exc:
        return _text(500, str(exc))
    except ValueError as exc:
        return _text(400, f"bad request - {exc}")
    return _text(501, f"framesd action {action!r} is not emulated")


def _version() -> Reply:
    try:
        from v3io_frames import __version__ as version
    except ImportError:  # pragma: no cover - the client is what calls this
        version = "0.13.0"
    return Reply(200, json.dumps({"version": version}).encode(), {"Content-Type": "application/json"})


def _tsdb_only(backend: Any) -> None:
    if backend != "tsdb":
        msg = f"the emulator serves only the 'tsdb' framesd backend, got {backend!r}"
        raise FramesError(msg)


def _create(req: dict[str, Any], ns: Namespace, store: TsdbStore, access_key: str | None) -> Reply:
    session = req.get("session") or {}
    _check_token(session.get("token"), access_key)
    _tsdb_only(req.get("backend"))
    rate = req.get("rate") or ""
    if not rate:
        msg = "Must specify 'rate' attribute to specify maximum sample rate, e.g. '1/m'"
        raise FramesError(msg)
    key = _resolve(session, req.get("table", ""))
    container = ns.container(key[0])
    schema_path = join(key[1], ".schema")
    if container.get(schema_path) is not None:
        if int(req.get("if_exists") or 0) == 1:
            return _text(200, "OK")
        msg = f"failed to create a TSDB table: TSDB table already exists at {key[1]!r}"
        raise FramesError(msg)
    aggregates = req.get("aggregates") or ""
    granularity = req.get("aggregation_granularity") or "1h"
    node = container.create_file(schema_path)
    doc = {"tableSchemaInfo": {"rate": rate, "aggregates": aggregates, "aggregationGranularity": granularity}}
    node.data = bytearray(json.dumps(doc).encode())
    container.touch(node)
    store.tables[key] = TsdbTable(rate, aggregates, granularity)
    return _text(200, "OK")


def _delete(req: dict[str, Any], ns: Namespace, store: TsdbStore, access_key: str | None) -> Reply:
    session = req.get("session") or {}
    _check_token(session.get("token"), access_key)
    _tsdb_only(req.get("backend"))
    key = _resolve(session, req.get("table", ""))
    container = ns.container(key[0])
    if container.get(join(key[1], ".schema")) is None:
        if int(req.get("if_missing") or 0) == 1:
            return _text(200, "OK")
        msg = f"no TSDB schema file found at {key[1]!r}"
        raise FramesError(msg)
    container.delete(join(key[1], ".schema"))
    store.tables.pop(key, None)
    return _text(200, "OK")


def _messages(body: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(body):
        if pos + _HEADER.size > len(body):
            msg = "chopped message header"
            raise ValueError(msg)
        (size,) = _HEADER.unpack_from(body, pos)
        pos += _HEADER.size
        if size < 0 or pos + size > len(body):
            msg = "chopped message body"
            raise ValueError(msg)
        out.append(body[pos : pos + size])
        pos += size
    return out


def _write(body: bytes, ns: Namespace, store: TsdbStore, access_key: str | None) -> Reply:
    from v3io_frames import frames_pb2 as fpb

    messages = _messages(body)
    if not messages:
        msg = "bad write request"
        raise ValueError(msg)
    first = fpb.InitialWriteRequest.FromString(messages[0])
    session = {"container": first.session.container, "token": first.session.token}
    _check_token(session["token"], access_key)
    _tsdb_only(first.backend)
    key = _resolve(session, first.table)
    table = store.tables.get(key)
    if table is None or ns.container(key[0]).get(join(key[1], ".schema")) is None:
        msg = f"write error: failed to create adapter: no TSDB schema file found at {key[1]!r}"
        raise FramesError(msg)
    frames = [fpb.Frame.FromString(m) for m in messages[1:]]
    if first.HasField("initial_data"):
        frames.insert(0, first.initial_data)
    new: list[Sample] = []
    rows = 0
    for frame in frames:
        rows += _frame_samples(frame, fpb, new)
    table.samples.extend(new)
    reply = {"num_frames": len(frames), "num_rows": rows}
    return Reply(200, json.dumps(reply).encode(), {"Content-Type": "application/json"})


def _column_values(col: Any, fpb: Any) -> list[Any]:
    data = {
        fpb.FLOAT: col.floats,
        fpb.INTEGER: col.ints,
        fpb.STRING: col.strings,
        fpb.TIME: col.times,
        fpb.BOOLEAN: col.bools,
    }.get(col.dtype, [])
    values = list(data)
    if col.kind == col.LABEL:
        values = values[:1] * col.size
    return values


def _label_value(value: Any) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


def _frame_samples(frame: Any, fpb: Any, out: list[Sample]) -> int:
    columns = [(c.name, c) for c in frame.columns]
    if not columns:
        return 0
    length = len(_column_values(columns[0][1], fpb))
    if length == 0:
        return 0
    time_idx = next((i for i, c in enumerate(frame.indices) if c.dtype == fpb.TIME), None)
    if not frame.indices:
        msg = "write error: no indices, must have at least one Time index"
        raise FramesError(msg)
    if time_idx is None:
        msg = "write error: there is no index of type time/date"
        raise FramesError(msg)
    times_ms = [int(t / 1_000_000) for t in _column_values(frame.indices[time_idx], fpb)]
    if len(frame.indices) == 1 and len(times_ms) > 1 and times_ms[0] > times_ms[-1]:
        msg = "write error: time column is out of order (need to be sorted by ascending time)"
        raise FramesError(msg)
    values: dict[str, list[float]] = {}
    for name, col in columns:
        if col.dtype not in (fpb.FLOAT, fpb.INTEGER):
            msg = f"write error: cannot write type {fpb.DType.Name(col.dtype)} as time series value"
            raise FramesError(msg)
        values[name] = [float(v) for v in _column_values(col, fpb)]
    base = {k: _label_value(v) for k, v in frame.labels.items()}
    extra = [
        (idx.name, [str(v) for v in _column_values(idx, fpb)])
        for i, idx in enumerate(frame.indices)
        if i != time_idx
    ]
    for row in range(length):
        for name, vals in values.items():
            labels = {**base, "__name__": name, **{n: vs[row] for n, vs in extra}}
            out.append(Sample(tuple(sorted(labels.items())), times_ms[row], vals[row]))
    return length
