"""CSV files as bounded `InputBatch`es holding exactly the values `ReadCSV` builds (STEPS.md §5.3).

The rules are those of `storey.sources._csvparse.CSVParser` (``header=True``), which this module drives;
nothing here decides a type, a value or an error on its own, except on the vectorised path below, which only
accepts input for which it provably gives the parser's values and falls back to the parser otherwise.

Two paths, one result
---------------------
*Parser path.* `CSVParser.read` gives typed Python values per column; they become Arrow columns:
``bool``, ``int64``, ``float64``, ``timestamp[ns, UTC]`` (``timestamp[us, UTC]`` for datetimes outside the ns
range), ``string``, or ``null`` for a column with only empty values so far. Because the parser widens an
int column to float from the first float value on, a batch is cut there: earlier rows keep ``int64``, later
ones are ``float64`` (so the schema may change between batches, never within one).

*Vectorised path.* Blocks of the file (about 8 MB, cut at line ends) are split by ``pyarrow.csv`` into string
columns and converted with Arrow compute when the block is simple enough for both readers to agree:

- the block holds no ``"`` (no quoting), no NUL, no lone ``\\r`` (``\\r\\n`` is fine), no blank line, and no
  field longer than `csv.field_size_limit` — then both the csv module and Arrow split rows at line ends and
  fields at commas literally, so rows, fields and physical lines coincide (Arrow checks UTF-8 and the field
  count; either failing sends the block to the parser);
- every value of a column fits a strict pattern on which Python and Arrow agree: the column's kind comes
  from the parser's own inference (`_infer_kind`) of its first non-empty value; ints are ``-?[0-9]{1,18}``,
  floats are plain decimal/exponent notation (Arrow parses them with correct rounding, like `float`),
  bools are ASCII ``true``/``false`` in any case, datetimes are
  ``YYYY-MM-DD[(T| )HH:MM[:SS[.f{1,9}]]][Z|±HH:MM]`` with in-range fields (naive means UTC), strings are
  anything. An int column whose values, from some row on, are floats is widened there exactly as the
  parser widens it.

Anything else (a quote, an error, an empty time, a value outside the patterns) makes the whole file go
through the parser from its start; the rows already delivered are not delivered again (the parser gives the
very same first rows, since they had no error), so line numbers, errors, skipped rows and their logging are
the parser's. The cost of a late fallback is re-parsing the rows before it.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np

from storey._time import to_ns_array
from storey._utils._imports import require
from storey._utils._paths import open_input
from storey.errors import MissingFieldError
from storey.frames._csv_shapes import fixed_datetimes, plain_decimals
from storey.frames._io_arrow import select_names
from storey.frames._io_batch import InputBatch, require_columns
from storey.sources._csvparse import CSVBatch, CSVParser, _datetimes_ns, _infer_kind

__all__ = ["csv_batches"]

_STEP = "storey.frames"
_BLOCK = 8 << 20
_HEADER_MAX = 1 << 20
_BOM = b"\xef\xbb\xbf"
_INT = r"^-?[0-9]{1,18}$"
_FLOAT = r"^[+-]?([0-9]{1,30}\.?[0-9]{0,30}|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?$"
_DATETIME = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
_DATE_ONLY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_HAS_OFFSET = r"(Z|[+-][0-9]{2}:[0-9]{2})$"
_PROOFS = {_FLOAT: plain_decimals, _DATETIME: fixed_datetimes}


class _Fallback(Exception):
    """The vectorised path cannot prove that it gives the parser's values: use the parser."""


class _Parser(CSVParser):
    """`CSVParser` whose header check raises `MissingFieldError` for absent needed columns (§8.8)."""

    def __init__(self, required: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._required = list(required)

    def _set_width(self, path: str, line: int, row: list[str]) -> None:
        require_columns(row, self._required, path)
        dup = next((n for i, n in enumerate(row) if n in row[:i]), None)
        if dup is not None:
            msg = f"storey.frames: the header of {path!r} names column {dup!r} twice (names must be unique)"
            raise ValueError(msg)
        super()._set_width(path, line, row)


class _Clean:
    dirty = False


class _Context:
    """State shared by the files of one `csv_batches` call."""

    def __init__(
        self,
        parser: _Parser,
        columns: Sequence[str] | None,
        needed: Sequence[str],
        batch_size: int,
        storage_options: dict[str, Any] | None,
        time_field: str | None,
    ) -> None:
        self.parser = parser
        self.columns = columns
        self.needed = needed
        self.batch_size = batch_size
        self.storage_options = storage_options
        self.time_field = time_field
        self.reported_skips = 0
        self.names: list[str] | None = None
        self.last_schema: Any = None

    def output_names(self) -> list[str]:
        if self.names is None:
            self.names = select_names(self.parser.names or [], self.columns, self.needed)
        return self.names

    def take_skips(self) -> int:
        delta = self.parser.skipped_rows - self.reported_skips
        self.reported_skips = self.parser.skipped_rows
        return delta


def csv_batches(
    paths: Sequence[str],
    *,
    columns: Sequence[str] | None,
    needed: Sequence[str],
    batch_size: int,
    on_error: str,
    storage_options: dict[str, Any] | None,
    time_field: str | None,
) -> Iterator[InputBatch]:
    """The rows of CSV files, in order, as `ReadCSV(paths, header=True, build_dict=True, ...)` reads them.

    One parser reads all the files, so column types are inferred across them and their headers must be
    equal, as in one `ReadCSV`.
    """
    parser = _Parser(
        [*needed, *(columns or [])],
        header=True,
        time_field=time_field,
        on_error=on_error,
        batch_size=batch_size,
        step=_STEP,
    )
    ctx = _Context(parser, columns, needed, batch_size, storage_options, time_field)
    for path in paths:
        yield from _file_batches(ctx, path)


def _file_batches(ctx: _Context, path: str) -> Iterator[InputBatch]:
    parser = ctx.parser
    snapshot = _snapshot(parser)
    delivered = 0
    fast = _fast_batches(ctx, path)
    try:
        for batch in fast:
            delivered += batch.num_rows
            yield batch
        return
    except _Fallback:
        _restore(parser, snapshot)
    yield from _parser_batches(ctx, path, delivered)


def _snapshot(parser: CSVParser) -> dict[str, Any]:
    """A copy of the parser's state (types, header, counters), to restart a file from its beginning."""
    return _copy_state(parser.__dict__)


def _restore(parser: CSVParser, snapshot: dict[str, Any]) -> None:
    parser.__dict__.update(_copy_state(snapshot))


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v for k, v in state.items()
    }


# -------------------------------------------------------------------------------------------- parser path
def _parser_batches(ctx: _Context, path: str, already: int) -> Iterator[InputBatch]:
    """The file through `CSVParser`, leaving out its first `already` rows (delivered by the fast path)."""
    parser = ctx.parser
    before = list(parser.kinds)
    row = 0
    try:
        for cb in parser.read(path, ctx.storage_options):
            after = list(parser.kinds)
            start = min(already - row, len(cb)) if row < already else 0
            pieces = _pieces_from_parser(ctx, cb, before, after, start)
            for piece_start, rb, time_ns in pieces:
                yield from _bounded(ctx, path, rb, row + piece_start, cb.lines[piece_start:], time_ns)
            row += len(cb)
            before = after
    except Exception:
        skips = ctx.take_skips()
        if skips:  # rows skipped before the error are counted (as `ReadCSV` counts them), then it is raised
            yield _empty(ctx, path, row, skips)
        raise
    skips = ctx.take_skips()
    if skips:
        yield _empty(ctx, path, row, skips)


def _pieces_from_parser(
    ctx: _Context, cb: CSVBatch, before: list[str | None], after: list[str | None], start: int
) -> list[tuple[int, Any, np.ndarray | None]]:
    """Arrow record batches of rows ``start:`` of a parser batch, cut where an int column becomes float."""
    pa = require("pyarrow")
    n = len(cb)
    if start >= n:
        return []
    parser = ctx.parser
    names = ctx.output_names()
    index = {name: j for j, name in enumerate(parser.names or [])}
    ti = None if ctx.time_field is None else index[ctx.time_field]
    cuts: dict[int, int] = {}
    for name in names:
        j = index[name]
        if after[j] == "float" and (before[j] if j < len(before) else None) != "float":
            cut = _widening_row(cb.columns[j], start)
            if cut is not None:
                cuts[j] = cut
    bounds = sorted({start, n, *cuts.values()})
    times = None if cb.time_ns is None else np.asarray(cb.time_ns, dtype=np.int64)
    out = []
    for a, b in itertools.pairwise(bounds):
        arrays = []
        for name in names:
            j = index[name]
            kind = after[j]
            if j in cuts and b <= cuts[j]:
                kind = "int"
            values = cb.columns[j][a:b]
            if j == ti and kind == "datetime" and times is not None:
                arrays.append(pa.array(times[a:b], pa.timestamp("ns", tz="UTC")))
            else:
                arrays.append(_python_array(pa, kind, values, name, cb, a))
        rb = pa.RecordBatch.from_arrays(arrays, names=names)
        out.append((a, rb, None if times is None else times[a:b]))
    return out


def _widening_row(values: Sequence[Any], start: int) -> int | None:
    """The first row holding a float in a column that holds ints before it (``None`` if no ints)."""
    seen_int = False
    for i in range(start, len(values)):
        t = type(values[i])
        if t is int:
            seen_int = True
        elif t is float:
            return i if seen_int else None
    return None


def _python_array(
    pa: Any, kind: str | None, values: Sequence[Any], name: str, cb: CSVBatch, offset: int
) -> Any:
    if kind is None:
        return pa.nulls(len(values))
    if kind == "datetime":
        return _datetime_array(pa, values, name, cb, offset)
    type_ = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind]
    try:
        return pa.array(values, type_)
    except (OverflowError, pa.ArrowInvalid):
        if kind != "int":
            raise
    i = next(i for i, v in enumerate(values) if v is not None and not -(2**63) <= v < 2**63)
    msg = (
        f"storey.frames: column {name!r} holds the integer {values[i]} (file {cb.path!r}, line "
        f"{cb.lines[offset + i]}), outside int64; storey.frames reads CSV integers as int64"
    )
    raise ValueError(msg)


def _datetime_array(pa: Any, values: Sequence[Any], name: str, cb: CSVBatch, offset: int) -> Any:
    ns_type = pa.timestamp("ns", tz="UTC")
    ns = _datetimes_ns(values) if None not in values else None
    if ns is not None:
        return pa.array(np.asarray(ns, dtype=np.int64), ns_type)
    try:
        return pa.array(values, ns_type)
    except (OverflowError, pa.ArrowInvalid):
        pass
    try:  # a datetime outside the ns range: Python datetimes have whole microseconds
        return pa.array(values, pa.timestamp("us", tz="UTC"))
    except (OverflowError, pa.ArrowInvalid) as exc:
        msg = (
            f"storey.frames: column {name!r} (file {cb.path!r}, lines {cb.lines[offset]}..) mixes datetimes "
            f"outside the nanosecond range with sub-microsecond ones: {exc}"
        )
        raise ValueError(msg) from exc


def _bounded(
    ctx: _Context, path: str, rb: Any, row: int, lines: Sequence[int], time_ns: np.ndarray | None
) -> Iterator[InputBatch]:
    """Slices of at most ``batch_size`` rows; the skip count since the last batch goes on the first one."""
    bs = ctx.batch_size
    n = rb.num_rows
    ctx.last_schema = rb.schema
    for a in range(0, n, bs):
        b = min(a + bs, n)
        yield InputBatch(
            rb.slice(a, b - a),
            path,
            row + a,
            skipped_rows=ctx.take_skips(),
            lines=lines[a:b],
            time_field=ctx.time_field,
            time_ns=None if time_ns is None else time_ns[a:b],
        )


def _empty(ctx: _Context, path: str, row: int, skips: int) -> InputBatch:
    """A batch without rows that reports rows skipped after the last delivered one."""
    pa = require("pyarrow")
    schema = ctx.last_schema
    if schema is None:
        names = ctx.output_names() if ctx.parser.names is not None else []
        schema = pa.schema([(n, pa.null()) for n in names])
    return InputBatch(
        pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema),
        path,
        row,
        skipped_rows=skips,
        lines=range(0),
        time_field=ctx.time_field,
        time_ns=None if ctx.time_field is None else np.empty(0, dtype=np.int64),
    )


# ----------------------------------------------------------------------------------------- vectorised path
def _fast_batches(ctx: _Context, path: str) -> Iterator[InputBatch]:
    """The file through ``pyarrow.csv`` while it provably matches the parser; raises `_Fallback` otherwise."""
    f = open_input(path, ctx.storage_options)
    try:
        blocks = _Blocks(f)
        _read_header(ctx, path, blocks.header())
        line = 1  # the header's line
        row = 0
        for block in blocks:
            rb_pieces, n = _convert_block(ctx, block)
            for a, rb, time_ns in rb_pieces:
                yield from _bounded(ctx, path, rb, row + a, range(line + 1 + a, line + 1 + n), time_ns)
            ctx.parser.rows += n
            line += n
            row += n
    finally:
        f.close()


class _Blocks:
    """The header line and then blocks of whole lines (about `_BLOCK` bytes) of a binary file."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._rest = b""

    def header(self) -> bytes:
        data = self._f.read(_HEADER_MAX)
        while len(data) < 3 and data and _BOM.startswith(data):  # a BOM cut by a short read
            more = self._f.read(_HEADER_MAX)
            if not more:
                break
            data += more
        if data.startswith(_BOM):
            data = data[3:]
        end = data.find(b"\n")
        if end < 0:
            raise _Fallback  # an empty file, a header without a line end, or a huge header
        self._rest = data[end + 1 :]
        return data[: end + 1]

    def __iter__(self) -> Iterator[bytes]:
        rest = self._rest
        while True:
            chunk = self._f.read(_BLOCK)
            if not chunk:
                if rest:
                    yield rest
                return
            data = rest + chunk if rest else chunk
            end = data.rfind(b"\n")
            if end < 0:
                rest = data  # no line end yet: read on
                continue
            if end + 1 == len(data):
                rest = b""
                yield data
            else:
                rest = data[end + 1 :]
                yield data[: end + 1]


def _read_header(ctx: _Context, path: str, line: bytes) -> None:
    """Check the header line with the parser's own header logic (names, equality across files)."""
    body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if not body or b"\r" in body:
        raise _Fallback  # a blank line before the header, or a lone carriage return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _Fallback from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if len(rows) != 1 or not rows[0] or any("\n" in f or "\r" in f for f in rows[0]):
        raise _Fallback  # a quoted field that goes on after this line, or an odd header
    ok, _ = ctx.parser._read_header(path, csv.reader(io.StringIO(text, newline="")), _Clean())
    if not ok:  # pragma: no cover - a well-formed header line always passes (or raises)
        raise _Fallback


def _simple_block(block: bytes) -> bool:
    """No quote, no NUL, no lone carriage return and no blank line: both readers split it literally."""
    if b'"' in block or b"\x00" in block:
        return False
    if block.startswith(b"\n"):
        return False  # (a blank line inside the block is looked for by `_blank_line`, when it may be one)
    if b"\r" not in block:  # (a search stops at the first hit; a count reads the whole block)
        return True
    if block.count(b"\r") != block.count(b"\r\n"):
        return False  # a lone carriage return
    return not (block.startswith(b"\r\n") or b"\n\r\n" in block)


def _convert_block(ctx: _Context, block: bytes) -> tuple[list[tuple[int, Any, np.ndarray | None]], int]:
    """Typed record batches of a block (cut where an int column widens to float), and its row count."""
    if not _simple_block(block):
        raise _Fallback
    pa = require("pyarrow")
    pc = require("pyarrow.compute")
    parser = ctx.parser
    table = _split(block, len(parser.names or []))
    strings = [table.column(j).combine_chunks() for j in range(table.num_columns)]
    lengths = [pc.binary_length(col) for col in strings]
    empties = [pc.equal(ln, 0) for ln in lengths]
    if _blank_line(pc, empties, block):
        raise _Fallback
    n = table.num_rows
    if n != block.count(b"\n") + (0 if block.endswith(b"\n") else 1):
        raise _Fallback  # pragma: no cover - both count line ends on a simple block
    kinds = list(parser.kinds)
    limit = csv.field_size_limit()
    columns: list[_Typed] = []
    for j, col in enumerate(strings):
        typed = _typed_column(pa, pc, kinds[j], col, lengths[j], empties[j], limit)
        kinds[j] = typed.kind
        columns.append(typed)
    index = {name: j for j, name in enumerate(parser.names or [])}
    times = None
    if ctx.time_field is not None:
        times = columns[index[ctx.time_field]].time_ns()
    parser.kinds = kinds
    names = ctx.output_names()
    bounds = sorted({0, n, *(c.cut for c in columns if c.cut is not None)})
    pieces = []
    for a, b in itertools.pairwise(bounds):
        arrays = [columns[index[name]].slice(a, b) for name in names]
        rb = pa.RecordBatch.from_arrays(arrays, names=names)
        pieces.append((a, rb, None if times is None else times[a:b]))
    return pieces, n


def _blank_line(pc: Any, empties: list[Any], block: bytes) -> bool:
    """Whether the block has a blank line. Arrow reads one as a row of empty fields (`empties`: per column,
    which fields are empty), so the block is searched (a slow search, as line ends are frequent) only when
    such a row exists."""
    if not empties:
        return False
    empty = empties[0]
    for e in empties[1:]:
        empty = pc.and_(empty, e)
    if not pc.any(empty).as_py():
        return False
    return b"\n\n" in block


def _split(block: bytes, width: int) -> Any:
    """The block's fields as string columns, split literally at commas and line ends."""
    pa = require("pyarrow")
    pcsv = require("pyarrow.csv")
    names = [f"c{j}" for j in range(width)]
    try:
        return pcsv.read_csv(
            pa.BufferReader(pa.py_buffer(block)),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pcsv.ParseOptions(
                delimiter=",",
                quote_char=False,
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _Fallback from None  # wrong field count, invalid UTF-8


class _Typed:
    """One converted column of a block: a single array, or an int part and a float part (widening)."""

    def __init__(self, kind: str | None, array: Any, cut: int | None = None, tail: Any = None) -> None:
        self.kind = kind
        self.array = array
        self.cut = cut
        self.tail = tail

    def slice(self, a: int, b: int) -> Any:
        if self.cut is None:
            return self.array.slice(a, b - a)
        if b <= self.cut:
            return self.array.slice(a, b - a)
        return self.tail.slice(a - self.cut, b - a)

    def time_ns(self) -> np.ndarray:
        """The parser's event times for this column (`_Fallback` where it would report an error)."""
        if self.kind not in ("int", "float", "datetime"):
            raise _Fallback
        try:
            parts = [self.array] if self.cut is None else [self.array, self.tail]
            return np.concatenate([to_ns_array(p) for p in parts])
        except (MissingFieldError, ValueError, TypeError, OverflowError):
            raise _Fallback from None


def _typed_column(
    pa: Any, pc: Any, kind: str | None, col: Any, lengths: Any, empty: Any, limit: int
) -> _Typed:
    """A string column converted with the parser's rules for its kind, or `_Fallback` (`lengths`: its values'
    byte lengths, `empty`: which are empty)."""
    n = len(col)
    if n and pc.max(lengths).as_py() > limit:
        raise _Fallback  # the csv module rejects fields longer than csv.field_size_limit()
    n_empty = n - pc.count(pc.if_else(empty, None, lengths)).as_py()  # an integer count of empty fields
    if n_empty:
        col = pc.if_else(empty, pa.scalar(None, pa.string()), col)
    if kind is None:
        if n_empty == n:
            return _Typed(None, pa.nulls(n))
        kind = _infer_kind(col.drop_null()[0].as_py(), None)
    if kind == "str":
        return _Typed("str", col)
    try:
        if kind == "bool":
            return _Typed("bool", _bools(pa, pc, col))
        if kind == "float":
            return _Typed("float", _checked_cast(pc, col, _FLOAT, pa.float64()))
        if kind == "datetime":
            return _Typed("datetime", _datetimes(pa, pc, col))
        if kind == "int":
            return _ints(pa, pc, col, lengths)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _Fallback from None
    raise _Fallback  # pragma: no cover - the parser has no other kind


def _all(pc: Any, mask: Any) -> bool:
    return bool(pc.all(mask).as_py() is not False)


def _matches(pc: Any, col: Any, pattern: str) -> bool:
    """Whether every value of `col` matches `pattern`: proven with numpy for the common layouts
    (`storey.frames._csv_shapes`), else by Arrow's regex."""
    proof = _PROOFS.get(pattern)
    if proof is not None and proof(col):
        return True
    return _all(pc, pc.match_substring_regex(col, pattern))


def _checked_cast(pc: Any, col: Any, pattern: str, type_: Any) -> Any:
    if not _matches(pc, col, pattern):
        raise _Fallback
    return col.cast(type_)


def _bools(pa: Any, pc: Any, col: Any) -> Any:
    if not _all(pc, pc.string_is_ascii(col)):
        raise _Fallback
    low = pc.ascii_lower(col)
    if not _all(pc, pc.match_substring_regex(low, "^(true|false)$")):
        raise _Fallback
    return pc.equal(low, "true")


def _ints(pa: Any, pc: Any, col: Any, lengths: Any) -> _Typed:
    if _all(pc, pc.ascii_is_decimal(col)) and (pc.max(lengths).as_py() or 0) <= 18:
        return _Typed("int", col.cast(pa.int64()))  # the common case: digits only, no sign
    ints = pc.match_substring_regex(col, _INT)
    if _all(pc, ints):
        return _Typed("int", col.cast(pa.int64()))
    cut = pc.index(ints, False).as_py()  # from this row on the parser widens the column to float ...
    if not re.search("[.eE]", col[cut].as_py()):  # ... if `int()` rejects it (not so for "+5", 20 digits)
        raise _Fallback
    tail = col.slice(cut)
    tail_array = _checked_cast(pc, tail, _FLOAT, pa.float64())
    return _Typed("float", col.slice(0, cut).cast(pa.int64()), cut=cut, tail=tail_array)


def _datetimes(pa: Any, pc: Any, col: Any) -> Any:
    if not _matches(pc, col, _DATETIME):
        raise _Fallback
    utc = pa.timestamp("ns", tz="UTC")
    if _all(pc, pc.ends_with(col, "Z")):
        return col.cast(utc)
    has_offset = pc.match_substring_regex(col, _HAS_OFFSET)
    if _all(pc, has_offset):
        return col.cast(utc)
    date_only = pc.match_substring_regex(col, _DATE_ONLY)
    if not _any(pc, has_offset) and not _any(pc, date_only):
        return col.cast(pa.timestamp("ns")).cast(pa.int64()).cast(utc)  # naive means UTC
    naive = pc.if_else(
        date_only,
        pc.binary_join_element_wise(col, "T00:00:00+00:00", ""),
        pc.binary_join_element_wise(col, "+00:00", ""),
    )
    return pc.if_else(has_offset, col, naive).cast(utc)


def _any(pc: Any, mask: Any) -> bool:
    return bool(pc.any(mask).as_py())
