"""Bad input in `storey.frames.io` (AGGREGATIONS.md §8.8): raised directly, naming the column, input and row."""

from __future__ import annotations

import datetime as dt
import logging
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storey.errors import CSVParseError, MissingFieldError
from storey.frames.io import InputBatch, iter_batches, times_ns

UTC = dt.UTC


def write_csv(tmp_path, text, name="a.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def write_parquet(tmp_path, table, name="a.parquet", **kw):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), **kw)
    return str(path)


def consume(data, **kw):
    """Rows delivered before the error, and the error."""
    rows = []
    try:
        for b in iter_batches(data, **kw):
            rows.extend(b.batch.to_pylist())
    except Exception as exc:
        return rows, exc
    return rows, None


# ------------------------------------------------------------------------------------------ missing columns
@pytest.mark.parametrize("field", ["time_field", "key_fields", "value_fields"])
def test_missing_column_names_column_and_input_before_any_row_of_that_input(tmp_path, field):
    good = pa.table({"k": ["a"], "t": [0], "v": [1.0]})
    bad = pa.table({"other": [1, 2]})
    arg = {"time_field": "t", "key_fields": ["k"], "value_fields": ["v"]}[field]
    name = "t" if field == "time_field" else arg[0]
    csv_path = write_csv(tmp_path, "other\n1\n")
    pq_path = write_parquet(tmp_path, bad)
    for data, where in [
        ([good, bad], "<input 1>"),
        ([good, bad.to_pandas()], "<input 1>"),
        ([good, csv_path], csv_path),
        ([good, pq_path], pq_path),
        ([good, iter(bad.to_batches())], "<input 1>"),
        ([good, pl_frame(bad)], "<input 1>"),
    ]:
        rows, err = consume(data, **{field: arg})
        assert rows == good.to_pylist()  # the first input was delivered, nothing of the second
        assert isinstance(err, MissingFieldError), err
        assert repr(name) in str(err) and where in str(err)


def pl_frame(table):
    import polars as pl

    return pl.from_arrow(table)


def test_missing_projected_column(tmp_path):
    path = write_parquet(tmp_path, pa.table({"a": [1]}))
    with pytest.raises(MissingFieldError, match=r"'nope'.*a\.parquet"):
        list(iter_batches(path, columns=["nope"]))


# --------------------------------------------------------------------------------------------- null times
def test_null_time_names_column_input_and_row_after_the_rows_before_it(tmp_path):
    times = pa.array([0, 1, 2, None, 4], pa.timestamp("ms", tz="UTC"))
    table = pa.table({"t": times, "v": range(5)})
    path = write_parquet(tmp_path, table, row_group_size=2)
    for data, where in [(path, f"(input {path!r}, row 3)"), (table, "(input '<input 0>', row 3)")]:
        rows, err = consume(data, time_field="t", batch_size=2)
        assert [r["v"] for r in rows] == [0, 1, 2]
        assert isinstance(err, MissingFieldError) and str(err) == f"time field 't' is null {where}"
    df = table.to_pandas()
    rows, err = consume([table.slice(0, 1), df], time_field="t")
    assert len(rows) == 1 + 3 and "'<input 1>', row 3" in str(err) and isinstance(err, MissingFieldError)


def test_null_time_in_csv_names_the_line(tmp_path):
    path = write_csv(tmp_path, 't,v\n2024-01-01,1\n"2024-01-02",2\n,3\n')
    for on_error in ("raise", "skip"):  # an empty time is not a parse error: it is never skipped
        rows, err = consume(path, time_field="t", on_error=on_error)
        assert [r["v"] for r in rows] == [1, 2]
        assert isinstance(err, MissingFieldError)
        assert "'t'" in str(err) and repr(path) in str(err) and "line 4" in str(err)


# ---------------------------------------------------------------------------------- unconvertible times
@pytest.mark.parametrize(
    ("column", "error"),
    [
        (pa.array(["2024-01-01", "soon"]), ValueError),
        (pa.array([1.0, float("inf")]), ValueError),
        (pa.array([True, False]), TypeError),
        (pa.array([0, 2**62]), ValueError),
        (pa.array([0, 10**15], pa.timestamp("s")), ValueError),
    ],
)
def test_unconvertible_time_names_column_input_and_row(column, error):
    table = pa.table({"when": column})
    rows, err = consume([table.slice(0, 0), table], time_field="when")
    if column.type == pa.bool_():
        assert rows == [] and "row 0" in str(err)
    else:
        assert len(rows) == 1 and "row 1" in str(err)
    assert type(err) is error and "'when'" in str(err) and "<input 1>" in str(err)


def test_unparseable_csv_time_is_a_parse_error_with_line(tmp_path):
    path = write_csv(tmp_path, "t\n2024-01-01\nsoon\n")
    rows, err = consume(path, time_field="t")
    assert len(rows) == 1 and isinstance(err, CSVParseError) and (err.path, err.line) == (path, 3)
    rows, err = consume(path, time_field="t", on_error="skip")
    assert len(rows) == 1 and err is None


def test_times_ns_of_a_batch_without_precomputed_times():
    batch = InputBatch(pa.record_batch({"t": ["2024-01-01T00:00:00+02:00", None]}), "x.csv", 0, lines=[5, 9])
    with pytest.raises(MissingFieldError, match=r"^time field 't' is null \(file 'x.csv', line 9\)$"):
        times_ns(batch, "t")
    assert times_ns(InputBatch(batch.batch.slice(0, 1), "<input 0>", 0), "t").tolist() == [
        1704060000000000000
    ]
    with pytest.raises(MissingFieldError, match="'u'"):
        times_ns(batch, "u")


# ------------------------------------------------------------------------------------- CSV parse errors
def test_parse_error_names_path_and_line_after_the_rows_before_it(tmp_path):
    path = write_csv(tmp_path, 'k,v\na,x\nb,"x\ny"\nc\n')
    rows, err = consume(path)
    assert [r["k"] for r in rows] == ["a", "b"]
    assert isinstance(err, CSVParseError) and (err.path, err.line) == (path, 5)
    assert repr(path) in str(err) and "line 5" in str(err)


def test_skip_counts_and_logs_the_first_ten_per_file(tmp_path, caplog):
    text = "k,v\n" + "".join(f"a,{i}\nbad\n" for i in range(12))
    paths = [write_csv(tmp_path, text, "a.csv"), write_csv(tmp_path, text, "b.csv")]
    with caplog.at_level(logging.WARNING, logger="storey"):
        batches = list(iter_batches(paths, on_error="skip", batch_size=5))
    assert sum(b.skipped_rows for b in batches) == 24
    assert sum(b.num_rows for b in batches) == 24
    for path in paths:
        logged = [r.getMessage() for r in caplog.records if repr(path) in r.getMessage()]
        assert len(logged) == 10 and all("storey.frames" in m for m in logged)


def test_empty_csv_file_is_a_parse_error_at_line_1(tmp_path):
    path = write_csv(tmp_path, "")
    rows, err = consume(path)
    assert rows == [] and isinstance(err, CSVParseError) and (err.path, err.line) == (path, 1)
    batches = list(iter_batches(path, on_error="skip"))
    assert sum(b.skipped_rows for b in batches) == 1 and sum(b.num_rows for b in batches) == 0


# ------------------------------------------------------------------------------------ not errors at all
def test_mixed_time_zones_are_utc_instants(tmp_path):
    t0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
    a = write_parquet(
        tmp_path, pa.table({"t": pa.array([t0], pa.timestamp("us", tz="Asia/Tokyo"))}), "a.parquet"
    )
    b = write_parquet(tmp_path, pa.table({"t": pa.array([t0], pa.timestamp("ns"))}), "b.parquet")
    c = write_csv(tmp_path, "t\n2024-01-01T09:00:00+09:00\n2024-01-01T00:00:00\n2023-12-31T19:00:00-05:00\n")
    df = pd.DataFrame({"t": [pd.Timestamp("2024-01-01T01:00", tz="Europe/Paris")]})
    ns = [x for bt in iter_batches([a, b, c, df], time_field="t") for x in bt.time_ns.tolist()]
    assert ns == [1704067200000000000] * 6


def test_header_only_csv_and_empty_parquet_contribute_no_rows(tmp_path):
    csv_path = write_csv(tmp_path, "k,t\n")
    pq_path = write_parquet(tmp_path, pa.table({"k": pa.array([], pa.string())}))
    assert consume([csv_path, pq_path], key_fields=["k"]) == ([], None)


# ------------------------------------------------------------------------------------------ bad paths
def test_missing_path_is_file_not_found(tmp_path):
    for name in ("nope.parquet", "nope.csv", "nope_dir"):
        with pytest.raises(FileNotFoundError, match=name):
            list(iter_batches(str(tmp_path / name)))


def test_invalid_parquet_is_a_value_error_naming_the_path(tmp_path):
    junk = tmp_path / "d" / "x.parquet"
    junk.parent.mkdir()
    junk.write_bytes(b"not parquet at all")
    for data in (str(junk), str(junk.parent)):
        with pytest.raises(ValueError, match=r"x\.parquet"):
            list(iter_batches(data))
    truncated = write_parquet(tmp_path, pa.table({"v": range(1000)}), "t.parquet")
    raw = open(truncated, "rb").read()
    with open(truncated, "wb") as f:
        f.write(raw[:100] + raw[-200:])
    with pytest.raises(ValueError, match=r"t\.parquet"):
        list(iter_batches(truncated))
    assert os.path.exists(truncated)
