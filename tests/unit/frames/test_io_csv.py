"""CSV through `storey.frames.io.iter_batches`: exactly the values, lines, times and errors of `ReadCSV`.

The oracle is the stream: `ReadCSV(paths, header=True, build_dict=True, timestamp_field=T, on_error=...)`.
Both paths of the frames reader are checked against it: the vectorised one (``pyarrow.csv`` + Arrow compute,
used where it provably agrees) and the parser one (forced by disabling the vectorised path).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from storey import FlowError, ReadCSV, Reduce, build_flow
from storey._time import to_ns
from storey.errors import CSVParseError, MissingFieldError
from storey.frames import _io_csv
from storey.frames.io import iter_batches
from storey.sources._arrow import rows_from_batch
from storey.sources._csvparse import parse_datetime
from tests.unit.frames._io_oracle import assert_same_rows

UTC = dt.UTC


# ------------------------------------------------------------------------------------------------ oracles
def stream_side(paths: Any, time_field: str | None, on_error: str = "raise") -> dict[str, Any]:
    """Bodies, lines, times, skip count and error of `ReadCSV` (the rows before an error included)."""
    step = ReadCSV(paths, header=True, build_dict=True, timestamp_field=time_field, on_error=on_error)
    events: list[Any] = []
    flow = build_flow([step, Reduce(None, lambda acc, e: events.append(e), full_event=True)])
    error = None
    try:
        flow.run().await_termination()
    except FlowError as exc:
        error = exc.__cause__
    return {
        "error": error,
        "rows": [e.body for e in events],
        "lines": [e.origin[1] for e in events],
        "times": [e.time_ns for e in events] if time_field is not None else None,
        "skipped": step.metrics["skipped_rows"],
    }


def frames_side(paths: Any, time_field: str | None, on_error: str = "raise", **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"error": None, "rows": [], "lines": [], "times": [], "skipped": 0, "batches": []}
    try:
        for b in iter_batches(paths, time_field=time_field, on_error=on_error, **kw):
            out["batches"].append(b)
            out["rows"].extend(rows_from_batch(b.batch))
            assert b.lines is not None and len(b.lines) == b.num_rows
            out["lines"].extend(b.lines)
            out["skipped"] += b.skipped_rows
            if time_field is not None:
                assert b.time_ns is not None and len(b.time_ns) == b.num_rows
                out["times"].extend(b.time_ns.tolist())
    except (CSVParseError, MissingFieldError, ValueError) as exc:
        out["error"] = exc
    if time_field is None:
        out["times"] = None
    return out


@pytest.fixture
def parser_only(monkeypatch):
    """Disable the vectorised path: every file goes through `CSVParser`."""

    def no_fast(ctx, path):
        raise _io_csv._Fallback
        yield  # pragma: no cover

    monkeypatch.setattr(_io_csv, "_fast_batches", no_fast)


@pytest.fixture
def fast_only(monkeypatch):
    """Fail if a file falls back to the parser."""

    def no_parser(ctx, path, already):
        raise AssertionError(f"{path} fell back to the parser")
        yield  # pragma: no cover

    monkeypatch.setattr(_io_csv, "_parser_batches", no_parser)


def assert_equivalent(
    paths: Any, time_field: str | None, on_error: str = "raise", **kw: Any
) -> dict[str, Any]:
    want = stream_side(paths, time_field, on_error)
    got = frames_side(paths, time_field, on_error, **kw)
    assert_same_rows(got["rows"], want["rows"])
    assert got["lines"] == want["lines"]
    assert got["times"] == want["times"]
    assert got["skipped"] == want["skipped"]
    assert type(got["error"]) is type(want["error"]), (got["error"], want["error"])
    if isinstance(want["error"], CSVParseError):
        assert (got["error"].path, got["error"].line) == (want["error"].path, want["error"].line)
    if want["error"] is not None:
        assert str(want["error"]).replace("'ReadCSV'", "'storey.frames'") == str(got["error"])
    return got


def write(directory: Any, text: str | bytes, name: str = "a.csv") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------------------------------- fixed examples
SIMPLE = (
    "k,t,i,f,b,s,d\n"
    "a,2024-01-01T00:00:00Z,1,1.5,true,x,2024-01-01\n"
    "b,2024-01-01T01:00:00+02:00,-2,,FALSE,,2024-01-02T03:04:05.123456789\n"
    "c,2024-01-01 00:00:01.5,,-3e5,True,y z,\n"
)


def test_simple_file_is_read_vectorised_with_readcsv_values(tmp_path, fast_only):
    path = write(tmp_path, SIMPLE)
    got = assert_equivalent(path, "t")
    schema = got["batches"][0].batch.schema
    assert [str(t) for t in schema.types] == [
        "string", "timestamp[ns, tz=UTC]", "int64", "double", "bool", "string", "timestamp[ns, tz=UTC]",
    ]  # fmt: skip
    assert got["lines"] == [2, 3, 4]


def test_same_values_through_the_parser_path(tmp_path, parser_only):
    assert_equivalent(write(tmp_path, SIMPLE), "t")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('k,t\n"a,1",2024-01-01\n"multi\nline",2024-01-02\nc,2024-01-03\n', id="quoted"),
        pytest.param("k,t\r\na,2024-01-01\r\nb,2024-01-02\r\n", id="crlf"),
        pytest.param("\ufeffk,t\na,2024-01-01\nb,2024-01-02", id="bom-no-final-newline"),
        pytest.param("k,t\na,2024-01-01\n\nb,2024-01-02\n\n", id="blank-lines"),
        pytest.param('"k","t"\na,2024-01-01\n', id="quoted-header"),
        pytest.param("k,t\na,2024-01-01\rb,2024-01-02\n", id="lone-cr"),
        pytest.param("k,t\n1,2024-01-01\n2.5,2024-01-02\n3,2024-01-03\n", id="widening"),
        pytest.param("k,t\n,2024-01-01\n,2024-01-02\n7,2024-01-03\n", id="empty-then-int"),
        pytest.param("k,t\nnan,1\ninf,2.5\n1_000,3\n", id="python-only-floats-and-epoch-ms"),
        pytest.param("k,t\n 1,2024-01-01T00:00\n+2,2024-01-01T00:01\n", id="python-only-ints"),
        pytest.param("k,t\nx,2024-01-01T24:00:00\ny,2024-01-01\n", id="not-a-datetime-is-str"),
        pytest.param("k,t\na,1677-01-01T00:00:00\n", id="time-out-of-range"),
        pytest.param(
            "k,d,t\na,0001-01-01,2024-01-01\nb,9999-12-31T23:59:59.999999,2024-01-02\n", id="far-dates"
        ),
        pytest.param("k,t\nTRUE,2024-01-01\nfalse,2024-01-02\nx,2024-01-03\n", id="bad-bool"),
        pytest.param("k,t\na,2024-01-01\nb\nc,2024-01-02\n", id="field-count"),
        pytest.param("k,t\na,2024-01-01\nb,\nc,2024-01-02\n", id="empty-time"),
        pytest.param(b"k,t\na,2024-01-01\n\xff,2024-01-02\nc,2024-01-03\n", id="bad-utf8"),
        pytest.param("k,t\n", id="header-only"),
        pytest.param("", id="empty-file"),
        pytest.param("\n\nk,t\na,2024-01-01\n", id="blank-before-header"),
        pytest.param("k,t\na,2024-01-01T00:00:00.1234567Z\nb,2024-01-01T00:00:00.000000001+01:00\n", id="ns"),
        pytest.param("k,t\na,2024-01-01T00:00:00z\nb,20240101T000000\n", id="python-only-iso"),
        pytest.param("k,t\na,2024-02-30T00:00:00\n", id="invalid-date"),
    ],
)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("block", [None, 24])
def test_edge_files_match_readcsv(tmp_path, monkeypatch, text, on_error, block):
    if block is not None:  # tiny blocks: fallbacks in the middle of a file
        monkeypatch.setattr(_io_csv, "_BLOCK", block)
    assert_equivalent(write(tmp_path, text), "t", on_error)
    assert_equivalent(write(tmp_path, text), None, on_error)


def test_late_quote_falls_back_without_repeating_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(_io_csv, "_BLOCK", 64)
    lines = [f"k{i},2024-01-01T00:00:{i % 60:02d}Z,{i}" for i in range(200)]
    lines[150] = '"quoted, key",2024-01-01T00:00:00Z,150'
    got = assert_equivalent(write(tmp_path, "k,t,v\n" + "\n".join(lines) + "\n"), "t")
    assert [r["v"] for r in got["rows"]] == list(range(200))


def test_widening_inside_and_across_vectorised_blocks(tmp_path, monkeypatch, fast_only):
    monkeypatch.setattr(_io_csv, "_BLOCK", 40)
    rows = ["1", "2", "", "3", "4.5", "6", "", "7e1", "8"]
    text = "v,w\n" + "".join(f"{v},{i}\n" for i, v in enumerate(rows))
    got = assert_equivalent(write(tmp_path, text), None)
    assert [type(r["v"]) for r in got["rows"]] == [
        int,
        int,
        type(None),
        int,
        float,
        float,
        type(None),
        float,
        float,
    ]
    assert all(set(b.batch.schema.types) <= {pa.int64(), pa.float64(), pa.null()} for b in got["batches"])


def test_schema_changes_only_between_batches(tmp_path, parser_only):
    text = "v\n" + "\n".join(["", "", "1", "2", "2.5", "3"]) + "\n"
    got = assert_equivalent(write(tmp_path, text), None)
    types = [b.batch.schema.field("v").type for b in got["batches"]]
    assert types == [pa.int64(), pa.float64()]


def test_several_files_share_types_and_need_equal_headers(tmp_path, monkeypatch):
    a = write(tmp_path, "k,v\na,\nb,\n", "a.csv")
    b = write(tmp_path, "k,v\nc,1\nd,2.5\n", "b.csv")
    got = assert_equivalent([a, b], None)
    assert [(x.source, x.row_offset) for x in got["batches"]] == [(a, 0), (b, 0), (b, 1)]
    c = write(tmp_path, "k,w\ne,1\n", "c.csv")
    with pytest.raises(ValueError, match="header"):
        list(iter_batches([a, c]))


def test_skips_are_counted_logged_and_reported_even_at_the_end(tmp_path, caplog):
    text = "k,t\n" + "".join(f"a{i},2024-01-01\nbad\n" for i in range(12)) + "x\ny\n"
    path = write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="storey"):
        got = assert_equivalent(path, "t", "skip", batch_size=4)
    assert got["skipped"] == 14
    assert got["batches"][-1].num_rows == 0 and got["batches"][-1].skipped_rows > 0
    logged = [
        r for r in caplog.records if "skipped a row" in r.getMessage() and "storey.frames" in r.getMessage()
    ]
    assert len(logged) == 10


def test_integers_outside_int64_are_a_clear_error(tmp_path):
    path = write(tmp_path, "v\n1\n99999999999999999999\n")
    with pytest.raises(ValueError, match=r"outside int64.*line 3|line 3.*outside int64"):
        list(iter_batches(path))


def test_datetimes_outside_the_ns_range_are_microsecond_columns(tmp_path):
    path = write(tmp_path, "d\n0001-01-01T00:00:00\n2024-01-01T00:00:00\n")
    [b] = iter_batches(path)
    assert b.batch.schema.field("d").type == pa.timestamp("us", tz="UTC")
    assert_equivalent(path, None)


def test_bounded_batches_and_line_map(tmp_path, monkeypatch):
    monkeypatch.setattr(_io_csv, "_BLOCK", 100)
    text = "v\n" + "".join(f"{i}\n" for i in range(50))
    batches = list(iter_batches(write(tmp_path, text), batch_size=7))
    assert max(b.num_rows for b in batches) <= 7
    assert [line for b in batches for line in b.lines] == list(range(2, 52))
    assert [b.row_offset for b in batches] == list(np.cumsum([0] + [b.num_rows for b in batches[:-1]]))
    assert [b.where(0) for b in batches][:1] == [f"(file {batches[0].source!r}, line 2)"]


def test_columns_projection_parses_every_column(tmp_path):
    path = write(tmp_path, "a,b,c\n1,x,2024-01-01\n2,y,nope\n")
    [b] = iter_batches(path, columns=["a"], on_error="skip")
    assert b.batch.schema.names == ["a"] and b.batch.column("a").to_pylist() == [1]
    assert b.skipped_rows == 1


# ----------------------------------------------------------------------------- hypothesis: typed CSV files
_TZS = [None, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-3))]


@st.composite
def iso_datetimes(draw: Any) -> str:
    d = draw(
        st.datetimes(
            min_value=dt.datetime(1700, 1, 1),
            max_value=dt.datetime(2250, 1, 1),
            timezones=st.sampled_from(_TZS),
        )
    )
    spec = draw(st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds", "date"]))
    if spec == "date":
        return d.date().isoformat()
    text = d.isoformat(sep=draw(st.sampled_from(["T", " "])), timespec=spec)
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    return text


CLEAN = {  # values both readers take literally (the vectorised path applies when a file has only these)
    "int": st.integers(-(10**18), 10**18).map(str),
    "float": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(0, 20)
        .flatmap(  # bounded: with 0 places a decimal reads as an int, and frames' ints are int64
            lambda p: st.decimals(-(10**18), 10**18, allow_nan=False, allow_infinity=False, places=p)
        )
        .map(str),
    ),
    "bool": st.sampled_from(["true", "false", "TRUE", "False", "tRuE"]),
    "datetime": iso_datetimes(),
    "str": st.text(alphabet="abcxyz 0129.-:é€", max_size=6),
}
DIRTY = {  # values that only Python takes, or that no reader takes as the column's type
    "int": st.sampled_from(["+5", " 7", "1_000", "9223372036854775807", "٣", "x"]),  # fits int64
    "float": st.sampled_from(["nan", "inf", "-inf", "1e400", "1e-400", "1_0.5", "0x10", " 1.5"]),
    "bool": st.sampled_from(["1", "yes", "TRUE "]),
    "datetime": st.sampled_from(
        ["2024-02-30", "2024-01-01T24:00:00", "2024-01-01z", "20240101", "2024-01-01T10"]
    ),
    "str": st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
}
TIMES = {
    "datetime": iso_datetimes(),
    "int": st.integers(-(10**12), 10**12).map(str),
    "float": st.floats(-1e12, 1e12).map(repr),
}


@st.composite
def typed_csv(draw: Any) -> tuple[list[str], list[list[str]], str]:
    """A header and rows: typed columns, sometimes empty values, an int column widening to float, and
    (in a dirty file) values only the csv module or `int`/`float`/`fromisoformat` accept, or none does."""
    n_cols = draw(st.integers(1, 4))
    kinds = draw(st.lists(st.sampled_from(sorted(CLEAN)), min_size=n_cols, max_size=n_cols))
    time_kind = draw(st.sampled_from(sorted(TIMES)))
    dirty = draw(st.integers(0, 3)) == 0
    widen = draw(st.booleans())
    n_rows = draw(st.integers(0, 30))
    rows = []
    for i in range(n_rows):
        row = []
        for kind in kinds:
            if draw(st.integers(0, 9)) == 0:
                row.append("")
            elif dirty and draw(st.integers(0, 9)) == 0:
                row.append(draw(DIRTY[kind]))
            elif kind == "int" and widen and i > n_rows // 2:
                row.append(draw(CLEAN["float"]))
            else:
                row.append(draw(CLEAN[kind]))
        if dirty and draw(st.integers(0, 20)) == 0:
            time = draw(st.sampled_from(["", "x", "1e400", "2024-13-01"]))
        else:
            time = draw(TIMES[time_kind])
        rows.append([*row, time])
    names = [f"c{j}" for j in range(n_cols)] + ["t"]
    return names, rows, draw(st.sampled_from(["\n", "\r\n"]))


def csv_text(names: list[str], rows: list[list[str]], terminator: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=terminator)
    writer.writerow(names)
    writer.writerows(rows)
    return buf.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=typed_csv(),
    on_error=st.sampled_from(["raise", "skip"]),
    block=st.sampled_from([None, 30, 200]),
    time=st.booleans(),
)
def test_hypothesis_typed_files_match_readcsv(data, on_error, block, time):
    names, rows, terminator = data
    old = _io_csv._BLOCK
    try:
        if block is not None:
            _io_csv._BLOCK = block
        with tempfile.TemporaryDirectory() as d:
            path = write(d, csv_text(names, rows, terminator))
            assert_equivalent(path, "t" if time else None, on_error, batch_size=7)
    finally:
        _io_csv._BLOCK = old


@settings(max_examples=60, deadline=None)
@given(data=typed_csv(), on_error=st.sampled_from(["raise", "skip"]))
def test_hypothesis_parser_path_matches_readcsv(data, on_error):
    names, rows, terminator = data
    fast = _io_csv._fast_batches

    def no_fast(ctx, path):
        raise _io_csv._Fallback
        yield  # pragma: no cover

    _io_csv._fast_batches = no_fast
    try:
        with tempfile.TemporaryDirectory() as d:
            path = write(d, csv_text(names, rows, terminator))
            assert_equivalent(path, "t", on_error, batch_size=5)
    finally:
        _io_csv._fast_batches = fast


# ------------------------------------------------------- the patterns on which Arrow and Python provably agree
@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.from_regex(_io_csv._FLOAT, fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(
            [
                "2.2250738585072011e-308",
                "9007199254740993",
                "1.00000000000000011102230246251565404236316680908203125",
                "4.9406564584124654e-324",
                "1e308",
                "0.1e-309",
            ]
        ),
    )
)
def test_arrow_parses_pattern_floats_as_python_does(text):
    assume(pc.match_substring_regex(pa.array([text]), _io_csv._FLOAT)[0].as_py())
    try:
        got = pa.array([text]).cast(pa.float64())[0].as_py()
    except pa.ArrowInvalid:
        return  # Arrow refusing is safe: the block goes to the parser
    want = float(text)
    assert got == want and np.signbit(got) == np.signbit(want), (text, got, want)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.from_regex(_io_csv._INT, fullmatch=True), st.integers(-(10**18), 10**18).map(str)))
def test_arrow_parses_pattern_ints_as_python_does(text):
    assert pa.array([text]).cast(pa.int64())[0].as_py() == int(text)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.from_regex(_io_csv._DATETIME, fullmatch=True), iso_datetimes()))
def test_arrow_parses_pattern_datetimes_as_python_does(text):
    assume(pc.match_substring_regex(pa.array([text]), _io_csv._DATETIME)[0].as_py())
    try:
        want = to_ns(parse_datetime(text))
    except (ValueError, OverflowError):
        want = None
    try:
        got = _io_csv._datetimes(pa, pc, pa.array([text])).cast(pa.int64())[0].as_py()
    except pa.ArrowInvalid:
        return  # refused: the parser decides
    assert got == want, (text, got, want)
