"""Stream operations of the emulator: CreateStream, DescribeStream, UpdateStream, PutRecords, SeekShard,
GetRecords.

A stream is a directory whose shards are the files ``0``, ``1``, ... (other files, such as consumer-group
state objects, may live beside them). Sequence numbers start at 1 in every shard (*assumed*).

Record placement in PutRecords: ``ShardId`` if given (out of range: a per-record failure with
``ShardIDOutOfRangeException``, the request still answers 200); else ``crc32(PartitionKey) % shards``
(*assumed*: the real hash is not documented); else round-robin per stream starting at shard 0 (*assumed*).
Locations are opaque base64 strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Callable
from typing import Any

from storey.testing._v3io_model import (
    EEXIST,
    EINVAL,
    SHARD_OUT_OF_RANGE,
    Container,
    OpError,
    Record,
    Reply,
    Request,
    Shard,
    Stream,
    bad_request,
    join,
    json_reply,
    not_found,
    parent_of,
    split_ns,
)

__all__ = [
    "RecordFault",
    "create_stream",
    "describe_stream",
    "get_records",
    "put_records",
    "seek_shard",
    "update_stream",
]

RecordFault = Callable[[str, int], "tuple[int, str] | None"]
"""Asked for each record about to be stored (stream path, shard id): an (error code, message) to fail it."""

_MAX_GET_RECORDS = 1000


def _stream(container: Container, path: str) -> Stream:
    stream = container.streams.get(path)
    if stream is None:
        raise not_found(path)
    return stream


def _positive_int(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{key} must be a positive integer, got {value!r}"
        raise bad_request(msg)
    return value


def _add_shards(container: Container, stream: Stream, count: int) -> None:
    for shard_id in range(len(stream.shards), count):
        shard = Shard(shard_id)
        node = container.create_file(join(stream.path, str(shard_id)))
        node.shard = shard
        stream.shards.append(shard)
    stream.shard_count = count


def create_stream(req: Request) -> Reply:
    body = req.json()
    shards = _positive_int(body, "ShardCount")
    retention = _positive_int(body, "RetentionPeriodHours", 24)
    if not req.path:
        msg = "a stream needs a path"
        raise bad_request(msg)
    if req.container.get(req.path) is not None:
        raise OpError(409, EEXIST, f"File exists: {req.path}")
    req.container.ensure_dir(req.path)
    stream = Stream(req.path, 0, retention)
    req.container.streams[req.path] = stream
    _add_shards(req.container, stream, shards)
    return Reply(204)


def describe_stream(req: Request) -> Reply:
    stream = _stream(req.container, req.path)
    return json_reply({"ShardCount": stream.shard_count, "RetentionPeriodHours": stream.retention_hours})


def update_stream(req: Request) -> Reply:
    stream = _stream(req.container, req.path)
    shards = _positive_int(req.json(), "ShardCount")
    if shards < stream.shard_count:
        msg = f"ShardCount can only grow: {stream.shard_count} -> {shards}"
        raise bad_request(msg)
    _add_shards(req.container, stream, shards)
    return Reply(200)


def _live_shard(container: Container, stream: Stream, shard_id: Any) -> Shard | None:
    if isinstance(shard_id, bool) or not isinstance(shard_id, int) or not 0 <= shard_id < stream.shard_count:
        return None
    node = container.get(join(stream.path, str(shard_id)))
    return node.shard if node is not None else None


def _place(container: Container, stream: Stream, rec: dict[str, Any]) -> Shard | None:
    if rec.get("ShardId") is not None:
        return _live_shard(container, stream, rec["ShardId"])
    key = rec.get("PartitionKey")
    if key is not None:
        return _live_shard(container, stream, zlib.crc32(str(key).encode()) % stream.shard_count)
    shard_id = stream.round_robin % stream.shard_count
    stream.round_robin += 1
    return _live_shard(container, stream, shard_id)


def _b64(value: Any) -> bytes:
    return base64.b64decode(value, validate=True)


def put_records(req: Request, record_fault: RecordFault) -> Reply:
    stream = _stream(req.container, req.path)
    records = req.json().get("Records")
    if not isinstance(records, list):
        msg = "Records must be a list"
        raise bad_request(msg)
    results: list[dict[str, Any]] = []
    failed = 0
    for rec in records:
        result = _put_one(req.container, stream, rec, record_fault)
        failed += "ErrorCode" in result
        results.append(result)
    return json_reply({"FailedRecordCount": failed, "Records": results})


def _put_one(container: Container, stream: Stream, rec: Any, record_fault: RecordFault) -> dict[str, Any]:
    if not isinstance(rec, dict) or "Data" not in rec:
        return {"ErrorCode": EINVAL, "ErrorMessage": "a record needs Data"}
    shard = _place(container, stream, rec)
    if shard is None:
        return {"ErrorCode": SHARD_OUT_OF_RANGE, "ErrorMessage": "ShardIDOutOfRangeException"}
    fault = record_fault("/" + join(container.name, stream.path), shard.shard_id)
    if fault is not None:
        return {"ErrorCode": fault[0], "ErrorMessage": fault[1]}
    try:
        data = _b64(rec["Data"])
        info = _b64(rec["ClientInfo"]) if rec.get("ClientInfo") is not None else None
    except (binascii.Error, TypeError, ValueError):
        return {"ErrorCode": EINVAL, "ErrorMessage": "Data and ClientInfo must be base64"}
    key = rec.get("PartitionKey")
    record = Record(shard.next_seq, container.now_ns(), data, info, None if key is None else str(key))
    shard.records.append(record)
    shard.next_seq += 1
    return {"SequenceNumber": record.seq, "ShardId": shard.shard_id}


def _shard_from_path(req: Request) -> tuple[Stream, Shard]:
    stream_path, shard_name = parent_of(req.path)
    stream = _stream(req.container, stream_path)
    shard = _live_shard(req.container, stream, int(shard_name) if shard_name.isdigit() else None)
    if shard is None:
        raise OpError(400, SHARD_OUT_OF_RANGE, "ShardIDOutOfRangeException")
    return stream, shard


def _location(shard: Shard, seq: int) -> str:
    return base64.b64encode(json.dumps({"shard": shard.shard_id, "seq": seq}).encode()).decode("ascii")


def _parse_location(shard: Shard, location: Any) -> int:
    try:
        doc = json.loads(base64.b64decode(str(location), validate=True))
        if doc["shard"] != shard.shard_id:
            msg = "another shard's location"
            raise ValueError(msg)
        return int(doc["seq"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        msg = f"invalid Location {location!r}: {exc}"
        raise bad_request(msg) from exc


def _first_seq(shard: Shard) -> int:
    return shard.records[0].seq if shard.records else shard.next_seq


def seek_shard(req: Request) -> Reply:
    _, shard = _shard_from_path(req)
    body = req.json()
    kind = body.get("Type")
    if kind == "EARLIEST":
        seq = _first_seq(shard)
    elif kind == "LATEST":
        seq = shard.next_seq
    elif kind == "SEQUENCE":
        wanted = body.get("StartingSequenceNumber")
        if isinstance(wanted, bool) or not isinstance(wanted, int):
            msg = "StartingSequenceNumber must be an integer"
            raise bad_request(msg)
        seq = min(max(wanted, _first_seq(shard)), shard.next_seq)
    elif kind == "TIME":
        try:
            t = int(body.get("TimestampSec", 0)) * 1_000_000_000 + int(body.get("TimestampNSec", 0))
        except (TypeError, ValueError) as exc:
            msg = "TimestampSec and TimestampNSec must be integers"
            raise bad_request(msg) from exc
        seq = next((r.seq for r in shard.records if r.arrival_ns >= t), shard.next_seq)
    else:
        msg = f"unsupported seek Type {kind!r}"
        raise bad_request(msg)
    return json_reply({"Location": _location(shard, seq)})


def get_records(req: Request) -> Reply:
    _, shard = _shard_from_path(req)
    body = req.json()
    seq = _parse_location(shard, body.get("Location"))
    limit = body.get("Limit") or _MAX_GET_RECORDS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        msg = f"Limit must be a positive integer, got {limit!r}"
        raise bad_request(msg)
    pending = [r for r in shard.records if r.seq >= seq]
    batch = pending[: min(limit, _MAX_GET_RECORDS)]
    next_seq = batch[-1].seq + 1 if batch else max(seq, _first_seq(shard))
    behind = len(pending) - len(batch)
    lag_ms = (shard.records[-1].arrival_ns - batch[-1].arrival_ns) // 1_000_000 if batch and behind else 0
    return json_reply(
        {
            "NextLocation": _location(shard, next_seq),
            "MSecBehindLatest": lag_ms,
            "RecordsBehindLatest": behind,
            "Records": [_record_json(r) for r in batch],
        }
    )


def _record_json(record: Record) -> dict[str, Any]:
    secs, nsecs = split_ns(record.arrival_ns)
    out: dict[str, Any] = {
        "ArrivalTimeSec": secs,
        "ArrivalTimeNSec": nsecs,
        "SequenceNumber": record.seq,
        "Data": base64.b64encode(record.data).decode("ascii"),
    }
    if record.partition_key is not None:
        out["PartitionKey"] = record.partition_key
    if record.client_info is not None:
        out["ClientInfo"] = base64.b64encode(record.client_info).decode("ascii")
    return out
