"""The typed-string value encoding shared by the drivers (spec STEPS.md §9.2).

Every attribute value is stored as bytes that start with a one-letter type tag and a colon:

=======  ==============================  ==========================================================
tag      Python value                    payload
=======  ==============================  ==========================================================
``n:``   ``None``                        empty
``b:``   ``bool``                        ``0`` or ``1``
``i:``   ``int`` (signed 64-bit)         decimal
``f:``   ``float``                       ``repr(float)``: bit-exact, including ``inf``, ``-0.0``
``s:``   ``str``                         UTF-8
``y:``   ``bytes``                       the raw bytes
``t:``   aware ``datetime``              ISO 8601 in UTC with 9 fraction digits (ns)
=======  ==============================  ==========================================================

numpy scalars are stored as the matching Python type. A naive datetime is read as UTC (the rule of
STEPS.md §1.1). Datetimes load as UTC ``datetime`` objects, or as a ``pandas.Timestamp`` when they carry
sub-microsecond digits. A NaN loads as a NaN (its payload is not kept). Anything else (and an int outside
the signed 64-bit range, which the V3IO store could not hold either) fails with the driver's error class,
naming the attribute, so that every driver accepts exactly the same values.

`SQLiteDriver` stores these bytes in a BLOB column, `RedisDriver` as hash field values, and `NoopDriver`
keeps them in its dict, which gives it the same value semantics as the real stores.

Examples
--------
>>> from storey.errors import StoreyError
>>> encode_value(-0.0, name="x", error_class=StoreyError, where="test")
b'f:-0.0'
>>> decode_value(b"i:42", name="x", error_class=StoreyError, where="test")
42
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from storey.errors import StoreyError

__all__ = ["decode_record", "decode_schema", "decode_value", "encode_record", "encode_schema", "encode_value"]

_UTC = _dt.UTC
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_TIME = re.compile(
    rb"(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d\d:\d\d(?::\d\d)?)?"
)


def encode_value(value: Any, *, name: str, error_class: type[StoreyError], where: str) -> bytes:
    """Encode one attribute value as tagged bytes.

    Parameters
    ----------
    value
        The value to store.
    name
        The attribute name, for the error message.
    error_class
        The driver's error class.
    where
        Which driver, table and key, for the error message.

    Raises
    ------
    StoreyError
        ``error_class``, naming the attribute, for a value no driver can store.

    Examples
    --------
    >>> import datetime
    >>> encode_value(datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    ...              name="t", error_class=StoreyError, where="test")
    b't:2024-01-02T03:04:05.000006000+00:00'
    """
    kind = type(value)
    # Exact-type dispatch first: the common cases cost one dict lookup.
    encoder = _EXACT.get(kind)
    if encoder is not None:
        return encoder(value, name, error_class, where)
    if isinstance(value, bool | np.bool_):
        return b"b:1" if value else b"b:0"
    if isinstance(value, int | np.integer):
        return _encode_int(int(value), name, error_class, where)
    if isinstance(value, float | np.floating):
        return b"f:" + repr(float(value)).encode()
    if isinstance(value, str):
        return _encode_str(value, name, error_class, where)
    if isinstance(value, bytes | bytearray | memoryview):
        return b"y:" + bytes(value)
    if isinstance(value, _dt.datetime):
        return _encode_datetime(value, name, error_class, where)
    if isinstance(value, np.datetime64) and not np.isnat(value):
        from storey._time import from_ns, to_ns

        return _encode_datetime(from_ns(to_ns(value)), name, error_class, where)
    msg = (
        f"{where}: cannot store attribute {name!r}: unsupported type {kind.__name__} "
        "(expected None, bool, int, float, str, bytes or datetime)"
    )
    raise error_class(msg)


def _encode_none(value: Any, name: str, error_class: type[StoreyError], where: str) -> bytes:
    return b"n:"


def _encode_bool(value: bool, name: str, error_class: type[StoreyError], where: str) -> bytes:
    return b"b:1" if value else b"b:0"


def _encode_int(value: int, name: str, error_class: type[StoreyError], where: str) -> bytes:
    if _I64_MIN <= value <= _I64_MAX:
        return b"i:%d" % value
    msg = f"{where}: cannot store attribute {name!r}: int {value} does not fit in 64 bits"
    raise error_class(msg)


def _encode_float(value: float, name: str, error_class: type[StoreyError], where: str) -> bytes:
    return b"f:" + repr(value).encode()


def _encode_str(value: str, name: str, error_class: type[StoreyError], where: str) -> bytes:
    try:
        return b"s:" + value.encode()
    except UnicodeEncodeError as exc:
        msg = f"{where}: cannot store attribute {name!r}: the str is not valid UTF-8 ({exc.reason})"
        raise error_class(msg) from exc


def _encode_bytes(value: bytes, name: str, error_class: type[StoreyError], where: str) -> bytes:
    return b"y:" + value


def _encode_datetime(value: _dt.datetime, name: str, error_class: type[StoreyError], where: str) -> bytes:
    if type(value).__name__ == "NaTType":
        msg = f"{where}: cannot store attribute {name!r}: NaT is not a time (store None instead)"
        raise error_class(msg)
    nanos = int(getattr(value, "nanosecond", 0))  # pandas.Timestamp carries ns below the microsecond
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=_UTC)
        utc = value.astimezone(_UTC)
    except (OverflowError, ValueError) as exc:
        msg = f"{where}: cannot store attribute {name!r}: datetime {value!r} is out of range in UTC"
        raise error_class(msg) from exc
    frac = utc.microsecond * 1000 + nanos
    text = (
        f"t:{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{frac:09d}+00:00"
    )
    return text.encode()


_EXACT = {
    type(None): _encode_none,
    bool: _encode_bool,
    int: _encode_int,
    float: _encode_float,
    str: _encode_str,
    bytes: _encode_bytes,
    _dt.datetime: _encode_datetime,
}


def encode_record(
    attributes: Mapping[str, Any], *, error_class: type[StoreyError], where: str
) -> dict[str, bytes]:
    """Encode every attribute of a record; names must be non-empty `str`.

    Everything is encoded before anything is written, so an unsupported value leaves the store untouched.
    """
    out = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not name:
            msg = f"{where}: attribute names must be non-empty str, got {name!r}"
            raise error_class(msg)
        out[name] = encode_value(value, name=name, error_class=error_class, where=where)
    return out


def decode_record(
    items: Iterable[tuple[str, bytes]], *, error_class: type[StoreyError], where: str
) -> dict[str, Any]:
    """Decode ``(name, encoded value)`` pairs into a record."""
    return {name: decode_value(data, name=name, error_class=error_class, where=where) for name, data in items}


def decode_value(data: bytes, *, name: str, error_class: type[StoreyError], where: str) -> Any:
    """Decode tagged bytes written by `encode_value`.

    Raises
    ------
    StoreyError
        ``error_class``, naming the attribute, for bytes that are not a valid encoding.

    Examples
    --------
    >>> decode_value(b"f:nan", name="x", error_class=StoreyError, where="test")
    nan
    >>> decode_value(b"y:\\x00\\xff", name="x", error_class=StoreyError, where="test")
    b'\\x00\\xff'
    """
    tag = data[:2]
    payload = data[2:]
    try:
        if tag == b"y:":
            return bytes(payload)
        if tag == b"s:":
            return payload.decode()
        if tag == b"f:":
            return float(payload)
        if tag == b"i:":
            return int(payload)
        if tag == b"n:" and not payload:
            return None
        if tag == b"b:" and payload in (b"0", b"1"):
            return payload == b"1"
        if tag == b"t:":
            return _decode_datetime(bytes(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"{where}: attribute {name!r} holds an invalid {tag.decode(errors='replace')!r} value"
        raise error_class(msg) from exc
    msg = f"{where}: attribute {name!r} holds bytes that are not a storey typed value: {bytes(data[:20])!r}"
    raise error_class(msg)


def _decode_datetime(payload: bytes) -> _dt.datetime:
    match = _TIME.fullmatch(payload)
    if match is None:
        msg = f"not an ISO 8601 time: {payload!r}"
        raise ValueError(msg)
    tz = match.group("tz") or b"+00:00"
    if tz == b"Z":
        tz = b"+00:00"
    value = _dt.datetime.fromisoformat((match.group("base") + tz).decode())
    frac = (match.group("frac") or b"").ljust(9, b"0")
    micros, nanos = int(frac[:6]), int(frac[6:])
    value = value.replace(microsecond=micros).astimezone(_UTC)
    if nanos:
        pd = sys.modules.get("pandas")
        if pd is None:
            from storey._utils._imports import require

            pd = require("pandas")
        return pd.Timestamp(value).replace(nanosecond=nanos)
    return value


def encode_schema(schema: Mapping[str, Any], *, error_class: type[StoreyError], where: str) -> str:
    """The schema document as JSON text (the form every driver stores)."""
    if not isinstance(schema, Mapping):
        msg = f"{where}: the schema must be a mapping, got {type(schema).__name__}"
        raise error_class(msg)
    try:
        return json.dumps(schema, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        msg = f"{where}: the schema is not JSON-serialisable: {exc}"
        raise error_class(msg) from exc


def decode_schema(text: str | bytes, *, error_class: type[StoreyError], where: str) -> dict[str, Any]:
    """Parse a stored schema document."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        msg = f"{where}: the stored schema is not valid JSON: {exc}"
        raise error_class(msg) from exc
    if not isinstance(doc, dict):
        msg = f"{where}: the stored schema is not a JSON object: {type(doc).__name__}"
        raise error_class(msg)
    return doc
