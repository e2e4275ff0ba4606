"""The per-key state blob, format 1 (spec AGGREGATIONS.md §7.2); little-endian, deterministic.

====================  ==========================================================================
part                  encoding
====================  ==========================================================================
magic                 ``b"STB1"``
high-water ``H``      i64 ns
period ``P``          i64 ns (checked against the plan on load)
field list            u16 ``F``, then ``F`` × (u8 length + ASCII name), canonical order
tiles                 u32 ``T``, then ``T`` × i64 tile indices, strictly ascending
columns               per field in the listed order, ``T`` values: i64 for ``n``/``ft``/``lt``,
                      f64 (raw IEEE bits) for the rest
====================  ==========================================================================

Only tiles with ``n > 0`` at or above the retention bound (``M − 2N + 2``; fixed windows ``M − 3N + 2``)
are written, so equal states give byte-identical blobs whatever tiles a process happened to keep.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from storey.aggregations.kernels import get_kernel, kernel_names
from storey.errors import SchemaMismatchError

if TYPE_CHECKING:
    from storey.aggregations.state import AggregatorPlan, KeyState

__all__ = [
    "MAGIC",
    "decode",
    "decode_state",
    "encode",
    "encode_rows",
    "encode_state",
    "field_dtype",
    "field_list",
]

MAGIC = b"STB1"
_HEAD = struct.Struct("<4sqq")
_U32 = struct.Struct("<I")
_LITTLE = sys.byteorder == "little"


def field_dtype(name: str) -> str:
    """``'i8'`` or ``'f8'``: the declared dtype of a kernel field (``n``, ``ft``, ``lt`` are i8)."""
    for kernel in kernel_names():
        for field, dtype in get_kernel(kernel).fields:
            if field == name:
                return dtype
    msg = f"unknown state field {name!r} (no registered kernel declares it)"
    raise ValueError(msg)


def encode(
    H: int,
    period_ns: int,
    fields: Sequence[str],
    tiles: Sequence[int],
    columns: Sequence[Any],
    dtypes: Sequence[str] | None = None,
) -> bytes:
    """Encode a state given column-wise (the batch engine's natural layout).

    Parameters
    ----------
    H, period_ns
        High-water time and tile length, ns.
    fields
        Field names in canonical order.
    tiles
        Tile indices, strictly ascending; the caller passes only retained tiles with ``n > 0``.
    columns
        One sequence (or array) per field, each of length ``len(tiles)``.
    dtypes
        The fields' `field_dtype` when the caller knows them.

    Examples
    --------
    >>> blob = encode(10, 5, ["n", "s"], [1, 2], [[1, 2], [0.5, -0.0]])
    >>> decode(blob)[2:4]
    (('n', 's'), [1, 2])
    """
    n_tiles = len(tiles)
    parts = [_HEAD.pack(MAGIC, int(H), int(period_ns)), field_list(fields)]
    keys = np.asarray(tiles, dtype="<i8")
    if n_tiles > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        msg = "blob tiles must be strictly ascending"
        raise ValueError(msg)
    parts.append(struct.pack("<I", n_tiles))
    parts.append(keys.tobytes())
    if dtypes is None:
        dtypes = [field_dtype(name) for name in fields]
    for name, column, dtype in zip(fields, columns, dtypes, strict=True):
        arr = np.asarray(column, dtype="<" + dtype)
        if arr.shape != (n_tiles,):
            msg = f"blob column {name!r} has {arr.shape[0] if arr.ndim else 0} values for {n_tiles} tiles"
            raise ValueError(msg)
        parts.append(arr.tobytes())
    return b"".join(parts)


def field_list(fields: Sequence[str]) -> bytes:
    """The field-list part of a blob: u16 count, then each name as u8 length + ASCII."""
    return struct.pack("<H", len(fields)) + b"".join(
        struct.pack("<B", len(raw)) + raw for raw in (name.encode("ascii") for name in fields)
    )


def encode_rows(H: int, period_ns: int, fields: bytes, rows: np.ndarray) -> bytes:
    """`encode` from a state's rows: ``rows[j]`` is tile ``j``'s index, then its fields in the order of
    `fields` (a `field_list`), as int64 words (float fields as their IEEE bits). The rows are trusted: only
    retained tiles with ``n > 0``, strictly ascending (the compiled states' buffers keep them so).

    Examples
    --------
    >>> rows = np.array([[1, 1, np.float64(0.5).view(np.int64)], [2, 2, 0]], np.int64)
    >>> decode(encode_rows(10, 5, field_list(["n", "s"]), rows)) == decode(
    ...     encode(10, 5, ["n", "s"], [1, 2], [[1, 2], [0.5, 0.0]]))
    True
    """
    columns = rows.T  # the blob's tiles then its columns are the rows transposed: one copy
    return b"".join(
        (
            _HEAD.pack(MAGIC, H, period_ns),
            fields,
            _U32.pack(len(rows)),
            columns.tobytes() if _LITTLE else columns.astype("<i8").tobytes(),
        )
    )


def decode(blob: bytes) -> tuple[int, int, tuple[str, ...], list[int], list[list[Any]]]:
    """Decode a blob into ``(H, P, fields, tiles, columns)`` (columns as lists of Python scalars)."""
    try:
        magic, H, period_ns = _HEAD.unpack_from(blob, 0)
        if magic != MAGIC:
            msg = f"not a storey state blob (magic {magic!r}, expected {MAGIC!r})"
            raise ValueError(msg)
        pos = _HEAD.size
        (n_fields,) = struct.unpack_from("<H", blob, pos)
        pos += 2
        fields = []
        for _ in range(n_fields):
            (length,) = struct.unpack_from("<B", blob, pos)
            fields.append(bytes(blob[pos + 1 : pos + 1 + length]).decode("ascii"))
            pos += 1 + length
        (n_tiles,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        tiles = np.frombuffer(blob, dtype="<i8", count=n_tiles, offset=pos).tolist()
        pos += 8 * n_tiles
        columns = []
        for name in fields:
            columns.append(
                np.frombuffer(blob, dtype="<" + field_dtype(name), count=n_tiles, offset=pos).tolist()
            )
            pos += 8 * n_tiles
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValueError) and "storey state blob" in str(exc):
            raise
        msg = f"corrupt storey state blob ({len(blob)} bytes): {exc}"
        raise ValueError(msg) from None
    if pos != len(blob):
        msg = f"corrupt storey state blob: {len(blob) - pos} trailing bytes"
        raise ValueError(msg)
    return H, period_ns, tuple(fields), tiles, columns


def encode_state(state: KeyState) -> bytes:
    """Encode a `KeyState` (only retained tiles; rows are non-empty by construction)."""
    plan = state.plan
    keys, rows = state.retained()
    columns = [[row[j] for row in rows] for j in range(len(plan.row_fields))]
    return encode(state.H, plan.period_ns, plan.row_fields, keys, columns)


def decode_state(plan: AggregatorPlan, blob: bytes) -> KeyState:
    """Decode a blob into a `KeyState` of `plan`.

    Raises
    ------
    SchemaMismatchError
        The blob's period or field list differs from the plan's (the schema changed under the data).
    ValueError
        Not a storey blob, or corrupt.
    """
    H, period_ns, fields, tiles, columns = decode(blob)
    if period_ns != plan.period_ns:
        msg = f"aggregator {plan.name!r}: stored state has period_ns {period_ns}, expected {plan.period_ns}"
        raise SchemaMismatchError(msg)
    if fields != plan.row_fields:
        expected = list(plan.row_fields)
        msg = f"aggregator {plan.name!r}: stored state has fields {list(fields)}, expected {expected}"
        raise SchemaMismatchError(msg)
    rows = list(zip(*columns, strict=True)) if tiles else []
    return plan.state_from_tiles(H, tiles, rows)
