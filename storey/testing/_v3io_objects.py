"""Object and container operations of the emulator: GET/PUT/HEAD/DELETE of paths, and listings.

- ``PUT`` with a body writes an object (``Range: -1`` appends); a path ending in ``/`` creates a directory
  (with its parents, like every write).
- ``GET`` reads an object, or a byte range of it (``Range: bytes=a-b`` or ``bytes=a``, answered 206).
- ``HEAD`` answers ``Content-Length`` (0 for a directory).
- ``DELETE`` removes a file or an *empty* directory (409 otherwise); a stream directory is removed once
  its shard files are (which is what the SDK's ``stream.delete`` does).
- ``GET /<container>?prefix=...`` lists the direct children of a directory as S3-style XML
  (``ListBucketResult``); ``GET /`` lists the containers (``ListAllMyBucketsResult``).
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from typing import Any

from storey.testing._v3io_model import (
    EISDIR,
    ENOTDIR,
    Namespace,
    Node,
    OpError,
    Reply,
    Request,
    bad_request,
    join,
    not_found,
    split_ns,
)

__all__ = ["delete_object", "get_object", "head_object", "list_container", "list_containers", "put_object"]

_RANGE = re.compile(r"bytes=(\d+)(?:-(\d*))?$")


def _object_node(req: Request) -> Node:
    node = req.container.get(req.path)
    if node is None:
        raise not_found(req.path)
    return node


def _object_bytes(node: Node) -> bytes:
    if node.shard is not None:
        return b"".join(r.data for r in node.shard.records)
    return bytes(node.data)


def _http_time(ns: int) -> str:
    secs, _ = split_ns(ns)
    return _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def get_object(req: Request) -> Reply:
    node = _object_node(req)
    if node.is_dir:
        raise OpError(400, EISDIR, f"Is a directory: {req.path}")
    data = _object_bytes(node)
    headers = {"Content-Type": "application/octet-stream", "Last-Modified": _http_time(node.mtime_ns)}
    rng = req.headers.get("Range")
    if not rng:
        return Reply(200, data, headers)
    m = _RANGE.match(rng.strip())
    if m is None:
        msg = f"unsupported Range {rng!r}"
        raise bad_request(msg)
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else len(data) - 1
    if start >= len(data) and len(data) > 0:
        return Reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
    end = min(end, len(data) - 1)
    chunk = data[start : end + 1]
    headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/{len(data)}"
    return Reply(206, chunk, headers)


def head_object(req: Request) -> Reply:
    node = _object_node(req)
    size = 0 if node.is_dir else len(_object_bytes(node))
    return Reply(200, b"", {"Content-Length": str(size), "Last-Modified": _http_time(node.mtime_ns)})


def put_object(req: Request) -> Reply:
    if req.trailing_slash or not req.path:
        req.container.ensure_dir(req.path)
        return Reply(200)
    node = req.container.create_file(req.path)
    if node.shard is not None:
        msg = f"cannot write a stream shard as an object: {req.path}"
        raise bad_request(msg)
    if req.headers.get("Range", "").strip() == "-1":
        node.data.extend(req.body)
    else:
        node.data = bytearray(req.body)
    req.container.touch(node)
    return Reply(200)


def delete_object(req: Request) -> Reply:
    req.container.delete(req.path)
    return Reply(204)


# ------------------------------------------------------------------------------------------- listings
def _sub(parent: ET.Element, tag: str, text: Any) -> None:
    ET.SubElement(parent, tag).text = str(text)


def _iso(ns: int) -> str:
    secs, nsecs = split_ns(ns)
    stamp = _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nsecs // 1_000_000:03d}Z"


def _attrs_xml(parent: ET.Element, node: Node, full: bool) -> None:
    _sub(parent, "LastModified", _iso(node.mtime_ns))
    if full:
        _sub(parent, "Mode", oct(0o40755 if node.is_dir else 0o100644))
        _sub(parent, "AccessTime", _iso(node.mtime_ns))
        _sub(parent, "CreatingTime", _iso(node.ctime_ns))
        _sub(parent, "GID", "0")
        _sub(parent, "UID", "0")
        _sub(parent, "InodeNumber", node.inode)


def _xml(root: ET.Element) -> Reply:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    return Reply(200, body, {"Content-Type": "application/xml"})


def list_container(req: Request) -> Reply:
    """The children of the directory named by ``prefix`` (the container root when empty)."""
    prefix = "/".join(p for p in req.query.get("prefix", "").split("/") if p)
    node = req.container.get(prefix)
    if node is None:
        raise not_found(prefix or "/")
    if not node.is_dir:
        raise OpError(400, ENOTDIR, f"Not a directory: {prefix}")
    full = req.query.get("prefix-info") == "1"
    dirs_only = req.query.get("prefix-only") == "1"
    try:
        max_keys = int(req.query.get("max-keys", "1000"))
    except ValueError as exc:
        msg = "max-keys must be an integer"
        raise bad_request(msg) from exc
    marker = req.query.get("marker", "")
    entries = [
        (join(prefix, name) + ("/" if child.is_dir else ""), child)
        for name, child in req.container.list_children(prefix)
        if child.is_dir or not dirs_only
    ]
    entries = [e for e in entries if e[0] > marker] if marker else entries
    page, truncated = entries[:max_keys], len(entries) > max_keys
    root = ET.Element("ListBucketResult")
    _sub(root, "Name", req.container.name)
    _sub(root, "NextMarker", page[-1][0] if truncated and page else "")
    _sub(root, "MaxKeys", max_keys)
    _sub(root, "IsTruncated", "true" if truncated else "false")
    for key, child in page:
        if child.is_dir:
            el = ET.SubElement(root, "CommonPrefixes")
            _sub(el, "Prefix", key)
        else:
            el = ET.SubElement(root, "Contents")
            _sub(el, "Key", key)
            _sub(el, "Size", len(_object_bytes(child)))
            if child.shard is not None:
                _sub(el, "LastSequenceID", child.shard.next_seq - 1)
        _attrs_xml(el, child, full)
    return _xml(root)


def list_containers(ns: Namespace) -> Reply:
    root = ET.Element("ListAllMyBucketsResult")
    owner = ET.SubElement(root, "Owner")
    _sub(owner, "ID", "000000000000000000000000000000")
    _sub(owner, "DisplayName", "iguazio")
    buckets = ET.SubElement(root, "Buckets")
    for c in ns.containers.values():
        el = ET.SubElement(buckets, "Bucket")
        _sub(el, "Name", c.name)
        _sub(el, "CreationDate", _iso(c.created_ns))
        _sub(el, "Id", c.id)
    return _xml(root)
