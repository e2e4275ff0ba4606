"""The CSV parsing rules shared by ReadCSV and storey.frames (spec STEPS.md §5.3)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey._time import to_ns
from storey.errors import CSVParseError, MissingFieldError
from storey.sources._csvparse import CSVParser, UnknownFieldError, parse_datetime

UTC = dt.UTC


def write(tmp_path, text, name="a.csv", mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def parse(path, **kw):
    """All rows as (line, values, time_ns) with the parser, plus the parser."""
    parser = CSVParser(**kw)
    out = []
    for batch in parser.read(path):
        times = batch.time_ns or [None] * len(batch)
        out.extend(zip(batch.lines, map(list, zip(*batch.columns)), times, strict=True))
    return out, parser


def rows_of(path, **kw):
    return [values for _, values, _ in parse(path, **kw)[0]]


# ---------------------------------------------------------------------------------------- type inference
def test_types_fixed_by_first_non_empty_value(tmp_path):
    path = write(tmp_path, "a,b,c,d,e\n,1,x,TRUE,2024-01-01\n2.5,,y,false,2024-01-02T03:04:05+02:00\n")
    rows, parser = parse(path, header=True)
    assert [r[1] for r in rows] == [
        [None, 1, "x", True, dt.datetime(2024, 1, 1, tzinfo=UTC)],
        [2.5, None, "y", False, dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)],
    ]
    assert parser.kinds == ["float", "int", "str", "bool", "datetime"]


def test_int_column_widens_to_float_but_earlier_values_stay_int(tmp_path):
    path = write(tmp_path, "v\n1\n2.5\n3\n")
    assert rows_of(path, header=True) == [[1], [2.5], [3.0]]
    assert [type(v[0]) for v in rows_of(path, header=True)] == [int, float, float]


@pytest.mark.parametrize(
    ("text", "bad"),
    [("v\n1\nabc\n", 3), ("v\ntrue\n1\n", 3), ("v\n2024-01-01\nnope\n", 3), ("v\n1.5\nx\n", 3)],
)
def test_value_that_does_not_fit_its_column_is_a_parse_error(tmp_path, text, bad):
    path = write(tmp_path, text)
    with pytest.raises(CSVParseError) as info:
        rows_of(path, header=True)
    assert (info.value.path, info.value.line) == (path, bad)


def test_str_column_accepts_anything_and_empty_is_none(tmp_path):
    path = write(tmp_path, "s\nabc\n1\n\ntrue\n")
    # the blank line is ignored; '1' and 'true' stay strings in a str column
    assert rows_of(path, header=True) == [["abc"], ["1"], ["true"]]
    path = write(tmp_path, 's,t\nabc,""\n', name="b.csv")
    assert rows_of(path, header=True) == [["abc", None]]


def test_type_inference_off_keeps_strings_but_parses_time(tmp_path):
    path = write(tmp_path, "k,t,v\na,2024-01-01T00:00:00,1\nb,2024-01-01T00:00:01Z,\n")
    rows, _ = parse(path, header=True, type_inference=False, time_field="t")
    assert [r[1] for r in rows] == [["a", "2024-01-01T00:00:00", "1"], ["b", "2024-01-01T00:00:01Z", None]]
    assert [r[2] for r in rows] == [to_ns("2024-01-01T00:00:00"), to_ns("2024-01-01T00:00:01Z")]


def test_timestamp_format(tmp_path):
    path = write(tmp_path, "t\n15/02/2020 02:00:00\n16/02/2020 02:00:00\n")
    rows, parser = parse(path, header=True, time_field=0, timestamp_format="%d/%m/%Y %H:%M:%S")
    assert [r[1][0] for r in rows] == [
        dt.datetime(2020, 2, 15, 2, tzinfo=UTC),
        dt.datetime(2020, 2, 16, 2, tzinfo=UTC),
    ]
    assert parser.kinds == ["datetime"]
    assert [r[2] for r in rows] == [to_ns(r[1][0]) for r in rows]


def test_sub_microsecond_datetimes_keep_nanoseconds(tmp_path):
    pd = pytest.importorskip("pandas")
    path = write(tmp_path, "t\n2024-01-01T00:00:00.123456789Z\n2024-01-01T00:00:01Z\n")
    rows, _ = parse(path, header=True, time_field="t")
    assert rows[0][1][0] == pd.Timestamp("2024-01-01T00:00:00.123456789", tz="UTC")
    assert rows[0][2] == to_ns("2024-01-01T00:00:00.123456789Z")
    assert rows[1][1][0] == dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_parse_datetime_naive_is_utc_and_offsets_are_converted():
    assert parse_datetime("2024-01-01T00:00:00") == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_datetime("2024-01-01T00:00:00-01:00") == dt.datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert parse_datetime(" 2024-01-01T00:00:00z").tzinfo is UTC
    with pytest.raises(ValueError):
        parse_datetime("yesterday")


# -------------------------------------------------------------------------------------------- time field
def test_time_from_int_and_float_columns_is_epoch_ms(tmp_path):
    path = write(tmp_path, "t,u\n1000,1.5\n2000,2.25\n")
    assert [r[2] for r in parse(path, header=True, time_field="t")[0]] == [to_ns(1000), to_ns(2000)]
    assert [r[2] for r in parse(path, header=True, time_field="u")[0]] == [to_ns(1.5), to_ns(2.25)]


def test_empty_timestamp_is_missing_field_with_file_and_line_after_earlier_rows(tmp_path):
    path = write(tmp_path, "t,v\n2024-01-01,1\n,2\n2024-01-02,3\n")
    parser = CSVParser(header=True, time_field="t", on_error="skip")
    got = []
    with pytest.raises(MissingFieldError, match=r"line 3") as info:
        for batch in parser.read(path):
            got.extend(batch.columns[1])
    assert got == [1]  # the row before the error was delivered first
    assert path in str(info.value)


def test_unparseable_timestamp_is_a_parse_error(tmp_path):
    path = write(tmp_path, "t,v\n2024-01-01,1\nsoon,2\n")
    with pytest.raises(CSVParseError) as info:
        rows_of(path, header=True, time_field="t")
    assert info.value.line == 3
    rows, parser = parse(path, header=True, time_field="t", on_error="skip")
    assert [r[1] for r in rows] == [[dt.datetime(2024, 1, 1, tzinfo=UTC), 1]]
    assert parser.skipped_rows == 1


def test_time_field_name_not_in_header_is_value_error(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(UnknownFieldError, match="'t' is not in the header") as info:
        rows_of(path, header=True, time_field="t")
    assert isinstance(info.value, ValueError)
    assert (info.value.field, info.value.path) == ("t", path)
    with pytest.raises(UnknownFieldError, match="out of range"):
        rows_of(path, header=True, fields=[2])


def test_field_name_without_header_and_negative_index_raise_at_construction():
    with pytest.raises(ValueError, match="header"):
        CSVParser(time_field="t")
    with pytest.raises(ValueError, match=">= 0"):
        CSVParser(time_field=-1)
    with pytest.raises(ValueError, match="on_error"):
        CSVParser(on_error="ignore")


# ------------------------------------------------------------------------------------ lines and quoting
def test_multiline_quoted_fields_report_the_starting_physical_line(tmp_path):
    text = 'k,v\n"a\nb",1\nc,2\n"d\r\ne\rf",3\nbad\n'
    path = write(tmp_path, text)
    rows, _ = parse(path, header=True, on_error="skip")
    assert [(line, values) for line, values, _ in rows] == [
        (2, ["a\nb", 1]),
        (4, ["c", 2]),
        (5, ["d\r\ne\rf", 3]),
    ]
    with pytest.raises(CSVParseError) as info:
        rows_of(path, header=True)
    assert info.value.line == 8


def test_crlf_bom_and_blank_lines(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfa,b\r\n1,2\r\n\r\n3,4\r\n", mode="wb")
    rows, parser = parse(path, header=True)
    assert parser.names == ["a", "b"]
    assert [(line, values) for line, values, _ in rows] == [(2, [1, 2]), (4, [3, 4])]


def test_wrong_field_count_against_header_and_against_first_row(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n1,2,3\n4\n5,6\n")
    rows, parser = parse(path, header=True, on_error="skip")
    assert [r[1] for r in rows] == [[1, 2], [5, 6]]
    assert parser.skipped_rows == 2
    path = write(tmp_path, "1,2\n3\n", name="b.csv")
    with pytest.raises(CSVParseError, match="expected 2 fields, got 1") as info:
        rows_of(path)
    assert info.value.line == 2


def test_undecodable_bytes_are_a_parse_error_on_their_line(tmp_path):
    path = write(tmp_path, b"a,b\n1,x\n2,\xff\xfe\n3,z\n", mode="wb")
    with pytest.raises(CSVParseError, match="UTF-8") as info:
        rows_of(path, header=True)
    assert info.value.line == 3
    rows, parser = parse(path, header=True, on_error="skip")
    assert [r[1] for r in rows] == [[1, "x"], [3, "z"]]
    assert parser.skipped_rows == 1


def test_empty_file_with_header_is_a_parse_error_at_line_1(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(CSVParseError) as info:
        rows_of(path, header=True)
    assert (info.value.path, info.value.line) == (path, 1)
    rows, parser = parse(path, header=True, on_error="skip")
    assert (rows, parser.skipped_rows) == ([], 1)
    assert rows_of(path) == []  # no header expected: simply no rows


def test_header_only_file_has_no_rows(tmp_path):
    assert rows_of(write(tmp_path, "a,b\n"), header=True) == []


def test_headers_of_all_files_must_be_equal(tmp_path):
    a = write(tmp_path, "a,b\n1,2\n", name="a.csv")
    b = write(tmp_path, "a,c\n1,2\n", name="b.csv")
    parser = CSVParser(header=True)
    list(parser.read(a))
    with pytest.raises(ValueError, match="header"):
        list(parser.read(b))


def test_types_are_shared_across_the_files_of_one_parser(tmp_path):
    a = write(tmp_path, "v\n1\n", name="a.csv")
    b = write(tmp_path, "v\nx\n", name="b.csv")
    parser = CSVParser(header=True)
    list(parser.read(a))
    with pytest.raises(CSVParseError):
        list(parser.read(b))


def test_skip_logs_only_the_first_ten_rows_per_file(tmp_path, caplog):
    path = write(tmp_path, "v\n" + "x,y\n" * 12 + "1\n")
    with caplog.at_level(logging.WARNING, logger="storey"):
        rows, parser = parse(path, header=True, on_error="skip")
    assert rows == [(14, [1], None)]
    assert parser.skipped_rows == 12
    logged = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(logged) == 10
    assert path in logged[0].getMessage() and "line 2" in logged[0].getMessage()


def test_rows_before_a_raise_are_delivered_in_the_same_batch(tmp_path):
    path = write(tmp_path, "v\n1\n2\nx,y\n4\n")
    got = []
    with pytest.raises(CSVParseError):
        for batch in CSVParser(header=True, batch_size=100).read(path):
            got.extend(batch.columns[0])
    assert got == [1, 2]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        list(CSVParser().read(str(tmp_path / "nope.csv")))


def test_shared_sample_files():
    rows, parser = parse("tests/data/small-csv/test.csv", header=True)
    assert parser.names == ["n1", "n2", "n3"]
    assert [r[1] for r in rows] == [[1, 2, 3], [4, 5, 6]]
    assert rows_of("tests/data/small-csv/test-no-header.csv") == [[1, 2, 3], [4, 5, 6]]
    rows, parser = parse(
        "tests/data/small-csv/test-with-timestamp.csv",
        header=True,
        time_field="t",
        timestamp_format="%d/%m/%Y %H:%M:%S",
    )
    assert [r[1] for r in rows] == [
        ["m1", dt.datetime(2020, 2, 15, 2, tzinfo=UTC), 8, True],
        ["m2", dt.datetime(2020, 2, 16, 2, tzinfo=UTC), 14, False],
    ]


# ----------------------------------------------------------------------- fast path == reference (oracle)
_cells = st.one_of(
    st.just(""),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["true", "FALSE", "True", "nan", "1e3", "0x10", " 7", "1_000", "ab", "a,b", 'q"q', "x\ny"]
    ),
    st.datetimes(
        min_value=dt.datetime(1700, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=-3))]),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(["2024-01-01T00:00:00.1234567Z", "2024-01-01 10:00", "2024-01-01Z"]),
    st.text(max_size=4),
)


def _reference(parser_kwargs, path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(CSVParser, "_convert_fast", lambda self, *a: None)
        return _outcome(parser_kwargs, path)


def _norm(value):
    """Comparable form of a parsed value: its type and value (NaN equal to NaN)."""
    return (type(value).__name__, "nan" if value != value else value)


def _outcome(parser_kwargs, path):
    parser = CSVParser(**parser_kwargs)
    got = []
    try:
        for batch in parser.read(path):
            times = batch.time_ns or [None] * len(batch)
            rows = [tuple(map(_norm, r)) for r in zip(*batch.columns)]
            got.extend(zip(batch.lines, rows, times, strict=True))
    except (CSVParseError, MissingFieldError) as exc:
        got.append((type(exc).__name__, getattr(exc, "line", None)))
    return got, parser.kinds, parser.skipped_rows


_typed_cells = [
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["true", "false", "TRUE", "False"]),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=5))]),
    ).map(lambda d: d.isoformat()),
    st.text(alphabet='abc," \n', min_size=1, max_size=5),
]


@st.composite
def _tables(draw):
    """Rows whose columns mostly hold one kind of value (so the fast path runs), with some noise."""
    width = draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(_typed_cells)) for _ in range(width)]
    noisy = draw(st.booleans())
    cell = [st.one_of(k, st.just(""), _cells) if noisy else st.one_of(k, k, k, st.just("")) for k in kinds]
    n = draw(st.integers(0, 30))
    rows = [[draw(c) for c in cell] for _ in range(n)]
    if noisy and rows and draw(st.booleans()):
        rows.insert(draw(st.integers(0, len(rows))), draw(st.lists(_cells, max_size=width + 1)))
    return rows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=_tables(),
    batch_size=st.integers(1, 8),
    on_error=st.sampled_from(["raise", "skip"]),
    time_field=st.sampled_from([None, 0]),
)
def test_fast_path_gives_the_reference_results(tmp_path, monkeypatch, rows, batch_size, on_error, time_field):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path = write(tmp_path, buf.getvalue(), name="h.csv")
    kw = {"batch_size": batch_size, "on_error": on_error, "time_field": time_field}
    assert _outcome(kw, path) == _reference(kw, path, monkeypatch)


def test_fast_path_is_taken_for_clean_batches(tmp_path, monkeypatch):
    path = write(tmp_path, "a,b,c\n" + "x,1,2024-01-01T00:00:00Z\n" * 50)
    calls = []
    original = CSVParser._convert_slow
    monkeypatch.setattr(CSVParser, "_convert_slow", lambda self, *a: calls.append(1) or original(self, *a))
    assert len(rows_of(path, header=True, time_field="c", batch_size=10)) == 50
    assert calls == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_cells, min_size=2, max_size=2), min_size=1, max_size=20))
def test_values_are_the_reference_value_of_each_cell(tmp_path, rows):
    """Oracle for single-column inference: each cell parsed on its own by the documented candidate order."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[r[0]] for r in rows])
    path = write(tmp_path, buf.getvalue(), name="v.csv")
    got, _, _ = _outcome({"on_error": "skip"}, path)
    kind = None
    expected = []
    for (cell,) in ((r[0],) for r in rows):
        if cell == "":
            expected.append(None)
            continue
        value, kind = _reference_cell(cell, kind)
        if value is not _SKIP:
            expected.append(value)
    assert [v[0] for _, v, _ in got] == [_norm(v) for v in expected]


_SKIP = object()


def _reference_cell(cell, kind):
    def candidates():
        if cell.lower() in ("true", "false"):
            yield "bool", cell.lower() == "true"
        for name, fn in (("int", int), ("float", float)):
            try:
                yield name, fn(cell)
            except ValueError:
                pass
        try:
            yield "datetime", parse_datetime(cell)
        except ValueError:
            pass
        yield "str", cell

    options = dict(reversed(list(candidates())))
    if kind is None:
        first = next(iter(candidates()))
        return first[1], first[0]
    if kind in options:
        return options[kind], kind
    if kind == "int" and "float" in options:
        return options["float"], "float"
    return _SKIP, kind


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)), min_size=1
    ),
    sep=st.sampled_from(["T", " "]),
    frac=st.integers(0, 6),
    tail=st.sampled_from(["", "Z", "+00:00"]),
)
def test_vectorised_iso_column_matches_the_per_value_parse(values, sep, frac, tail):
    from storey.sources._csvparse import _fast_iso

    col = tuple(
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}{sep}{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        + (f".{d.microsecond:06d}"[: frac + 1] if frac else "")
        + tail
        for d in values
    )
    dts, ns = _fast_iso(col, False)
    assert dts == [parse_datetime(s) for s in col]
    assert all(d.tzinfo is UTC for d in dts)
    expected = []
    for d in dts:
        try:
            expected.append(to_ns(d))
        except ValueError:  # outside 1677..2262: the column gets no vectorised ns
            expected = None
            break
    assert ns == expected
