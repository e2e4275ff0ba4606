"""CSV parsing with the rules of `ReadCSV` (spec STEPS.md §5.3), shared with `storey.frames`.

`CSVParser` turns CSV files into `CSVBatch` objects: typed values in column-major lists, the physical line
on which each row starts and, when a time field is set, the event time of each row in epoch ns.

Rules (all of them live here):

- Python's `csv` module (RFC 4180, quoted fields may span lines), files decoded as UTF-8 (a leading BOM is
  dropped). Blank lines are ignored. A reported line is the 1-based physical line where the row starts.
- ``header=True``: the first row of each file is the header; all files must have the same header.
- Type inference: the type of a column is fixed by its first non-empty value, trying ``true``/``false``
  (any case) → bool, `int` → int, `float` → float, a datetime (``strptime(timestamp_format)`` or ISO 8601)
  → datetime, else str. An empty field is ``None``. A later float value widens an int column to float; any
  other misfit is a parse error. Datetimes are aware UTC (naive means UTC; a `pandas.Timestamp` when
  sub-microsecond digits are present). With ``type_inference=False`` every value is a str (or ``None``).
- Time field: the row's value converted as `Event` times are (datetime exact; int/float epoch ms; str via
  ``timestamp_format`` or ISO 8601). Empty fails with `MissingFieldError`; unparseable is a parse error.
- Parse errors (wrong field count, misfit value, unparseable time, undecodable bytes, malformed CSV, a
  missing header line): ``on_error='raise'`` raises `CSVParseError` *after* the batch of the rows before it
  was yielded; ``on_error='skip'`` drops the row, counts it in `CSVParser.skipped_rows` and logs the first
  10 per file at WARNING.

Types are inferred once per parser, across the files it reads, so one parser is one logical stream.

Speed: rows are read in batches and converted column by column with C-level `map` calls; a batch that
contains anything unusual (an error, a type change) is redone row by row by the reference path, which
defines the semantics. The fast path only accepts batches for which it gives the same values.

Examples
--------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.csv")
>>> _ = open(path, "w").write("k,t,v\\na,2024-01-01T00:00:00Z,1\\nb,2024-01-01T00:00:01Z,\\n")
>>> parser = CSVParser(header=True, time_field="t")
>>> [batch] = parser.read(path)
>>> batch.names, batch.columns[2], list(batch.lines), batch.time_ns
(['k', 't', 'v'], [1, None], [2, 3], [1704067200000000000, 1704067201000000000])
>>> parser.kinds
['str', 'datetime', 'int']
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice, repeat
from operator import attrgetter, sub
from typing import IO, Any

import numpy as np

from storey._time import from_ns, to_ns
from storey._utils._paths import open_input
from storey.errors import CSVParseError, MissingFieldError

__all__ = ["CSVBatch", "CSVParser", "UnknownFieldError", "check_field", "parse_datetime"]

logger = logging.getLogger("storey")

UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)
_BOOLS = {"true": True, "false": False}
_SURROGATE = re.compile("[\udc80-\udcff]")
_LONG_FRACTION = re.compile(r"[.,][0-9]{7}")
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_LOGGED_SKIPS = 10
_US_MIN = -(2**63 - 1) // 1000 + 1  # µs values whose ns form fits the range of `to_ns`
_US_MAX = (2**63 - 1) // 1000
_MS_MAX = (2**63 - 1) // 1_000_000
_fromiso = _dt.datetime.fromisoformat
_combine = _dt.datetime.combine
_days = attrgetter("days")
_seconds = attrgetter("seconds")
_micros = attrgetter("microseconds")
_tzinfo = attrgetter("tzinfo")

KINDS = ("bool", "int", "float", "datetime", "str")


class UnknownFieldError(ValueError):
    """A key/time/id field is absent from a file's header, or its index is out of range.

    A `ValueError` (as `ReadCSV` specifies); `storey.frames` catches it to report a missing column.
    """

    def __init__(self, message: str, field: Any, path: str) -> None:
        super().__init__(message)
        self.field = field
        self.path = path


class _RowError(Exception):
    """A row cannot be parsed (becomes a `CSVParseError` with the file and line)."""


# --------------------------------------------------------------------------------- value parsing
def _utc(d: _dt.datetime) -> _dt.datetime:
    tz = d.tzinfo
    if tz is UTC:
        return d
    if tz is None or d.utcoffset() is None:
        return _combine(d, d.time(), UTC)  # about 4x faster than d.replace(tzinfo=UTC)
    return d.astimezone(UTC)


def parse_datetime(text: str, timestamp_format: str | None = None) -> _dt.datetime:
    """Parse one datetime value as `ReadCSV` does: aware UTC, naive read as UTC.

    With `timestamp_format`, ``datetime.strptime``; otherwise ISO 8601 (a `pandas.Timestamp` is returned
    when more than 6 fractional digits carry sub-microsecond precision).

    Raises
    ------
    ValueError
        The text is not a datetime.

    Examples
    --------
    >>> parse_datetime("2024-01-01T10:00:00+02:00")
    datetime.datetime(2024, 1, 1, 8, 0, tzinfo=datetime.timezone.utc)
    >>> parse_datetime("15/02/2020 02:00:00", "%d/%m/%Y %H:%M:%S")
    datetime.datetime(2020, 2, 15, 2, 0, tzinfo=datetime.timezone.utc)
    """
    if timestamp_format is not None:
        return _utc(_dt.datetime.strptime(text, timestamp_format))
    try:
        d = _fromiso(text)
    except ValueError:
        d = None
    if d is not None and not _LONG_FRACTION.search(text):
        return _utc(d)
    return from_ns(to_ns(text))  # whitespace, 'z', more than 6 fractional digits; ValueError otherwise


def _parse_bool(text: str) -> bool:
    return _BOOLS[text.lower()]


def _infer_kind(text: str, timestamp_format: str | None) -> str:
    if text.lower() in _BOOLS:
        return "bool"
    for kind, fn in (("int", int), ("float", float)):
        try:
            fn(text)
        except ValueError:
            continue
        return kind
    try:
        parse_datetime(text, timestamp_format)
    except (ValueError, OverflowError):
        return "str"
    return "datetime"


def check_field(field: Any, header: bool, what: str, step: str) -> None:
    """Validate a field given by index (an int >= 0) or by name (needs a header).

    Raises
    ------
    ValueError
        A name without a header, or a negative index.
    TypeError
        Neither an int nor a str.
    """
    if field is None:
        return
    if isinstance(field, bool) or not isinstance(field, int | str):
        msg = f"step {step!r}: {what} must be a column index or name, got {type(field).__name__}: {field!r}"
        raise TypeError(msg)
    if isinstance(field, str) and not header:
        msg = f"step {step!r}: {what} {field!r} is a column name, which needs header=True"
        raise ValueError(msg)
    if isinstance(field, int) and field < 0:
        msg = f"step {step!r}: {what} must be a column index >= 0, got {field}"
        raise ValueError(msg)


# --------------------------------------------------------------------------------------- batches
class CSVBatch:
    """Parsed rows of one file.

    Attributes
    ----------
    path
        The file, as given.
    names
        The header (``None`` without a header).
    columns
        One list (or tuple) of typed values per column, in column order.
    lines
        The 1-based physical line where each row starts.
    time_ns
        The event time of each row in epoch ns when the parser has a time field, else ``None``.
    """

    __slots__ = ("columns", "lines", "names", "path", "time_ns")

    def __init__(
        self,
        path: str,
        names: list[str] | None,
        columns: list[Sequence[Any]],
        lines: Sequence[int],
        time_ns: list[int] | None,
    ) -> None:
        self.path = path
        self.names = names
        self.columns = columns
        self.lines = lines
        self.time_ns = time_ns

    def __len__(self) -> int:
        return len(self.lines)

    def __repr__(self) -> str:
        return f"CSVBatch(path={self.path!r}, rows={len(self)}, names={self.names!r})"


class _Lines:
    """Physical lines of a binary file, decoded as UTF-8 in large chunks.

    Undecodable bytes become lone surrogates (and set `dirty`), so that the row holding them can be
    reported. Iterating gives a C-level chain of `io.StringIO` line iterators (``newline=''``).
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.dirty = False

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[io.StringIO]:
        read = self._f.read
        rest = b""
        first = True
        while True:
            data = read(_CHUNK)
            if first:
                while len(data) < 3 and data and _BOM.startswith(data):  # a BOM split by a short read
                    more = read(_CHUNK)
                    if not more:
                        break
                    data += more
                if data.startswith(_BOM):
                    data = data[3:]
                first = False
            if not data:
                if rest:
                    yield self._text(rest)
                return
            if rest:
                data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            yield self._text(data[: cut + 1])

    def _text(self, raw: bytes) -> io.StringIO:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "surrogateescape")
            self.dirty = True
        return io.StringIO(text, newline="")


def _breaks(row: list[str]) -> int:
    """Line breaks inside the fields of a row (a quoted field keeps them verbatim)."""
    n = 0
    for f in row:
        if "\n" in f or "\r" in f:
            n += f.count("\n") + f.count("\r") - f.count("\r\n")
    return n


class CSVParser:
    """Parse CSV files into typed column batches with `ReadCSV`'s rules.

    Parameters
    ----------
    header
        The first row of each file is the header (all files must have the same one).
    type_inference
        Infer column types; with ``False`` every value is a str (empty fields are ``None``).
    timestamp_format
        `strptime` format of datetime values (default ISO 8601).
    time_field
        Column index (``0`` is valid) or name whose value gives `CSVBatch.time_ns`.
    fields
        Other columns (index or name) that must exist; names are checked when a header is read, indices
        when the first row is read (`ValueError`). `field_index` resolves them.
    on_error
        ``'raise'`` or ``'skip'`` (see the module docstring).
    batch_size
        Rows per batch.
    step
        Name used in messages.

    Attributes
    ----------
    names
        The header of the first file (``None`` without a header).
    kinds
        The inferred kind of each column: ``'bool'``, ``'int'``, ``'float'``, ``'datetime'``, ``'str'`` or
        ``None`` while only empty values were seen.
    rows, skipped_rows
        Rows parsed, and rows dropped by ``on_error='skip'``.
    """

    def __init__(
        self,
        *,
        header: bool = False,
        type_inference: bool = True,
        timestamp_format: str | None = None,
        time_field: int | str | None = None,
        fields: Sequence[int | str | None] = (),
        on_error: str = "raise",
        batch_size: int = 4096,
        step: str = "ReadCSV",
    ) -> None:
        if on_error not in ("raise", "skip"):
            msg = f"step {step!r}: on_error must be 'raise' or 'skip', got {on_error!r}"
            raise ValueError(msg)
        if batch_size < 1:
            msg = f"step {step!r}: batch_size must be at least 1, got {batch_size!r}"
            raise ValueError(msg)
        check_field(time_field, header, "timestamp field", step)
        for f in fields:
            check_field(f, header, "field", step)
        self.header = bool(header)
        self.type_inference = bool(type_inference)
        self.timestamp_format = timestamp_format
        self.time_field = time_field
        self._fields = [f for f in fields if f is not None]
        self.on_error = on_error
        self.batch_size = int(batch_size)
        self.step = step
        self.names: list[str] | None = None
        self.kinds: list[str | None] = []
        self.rows = 0
        self.skipped_rows = 0
        self._n: int | None = None
        self._index: dict[Any, int] = {}
        self._ti: int | None = None
        self._skips_in_file = 0
        self._pending: BaseException | None = None
        self._convert_one: dict[str, Callable[[str], Any]] = {
            "bool": _parse_bool,
            "int": int,
            "float": float,
            "datetime": self._parse_dt,
            "str": str,
        }

    # ------------------------------------------------------------------------------------- public
    def field_index(self, field: int | str) -> int:
        """The column index of a field given by index or name (after the header or first row)."""
        return self._index[field]

    def read(self, path: str, storage_options: dict[str, Any] | None = None) -> Iterator[CSVBatch]:
        """Parse one file (local path or fsspec URL) into batches, in row order.

        Raises
        ------
        FileNotFoundError
            The file does not exist.
        CSVParseError
            A parse error with ``on_error='raise'`` (after yielding the rows before it).
        MissingFieldError
            An empty time field (after yielding the rows before it).
        ValueError
            A header different from the first file's, or a field absent from the header / out of range.
        """
        f = open_input(path, storage_options)
        try:
            yield from self._read(path, f)
        finally:
            f.close()

    # ------------------------------------------------------------------------------------ reading
    def _read(self, path: str, f: IO[bytes]) -> Iterator[CSVBatch]:
        self._skips_in_file = 0
        lines = _Lines(f)
        reader = csv.reader(lines)
        line = 0
        if self.header:
            ok, line = self._read_header(path, reader, lines)
            if not ok:
                return
        bs = self.batch_size
        while True:
            rows: list[list[str]] = []
            error: csv.Error | None = None
            try:
                rows.extend(islice(reader, bs))
            except csv.Error as exc:
                error = exc
            if not rows and error is None:
                return
            end = reader.line_num
            starts: Sequence[int]
            if error is None and end - line == len(rows):
                starts = range(line + 1, end + 1)
                next_line = end + 1
            else:
                starts, next_line = self._starts(rows, line)
            line = end
            if rows:
                batch = self._convert(path, rows, starts, lines.dirty)
                if len(batch):
                    yield batch
                if self._pending is not None:
                    err, self._pending = self._pending, None
                    raise err
            if error is not None:
                self._bad_row(path, next_line, f"malformed CSV row: {error}")

    @staticmethod
    def _starts(rows: list[list[str]], line: int) -> tuple[list[int], int]:
        starts = []
        for row in rows:
            starts.append(line + 1)
            line += 1 + _breaks(row)
        return starts, line + 1

    def _read_header(self, path: str, reader: Any, lines: _Lines) -> tuple[bool, int]:
        line = 0
        while True:
            start = line + 1
            try:
                row = next(reader, None)
            except csv.Error as exc:
                self._bad_row(path, start, f"malformed header row: {exc}")
                return False, reader.line_num
            line = reader.line_num
            if row is None:
                self._bad_row(path, 1, "the file has no header line")
                return False, line
            if row:
                break
        if lines.dirty and any(map(_SURROGATE.search, row)):
            self._bad_row(path, start, "the header line holds bytes that are not valid UTF-8")
            return False, line
        if self.names is None:
            self.names = row
            self._set_width(path, start, row)
        elif row != self.names:
            msg = (
                f"step {self.step!r}: the header of {path!r} (line {start}) is {row!r}, "
                f"but the first file's header is {self.names!r}"
            )
            raise ValueError(msg)
        return True, line

    def _set_width(self, path: str, line: int, row: list[str]) -> None:
        """Fix the field count and resolve the needed fields (header, or first row without one)."""
        n = len(row)
        self._n = n
        self.kinds = [None if self.type_inference else "str"] * n
        wanted = [*self._fields, self.time_field] if self.time_field is not None else list(self._fields)
        for field in wanted:
            if isinstance(field, str):
                if field not in row:
                    msg = f"step {self.step!r}: field {field!r} is not in the header {row!r} of {path!r}"
                    raise UnknownFieldError(msg, field=field, path=path)
                self._index[field] = row.index(field)
            else:
                if field >= n:
                    msg = (
                        f"step {self.step!r}: field index {field} is out of range for the {n} columns "
                        f"of {path!r} (line {line})"
                    )
                    raise UnknownFieldError(msg, field=field, path=path)
                self._index[field] = field
        self._ti = None if self.time_field is None else self._index[self.time_field]

    # -------------------------------------------------------------------------------------- errors
    def _bad_row(self, path: str, line: int, reason: str) -> None:
        """Skip the row (counting and logging it) or raise `CSVParseError`."""
        if self.on_error == "skip":
            self.skipped_rows += 1
            self._skips_in_file += 1
            if self._skips_in_file <= _LOGGED_SKIPS:
                logger.warning("step %r: skipped a row of %r at line %d: %s", self.step, path, line, reason)
            return
        msg = f"step {self.step!r}: {reason} (file {path!r}, line {line})"
        raise CSVParseError(msg, path=path, line=line)

    # ---------------------------------------------------------------------------------- conversion
    def _convert(self, path: str, rows: list[list[str]], starts: Sequence[int], dirty: bool) -> CSVBatch:
        if self._n is None:
            first = next((i for i, r in enumerate(rows) if r), None)
            if first is None:
                return CSVBatch(path, self.names, [], [], None)
            self._set_width(path, starts[first], rows[first])
        n = self._n
        assert n is not None
        clean = set(map(len, rows)) == {n} and not (
            dirty and _SURROGATE.search("\x00".join(chain.from_iterable(rows)))
        )
        if clean:
            batch = self._convert_fast(path, rows, starts)
            if batch is not None:
                return batch
        return self._convert_slow(path, rows, starts, dirty)

    def _convert_fast(self, path: str, rows: list[list[str]], starts: Sequence[int]) -> CSVBatch | None:
        cols = list(zip(*rows, strict=False))  # every row has n fields (checked by the caller)
        kinds = list(self.kinds)
        values: list[Sequence[Any]] = []
        ti = self._ti
        time_ns = None
        for j, col in enumerate(cols):
            kind = kinds[j]
            if kind is None:
                first = next(filter(None, col), None)
                if first is None:
                    values.append([None] * len(col))
                    continue
                kind = kinds[j] = _infer_kind(first, self.timestamp_format)
            converted, ns = self._fast_column(kind, col)
            if converted is None:
                return None
            values.append(converted)
            if j == ti:
                time_ns = ns
        if ti is not None and time_ns is None:
            time_ns = self._fast_times(kinds[ti], values[ti])
            if time_ns is None:
                return None
        self.kinds = kinds
        self.rows += len(rows)
        return CSVBatch(path, self.names, values, starts, time_ns)

    def _fast_column(self, kind: str, col: tuple[str, ...]) -> tuple[Sequence[Any] | None, list[int] | None]:
        """Converted values (``None`` when the batch needs the reference path) and, for ISO datetime
        columns of one simple layout, their epoch ns."""
        empty = "" in col
        if kind == "str":
            return ([s or None for s in col] if empty else col), None
        if kind == "datetime":
            if self.timestamp_format is None:
                return _fast_iso(col, empty)
            conv: Callable[[str], Any] = self._parse_dt
        else:
            conv = self._convert_one[kind]
        try:
            if kind == "bool":
                if empty:
                    return [_BOOLS[s.lower()] if s else None for s in col], None
                return list(map(_BOOLS.__getitem__, map(str.lower, col))), None
            if empty:
                return [conv(s) if s else None for s in col], None
            return list(map(conv, col)), None
        except (ValueError, KeyError, OverflowError):
            return None, None

    def _fast_times(self, kind: str | None, values: Sequence[Any]) -> list[int] | None:
        if kind is None or None in values:
            return None
        if kind == "datetime":
            return _datetimes_ns(values)
        if kind == "str":
            if self.timestamp_format is None:
                dts, ns = _fast_iso(values, False)
                if ns is not None:
                    return ns
            else:
                try:
                    dts = [self._parse_dt(s) for s in values]
                except ValueError:
                    return None
            return None if dts is None else _datetimes_ns(dts)
        if kind == "int":
            arr = np.asarray(values)
            if arr.dtype != np.int64 or (arr.size and np.abs(arr).max() > _MS_MAX):
                return None
            return (arr * 1_000_000).tolist()
        if kind == "float":
            arr = np.asarray(values, dtype=np.float64)
            if not np.isfinite(arr).all():
                return None
            scaled = np.rint(arr * 1e6)
            if scaled.size and np.abs(scaled).max() > 9.2e18:
                return None
            return scaled.astype(np.int64).tolist()
        return None

    def _convert_slow(self, path: str, rows: list[list[str]], starts: Sequence[int], dirty: bool) -> CSVBatch:
        """The reference path: row by row, type changes committed only for accepted rows."""
        n = self._n
        ti = self._ti
        good: list[list[Any]] = []
        lines: list[int] = []
        times: list[int] = []
        for row, line in zip(rows, starts, strict=True):
            if not row:
                continue
            try:
                if len(row) != n:
                    msg = f"expected {n} fields, got {len(row)}"
                    raise _RowError(msg)
                if dirty and any(map(_SURROGATE.search, row)):
                    msg = "the row holds bytes that are not valid UTF-8"
                    raise _RowError(msg)
                values, changes = self._convert_row(row)
                if ti is not None:
                    times.append(self._time_one(values[ti], path, line))
            except _RowError as exc:
                try:
                    self._bad_row(path, line, str(exc))
                except CSVParseError as err:
                    self._pending = err
                    break
                continue
            except MissingFieldError as err:
                self._pending = err
                break
            if changes:
                for j, kind in changes.items():
                    self.kinds[j] = kind
            good.append(values)
            lines.append(line)
        self.rows += len(good)
        columns: list[Sequence[Any]] = (
            [list(c) for c in zip(*good, strict=False)] if good else [[] for _ in range(n or 0)]
        )
        return CSVBatch(path, self.names, columns, lines, times if ti is not None else None)

    def _convert_row(self, row: list[str]) -> tuple[list[Any], dict[int, str] | None]:
        kinds = self.kinds
        convert = self._convert_one
        out: list[Any] = []
        changes: dict[int, str] | None = None
        for j, s in enumerate(row):
            if not s:
                out.append(None)
                continue
            kind = kinds[j]
            if kind is None:
                kind = _infer_kind(s, self.timestamp_format)
                changes = changes or {}
                changes[j] = kind
            try:
                out.append(convert[kind](s))
            except (ValueError, KeyError, OverflowError):
                if kind != "int":
                    msg = f"column {self._name(j)}: {s!r} is not a {kind}"
                    raise _RowError(msg) from None
                try:
                    out.append(float(s))
                except ValueError:
                    msg = f"column {self._name(j)}: {s!r} is not an int or a float"
                    raise _RowError(msg) from None
                changes = changes or {}
                changes[j] = "float"
        return out, changes

    def _time_one(self, value: Any, path: str, line: int) -> int:
        if value is None:
            name = self._name(self._ti)  # type: ignore[arg-type]
            msg = f"step {self.step!r}: the timestamp field {name} is empty (file {path!r}, line {line})"
            raise MissingFieldError(msg)
        try:
            if isinstance(value, str):
                value = self._parse_dt(value)
            return to_ns(value)
        except (TypeError, ValueError, OverflowError) as exc:
            msg_0 = f"cannot parse the timestamp {value!r}: {exc}"
            raise _RowError(msg_0) from None

    def _parse_dt(self, text: str) -> _dt.datetime:
        return parse_datetime(text, self.timestamp_format)

    def _name(self, j: int) -> str:
        if self.names is not None:
            return repr(self.names[j])
        return str(j)


# ------------------------------------------------------------------------------ vectorised helpers
def _fast_iso(col: Sequence[str], empty: bool) -> tuple[list[Any] | None, list[int] | None]:
    """ISO datetimes of a whole column and, for one simple layout, their epoch ns.

    Returns ``(None, None)`` when a value needs the per-value path.
    """
    if not empty and col:
        fixed = _fixed_layout_ns(col)
        if fixed is not None:
            ns, tail = fixed
            try:
                dts = list(map(_fromiso, col)) if tail else [_fromiso(s + "+00:00") for s in col]
            except ValueError:
                return None, None
            return dts, ns
    try:
        if empty:
            dts = [_fromiso(s) if s else None for s in col]
        else:
            dts = list(map(_fromiso, col))
    except ValueError:
        return None, None
    if _has_long_fraction(col):
        return None, None
    tzs = set(map(_tzinfo, filter(None, dts))) if empty else set(map(_tzinfo, dts))
    if tzs and tzs != {UTC}:
        dts = [None if d is None else _utc(d) for d in dts]
    return dts, None


_SIMPLE_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?P<frac>\.[0-9]{1,6})?(?P<tail>Z|\+00:00)?"
)
_DATE_TIME_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
_MAX_DAYS = 106_750  # |days| below this keeps every ns of the day inside int64


def _fixed_layout_ns(col: Sequence[str]) -> tuple[list[int] | None, str] | None:
    """Epoch ns of a column whose values all have the layout of the first one, when that layout is
    ``YYYY-MM-DD(T| )HH:MM:SS[.f{1,6}]`` followed by nothing (naive, read as UTC), ``Z`` or ``+00:00``.

    Returns ``(ns, tail)`` (``ns`` is ``None`` outside the ns range), or ``None`` when the layout does not
    apply. Digits are checked and decoded with numpy; the values themselves are validated by
    `datetime.fromisoformat`, which the caller runs on the same strings.
    """
    first = col[0]
    m = _SIMPLE_ISO.fullmatch(first)
    if m is None:
        return None
    width = len(first)
    try:
        raw = "".join(col).encode("ascii")
    except UnicodeEncodeError:
        return None
    n = len(col)
    if len(raw) != n * width:
        return None
    a = np.frombuffer(raw, np.uint8).reshape(n, width)
    frac = len(m.group("frac") or ".") - 1
    digit_cols = _DATE_TIME_DIGITS + list(range(20, 20 + frac))
    digit = np.zeros(width, dtype=bool)
    digit[digit_cols] = True
    if not same_layout(a, digit):
        return None
    d = a[:, digit_cols].astype(np.int64) - 48
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    days = _days_from_civil(year, d[:, 4] * 10 + d[:, 5], d[:, 6] * 10 + d[:, 7])
    tail = m.group("tail") or ""
    if days.min() < -_MAX_DAYS or days.max() > _MAX_DAYS:
        return None, tail
    seconds = (
        (days * 24 + d[:, 8] * 10 + d[:, 9]) * 3600
        + (d[:, 10] * 10 + d[:, 11]) * 60
        + d[:, 12] * 10
        + d[:, 13]
    )
    micros = np.zeros(n, dtype=np.int64)
    for k in range(frac):
        micros = micros * 10 + d[:, 14 + k]
    micros *= 10 ** (6 - frac)
    return (seconds * 1_000_000_000 + micros * 1000).tolist(), tail


def same_layout(rows: np.ndarray, digit: np.ndarray) -> bool:
    """Whether every row of the ``uint8`` matrix `rows` (one fixed-width value per row) holds an ASCII digit
    where `digit` is set and the first row's byte everywhere else.

    Examples
    --------
    >>> rows = np.frombuffer(b"12:3456:78", np.uint8).reshape(2, 5)
    >>> same_layout(rows, np.array([True, True, False, True, True]))
    True
    """
    lo = np.where(digit, 48, rows[0]).astype(np.uint8)
    span = np.where(digit, 9, 0).astype(np.uint8)
    return bool(((rows - lo) <= span).all())  # uint8 wraps: a byte below `lo` becomes large


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm, vectorised)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _has_long_fraction(col: Sequence[str]) -> bool:
    """Whether a value has more than 6 fractional digits (``[.,][0-9]{7}``), checked on the whole column."""
    text = "\n".join(col).encode("utf-8", "surrogateescape").translate(_DIGITS_TO_ZERO)
    return b".0000000" in text or b",0000000" in text


def _datetimes_ns(values: Sequence[Any]) -> list[int] | None:
    """Exact epoch ns of aware UTC datetimes (``None`` if any value is not one or is out of range)."""
    if set(map(type, values)) != {_dt.datetime}:
        return None
    n = len(values)
    deltas = list(map(sub, values, repeat(_EPOCH, n)))
    days = np.fromiter(map(_days, deltas), np.int64, n)
    secs = np.fromiter(map(_seconds, deltas), np.int64, n)
    micros = np.fromiter(map(_micros, deltas), np.int64, n)
    if n and (days.min() < -110_000 or days.max() > 110_000):
        return None
    us = (days * 86_400 + secs) * 1_000_000 + micros
    if n and (us.min() < _US_MIN or us.max() > _US_MAX):
        return None
    return (us * 1000).tolist()
