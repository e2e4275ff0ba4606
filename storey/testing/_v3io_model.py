"""The in-memory state of the V3IO emulator: typed values, the file namespace, streams, replies.

V3IO stores everything as files in containers: a KV item is a file with attributes, an object is a file
with data (and may have attributes too), a directory is a table, and a stream is a directory whose shards
are files. The emulator keeps the same single namespace, so that listings, deletes and `GetItems` see the
same world the real service shows.

Attribute values are held as Python ``int``, ``float``, ``str``, ``bool``, ``bytes`` (blobs; arrays are
blobs in the `KvArray` layout) and `TS` (``secs:nsecs`` timestamps).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ENOENT",
    "FALSE_CONDITION",
    "Clock",
    "Container",
    "KvArray",
    "Namespace",
    "Node",
    "OpError",
    "Reply",
    "Request",
    "Shard",
    "Stream",
    "TS",
    "decode_attributes",
    "encode_attribute",
    "error_reply",
    "json_reply",
]

# Error codes in the JSON error body. FALSE_CONDITION is the one storey relies on (captured on the wire);
# ENOENT and its message are what the real service answers for a missing path (v3io-py's client tests
# assert "No such file" in the body). The others follow the same negative-errno convention (assumed).
FALSE_CONDITION = 16777244
ENOENT = -2
EACCES = -13
EEXIST = -17
ENOTDIR = -20
EISDIR = -21
EINVAL = -22
ENOTEMPTY = -39
SHARD_OUT_OF_RANGE = -201326594  # "ShardIDOutOfRangeException" in the web-API docs
EAGAIN = -11

_MESSAGES = {
    ENOENT: "No such file or directory",
    EACCES: "Permission denied",
    EEXIST: "File exists",
    ENOTDIR: "Not a directory",
    EISDIR: "Is a directory",
    EINVAL: "Invalid argument",
    ENOTEMPTY: "Directory not empty",
    SHARD_OUT_OF_RANGE: "ShardIDOutOfRangeException",
    EAGAIN: "Resource temporarily unavailable",
    FALSE_CONDITION: "Condition expression evaluated to false",
}


# --------------------------------------------------------------------------------------------- replies
@dataclass
class Reply:
    """An HTTP answer produced by an operation handler."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode(), hdrs)


def error_reply(status: int, code: int, message: str | None = None) -> Reply:
    """The service's JSON error body ``{"ErrorCode": ..., "ErrorMessage": ...}``."""
    text = message if message is not None else _MESSAGES.get(code, "error")
    return json_reply({"ErrorCode": code, "ErrorMessage": text}, status)


class OpError(Exception):
    """Raised inside a handler to answer with an error body."""

    def __init__(self, status: int, code: int, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES.get(code, "error"))
        self.status = status
        self.code = code
        self.message = message if message is not None else _MESSAGES.get(code, "error")

    def reply(self) -> Reply:
        return error_reply(self.status, self.code, self.message)


@dataclass
class Request:
    """A parsed data-service request, as the operation handlers see it.

    ``path`` is the path inside the container without leading or trailing slashes, with empty segments
    removed (the service treats ``a//b`` as ``a/b``); ``trailing_slash`` says whether the URL ended in one.
    """

    method: str
    container: Container
    path: str
    trailing_slash: bool
    query: dict[str, str]
    function: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The JSON body (``{}`` when empty); a malformed body answers 400."""
        if not self.body.strip():
            return {}
        try:
            doc = json.loads(self.body)
        except ValueError as exc:
            msg = f"malformed JSON body: {exc}"
            raise bad_request(msg) from exc
        if not isinstance(doc, dict):
            msg = "the JSON body must be an object"
            raise bad_request(msg)
        return doc


def not_found(what: str = "") -> OpError:
    msg = _MESSAGES[ENOENT] + (f": {what}" if what else "")
    return OpError(404, ENOENT, msg)


def bad_request(message: str, code: int = EINVAL) -> OpError:
    return OpError(400, code, message)


# ---------------------------------------------------------------------------------------------- values
class TS(NamedTuple):
    """A timestamp attribute: seconds and nanoseconds since the epoch (UTC)."""

    secs: int
    nsecs: int

    def render(self) -> str:
        return f"{self.secs}:{self.nsecs}"


_ARRAY_MAGIC = 11223344
_ARRAY_VERSION = 1
_OPERAND_INT = 259
_OPERAND_DOUBLE = 261
_ARRAY_HEADER = struct.Struct("<IIII")


class KvArray:
    """An array attribute: int64 or double values, stored as a blob (``v3io/dataplane/kv_array.py``).

    Layout: uint32 magic 11223344, uint32 version 1, uint32 byte length (8·n), uint32 operand type
    (259 = int64, 261 = double), then the values; little-endian, as on the x86-64 servers.

    Examples
    --------
    >>> a = KvArray("d", [1.0, 2.5])
    >>> KvArray.decode(a.encode()).values
    [1.0, 2.5]
    """

    __slots__ = ("typecode", "values")

    def __init__(self, typecode: str, values: list[Any]) -> None:
        self.typecode = typecode
        self.values = [self.cast(v) for v in values] if typecode == "l" else [float(v) for v in values]

    def cast(self, value: Any) -> int | float:
        """Convert an element to the array's type (ints truncate doubles toward zero, as C does)."""
        if isinstance(value, bool):
            value = int(value)
        if self.typecode == "d":
            return float(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                msg = f"cannot store {value!r} in an int array"
                raise ValueError(msg)
            return int(value)
        return int(value)

    def encode(self) -> bytes:
        n = len(self.values)
        operand = _OPERAND_INT if self.typecode == "l" else _OPERAND_DOUBLE
        fmt = "<" + ("q" if self.typecode == "l" else "d") * n
        return _ARRAY_HEADER.pack(_ARRAY_MAGIC, _ARRAY_VERSION, 8 * n, operand) + struct.pack(
            fmt, *self.values
        )

    @classmethod
    def decode(cls, blob: bytes) -> KvArray | None:
        """The array held by ``blob``, or ``None`` if it is not an array blob."""
        if len(blob) < _ARRAY_HEADER.size:
            return None
        magic, version, size, operand = _ARRAY_HEADER.unpack_from(blob)
        if (
            magic != _ARRAY_MAGIC
            or version != _ARRAY_VERSION
            or operand not in (_OPERAND_INT, _OPERAND_DOUBLE)
        ):
            return None
        if size % 8 or len(blob) != _ARRAY_HEADER.size + size:
            return None
        typecode = "l" if operand == _OPERAND_INT else "d"
        values = list(struct.unpack_from("<" + ("q" if typecode == "l" else "d") * (size // 8), blob, 16))
        arr = cls.__new__(cls)
        arr.typecode = typecode
        arr.values = values
        return arr

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"KvArray({self.typecode!r}, {self.values!r})"


def render_number(value: int | float) -> str:
    """The ``N`` text of a number: integers without a point, doubles always with one (or an exponent).

    The clients decode ``N`` with ``int()`` first, so a double must never look integral. Assumed: the real
    service renders doubles so that they round-trip (the clients' tests put 3.14 and read back a float).
    """
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def parse_number(text: Any) -> int | float:
    """Parse an ``N`` value (a string, or a JSON number)."""
    if isinstance(text, bool):
        msg = "a boolean is not a number"
        raise ValueError(msg)
    if isinstance(text, int | float):
        return text
    if not isinstance(text, str):
        msg = f"not a number: {text!r}"
        raise ValueError(msg)
    try:
        return int(text)
    except ValueError:
        return float(text)


def decode_attributes(typed: Any) -> dict[str, Any]:
    """Decode a typed-attribute JSON object ``{name: {"N"|"S"|"BOOL"|"B"|"TS": value}}``."""
    if not isinstance(typed, dict):
        msg = "attributes must be a JSON object"
        raise ValueError(msg)
    out: dict[str, Any] = {}
    for name, typed_value in typed.items():
        if not isinstance(typed_value, dict) or len(typed_value) != 1:
            msg = f"attribute {name!r} must be an object with one type key"
            raise ValueError(msg)
        ((kind, raw),) = typed_value.items()
        out[name] = _decode_one(name, kind, raw)
    return out


def _decode_one(name: str, kind: str, raw: Any) -> Any:
    if kind == "N":
        return parse_number(raw)
    if kind == "S":
        return raw if isinstance(raw, str) else str(raw)
    if kind == "BOOL":
        if not isinstance(raw, bool):
            msg = f"attribute {name!r}: BOOL must be true or false"
            raise ValueError(msg)
        return raw
    if kind == "B":
        return base64.b64decode(raw, validate=True)
    if kind == "TS":
        secs, _, nsecs = str(raw).partition(":")
        return TS(int(secs), int(nsecs or 0))
    msg = f"attribute {name!r}: unknown type {kind!r}"
    raise ValueError(msg)


def encode_attribute(value: Any) -> dict[str, Any]:
    """The typed JSON form of a stored value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": render_number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, TS):
        return {"TS": value.render()}
    if isinstance(value, KvArray):
        return {"B": base64.b64encode(value.encode()).decode("ascii")}
    msg = f"cannot encode {type(value).__name__}"
    raise TypeError(msg)


# ----------------------------------------------------------------------------------------------- clock
class Clock:
    """Nanosecond wall clock that never repeats: every reading is later than the previous one.

    Item mtimes come from it, so the ``(__mtime_secs, __mtime_nsecs)`` transaction verifier of an item
    changes on every write.
    """

    def __init__(self) -> None:
        self._last = 0

    def now_ns(self) -> int:
        t = max(time.time_ns(), self._last + 1)
        self._last = t
        return t


def split_ns(ns: int) -> tuple[int, int]:
    return ns // 1_000_000_000, ns % 1_000_000_000


# ----------------------------------------------------------------------------------------- namespace
@dataclass
class Record:
    """One stream record."""

    seq: int
    arrival_ns: int
    data: bytes
    client_info: bytes | None
    partition_key: str | None


@dataclass
class Shard:
    """One stream shard: its records, in order, and the next sequence number (the first is 1)."""

    shard_id: int
    records: list[Record] = field(default_factory=list)
    next_seq: int = 1

    def size(self) -> int:
        return sum(len(r.data) for r in self.records)


@dataclass
class Stream:
    """A stream: a directory with one file per shard."""

    path: str
    shard_count: int
    retention_hours: int
    shards: list[Shard] = field(default_factory=list)
    round_robin: int = 0


@dataclass
class Node:
    """A file or directory."""

    is_dir: bool
    inode: int
    ctime_ns: int
    mtime_ns: int
    data: bytearray = field(default_factory=bytearray)
    attrs: dict[str, Any] = field(default_factory=dict)
    shard: Shard | None = None

    def verifier(self) -> str:
        """The ``X-v3io-transaction-verifier`` of this item."""
        secs, nsecs = split_ns(self.mtime_ns)
        return f"__mtime_secs=={secs} and __mtime_nsecs=={nsecs}"

    def system_attributes(self, name: str) -> dict[str, Any]:
        """The system attributes the service exposes (``__name``, ``__size``, the times, ...)."""
        msecs, mnsecs = split_ns(self.mtime_ns)
        csecs, cnsecs = split_ns(self.ctime_ns)
        size = self.shard.size() if self.shard is not None else len(self.data)
        return {
            "__name": name,
            "__size": size,
            "__mode": 0o40755 if self.is_dir else 0o100644,
            "__mtime_secs": msecs,
            "__mtime_nsecs": mnsecs,
            "__ctime_secs": csecs,
            "__ctime_nsecs": cnsecs,
            "__atime_secs": msecs,
            "__atime_nsecs": mnsecs,
            "__uid": 0,
            "__gid": 0,
            "__inode_number": self.inode,
        }


def join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def parent_of(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent, name


class Container:
    """One container: a tree of `Node` objects keyed by their path (``''`` is the root directory)."""

    def __init__(self, name: str, cid: int, clock: Clock, inodes: Iterator[int]) -> None:
        self.name = name
        self.id = cid
        self._clock = clock
        self._inodes = inodes
        now = clock.now_ns()
        self.created_ns = now
        self.nodes: dict[str, Node] = {"": Node(True, next(inodes), now, now)}
        self.children: dict[str, set[str]] = {"": set()}
        self.streams: dict[str, Stream] = {}

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def list_children(self, path: str) -> list[tuple[str, Node]]:
        """The direct children of directory ``path``, sorted by name."""
        names = sorted(self.children.get(path, ()))
        return [(name, self.nodes[join(path, name)]) for name in names]

    def ensure_dir(self, path: str) -> Node:
        """``mkdir -p``: the directory at ``path``, created with its parents if needed."""
        node = self.nodes.get(path)
        if node is not None:
            if not node.is_dir:
                raise OpError(400, ENOTDIR, f"{_MESSAGES[ENOTDIR]}: {path}")
            return node
        parent, name = parent_of(path)
        self.ensure_dir(parent)
        now = self._clock.now_ns()
        node = Node(True, next(self._inodes), now, now)
        self._add(path, parent, name, node)
        return node

    def create_file(self, path: str) -> Node:
        """The file at ``path``, created (with its parent directories) if needed."""
        node = self.nodes.get(path)
        if node is not None:
            if node.is_dir:
                raise OpError(400, EISDIR, f"{_MESSAGES[EISDIR]}: {path}")
            return node
        if not path:
            raise OpError(400, EISDIR, f"{_MESSAGES[EISDIR]}: the container root")
        parent, name = parent_of(path)
        self.ensure_dir(parent)
        now = self._clock.now_ns()
        node = Node(False, next(self._inodes), now, now)
        self._add(path, parent, name, node)
        return node

    def _add(self, path: str, parent: str, name: str, node: Node) -> None:
        self.nodes[path] = node
        self.children[parent].add(name)
        if node.is_dir:
            self.children[path] = set()

    def delete(self, path: str) -> None:
        """Delete a file, or an empty directory (a stream directory once its shards are deleted)."""
        node = self.nodes.get(path)
        if node is None:
            raise not_found(path)
        if not path:
            msg = "cannot delete a container's root directory"
            raise bad_request(msg)
        if node.is_dir and self.children.get(path):
            raise OpError(409, ENOTEMPTY, f"{_MESSAGES[ENOTEMPTY]}: {path}")
        parent, name = parent_of(path)
        del self.nodes[path]
        self.children[parent].discard(name)
        self.children.pop(path, None)
        self.streams.pop(path, None)

    def touch(self, node: Node) -> None:
        """Record a modification: a new, strictly later mtime."""
        node.mtime_ns = self._clock.now_ns()

    def now_ns(self) -> int:
        """A reading of the service clock (strictly increasing)."""
        return self._clock.now_ns()


class Namespace:
    """Every container of the emulated service. Containers are created on first use."""

    DEFAULT_CONTAINERS = ("bigdata", "users", "projects")

    def __init__(self) -> None:
        self.clock = Clock()
        self._inodes = iter(range(1, 2**62))
        self._ids = iter(range(1, 2**31))
        self.containers: dict[str, Container] = {}
        for name in self.DEFAULT_CONTAINERS:
            self.container(name)

    def container(self, name: str) -> Container:
        c = self.containers.get(name)
        if c is None:
            c = self.containers[name] = Container(name, next(self._ids), self.clock, self._inodes)
        return c
