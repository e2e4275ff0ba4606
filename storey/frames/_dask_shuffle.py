"""The Dask engine's key shuffle: rows tagged in arrival order, then moved to partitions by key (§8.7).

Before the shuffle every row of a part gets int64 columns: its arrival sequence number (`SEQ`), a hash of its
key (`HASH`) and, for policies with timers, its event time in ns (`TIME`) and the step clock ``C`` at that
row (`CLOCK`: the running maximum of time in arrival order, started from the clock carried into the part).
Rows are then shuffled on the hash with Dask's own shuffle (p2p on a distributed cluster), so all rows of a
key land in one partition; each partition is later sorted by `SEQ`.

Keys are hashed as Python values (the values `KeyEncoder` groups by), so two rows share a partition whenever
the local engine would put them in one group: ``1``, ``1.0`` and ``True`` hash alike, as do equal strings,
tuples of equal values and equal instants. The hash does not depend on the process (`str` hashing of
Python is salted per process, so it is not used).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import numbers
from typing import Any

import numpy as np

from storey._utils._imports import require
from storey.frames._dask_input import Part, conform_rows

__all__ = ["CLOCK", "HASH", "SEQ", "TAGS", "TIME", "key_hashes", "stable_hash", "tag_part", "tagged_meta"]

SEQ = "__storey_seq"
TIME = "__storey_time"
CLOCK = "__storey_clock"
HASH = "__storey_key_hash"
TAGS = [SEQ, TIME, CLOCK, HASH]


def _canonical(value: Any, out: list[str]) -> None:
    """Append a text form of `value` that is equal for equal keys of the usual types."""
    if value is None:
        out.append("N")
    elif isinstance(value, str):
        out.append("s" + value)
    elif isinstance(value, bool | np.bool_ | numbers.Integral):
        out.append("i" + str(int(value)))
    elif isinstance(value, float | decimal.Decimal | numbers.Real):
        if value != value:  # NaN
            out.append("nan")
        elif value in (float("inf"), float("-inf")):
            out.append("f" + repr(float(value)))
        elif int(value) == value:
            out.append("i" + str(int(value)))
        else:
            f = float(value)
            out.append("f" + repr(f) if f == value else "d" + str(value))
    elif isinstance(value, bytes):
        out.append("b" + value.hex())
    elif isinstance(value, tuple):
        out.append("(")
        for v in value:
            _canonical(v, out)
            out.append(",")
        out.append(")")
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
            out.append("tz" + value.isoformat())
        else:
            out.append("t" + value.isoformat())
    else:
        out.append("r" + type(value).__name__ + repr(value))


def stable_hash(value: Any) -> int:
    """A 63-bit hash of a key value, the same in every process.

    Examples
    --------
    >>> stable_hash(1) == stable_hash(1.0) == stable_hash(True), stable_hash("a") == stable_hash("b")
    (True, False)
    >>> stable_hash(("a", 2)) == stable_hash(("a", 2.0))
    True
    """
    parts: list[str] = []
    _canonical(value, parts)
    digest = hashlib.blake2b("".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def key_hashes(table: Any, key: Any, where: str) -> np.ndarray:
    """int64 `stable_hash` of every row's key (`key` as `aggregate` takes it: columns or a callable)."""
    from storey.frames._keys import KeyEncoder
    from storey.sources._arrow import rows_from_batch

    encoder = KeyEncoder(key, where)
    ids = []
    for rb in table.to_batches():
        ids.append(encoder.encode(rb, lambda rb=rb: rows_from_batch(rb)))
    if not ids:
        return np.empty(0, dtype=np.int64)
    per_key = np.fromiter((stable_hash(v) for v in encoder.values), dtype=np.int64, count=len(encoder))
    return per_key[np.concatenate(ids)]


def tag_part(part: Part, offset: int, clock_in: int, key: Any, schema: Any, where: str, clocked: bool) -> Any:
    """The rows of `part` as a pandas DataFrame (Arrow-backed columns, `schema`) with the tag columns
    (`TIME` and `CLOCK` only when `clocked`: the policy has timers)."""
    pd = require("pandas")
    table = (
        conform_rows(part.table, schema, f" ({part.source})") if part.table.num_rows else schema.empty_table()
    )
    n = table.num_rows
    times = np.ascontiguousarray(part.times, dtype=np.int64)
    clock = np.maximum.accumulate(times) if n else times
    np.maximum(clock, np.int64(clock_in), out=clock)
    hashes = key_hashes(table, key, where)
    df = table.to_pandas(types_mapper=pd.ArrowDtype)
    columns = {SEQ: np.arange(offset, offset + n, dtype=np.int64), TIME: times, CLOCK: clock, HASH: hashes}
    tags = pd.DataFrame(
        {k: v for k, v in columns.items() if clocked or k not in (TIME, CLOCK)}, index=df.index
    )
    return pd.concat([df, tags], axis=1)


def tagged_meta(schema: Any, clocked: bool) -> Any:
    """The empty DataFrame `tag_part` returns for `schema` (Dask's ``meta``)."""
    pd = require("pandas")
    df = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
    for name in TAGS:
        if clocked or name not in (TIME, CLOCK):
            df[name] = np.empty(0, dtype=np.int64)
    return df
