"""WriteToCSV (spec STEPS.md §8.2) and its round trip through ReadCSV."""

from __future__ import annotations

import datetime as dt
import math
import time

import fsspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import Complete, CSVTarget, FlowError, Map, ReadCSV, Reduce, Source, WriteToCSV, build_flow

UTC = dt.UTC


def run(writer, bodies, *, keys=None, before=None, after=None):
    steps = [Source()]
    if before is not None:
        steps.append(before)
    steps.append(writer)
    if after is not None:
        steps.append(after)
    c = build_flow(steps).run()
    for i, body in enumerate(bodies):
        c.emit(body, key=None if keys is None else keys[i])
    return c.terminate(wait=True)


def read_back(path):
    events = (
        build_flow([ReadCSV(path, header=True, build_dict=True), Reduce([], lambda acc, b: [*acc, b])])
        .run()
        .await_termination()
    )
    return events


def test_alias():
    assert CSVTarget is WriteToCSV


def test_header_inferred_in_body_order_with_metadata_and_renames(tmp_path):
    path = str(tmp_path / "sub" / "dir" / "out.csv")
    run(
        WriteToCSV(path, columns=["k=$key", "b=a"], header=True, infer_columns_from_data=True),
        [{"a": 1, "z": None, "c": "x,y"}, {"a": 2, "z": 1.5, "c": 'q"'}],
        keys=["k1", "k2"],
    )
    with open(path, newline="") as f:
        text = f.read()
    assert text == 'k,b,z,c\nk1,1,,"x,y"\nk2,2,1.5,"q"""\n'


def test_no_header_by_default_and_list_bodies_as_is(tmp_path):
    path = str(tmp_path / "out.csv")
    run(WriteToCSV(path), [[1, "a"], [2, None]])
    assert open(path).read() == "1,a\n2,\n"


def test_header_without_columns_fails(tmp_path):
    with pytest.raises(FlowError) as info:
        run(WriteToCSV(str(tmp_path / "o.csv"), header=True), [[1, 2]])
    assert isinstance(info.value.__cause__, ValueError)


def test_truncates_existing_file_even_without_events(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("old\nstuff\n")
    run(WriteToCSV(str(path), columns=["a"], header=True), [])
    assert path.read_text() == "a\n"
    run(WriteToCSV(str(path)), [])
    assert path.read_text() == ""


def test_datetimes_iso_and_floats_repr(tmp_path):
    path = str(tmp_path / "o.csv")
    ts = pd.Timestamp("2024-01-01T00:00:00.000000001", tz="UTC")
    run(
        WriteToCSV(path, columns=["t", "d", "f", "$time"]),
        [{"t": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "d": ts, "f": 0.1 + 0.2}],
    )
    line = open(path).read().strip()
    t, d, f, event_time = line.split(",")
    assert t == "2024-01-02T03:04:05+00:00"
    assert d == "2024-01-01T00:00:00.000000001+00:00"
    assert float(f) == 0.1 + 0.2 and f == repr(0.1 + 0.2)
    assert dt.datetime.fromisoformat(event_time).tzinfo is not None


def test_events_are_forwarded_unchanged(tmp_path):
    got = run(
        WriteToCSV(str(tmp_path / "o.csv")),
        [{"a": 1}, {"a": 2}],
        keys=["x", "y"],
        after=Reduce([], lambda acc, e: [*acc, (e.key, e.body)], full_event=True),
    )
    assert got == [("x", {"a": 1}), ("y", {"a": 2})]


def test_missing_column_fails_with_missing_field(tmp_path):
    with pytest.raises(FlowError) as info:
        run(WriteToCSV(str(tmp_path / "o.csv")), [{"a": 1, "b": 2}, {"a": 3}])
    assert isinstance(info.value.__cause__, KeyError)
    assert "'b'" in str(info.value.__cause__)


def test_flush_every_n_rows_while_running(tmp_path):
    path = tmp_path / "o.csv"
    c = build_flow(
        [Source(), WriteToCSV(str(path), max_lines_before_flush=2, max_seconds_before_flush=None), Complete()]
    ).run()
    c.emit([1]).await_result()
    assert not path.exists() or path.read_text() == ""
    c.emit([2]).await_result()
    assert path.read_text() == "1\n2\n"  # flushed on disk while the flow still runs
    c.emit([3]).await_result()
    assert path.read_text() == "1\n2\n"
    c.terminate(wait=True)
    assert path.read_text() == "1\n2\n3\n"


def test_flush_after_seconds_synonym(tmp_path):
    path = tmp_path / "o.csv"
    c = build_flow(
        [Source(), WriteToCSV(str(path), max_events=100, flush_after_seconds=0.1), Complete()]
    ).run()
    c.emit([1]).await_result()
    deadline = time.monotonic() + 5
    while (not path.exists() or path.read_text() != "1\n") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.read_text() == "1\n"
    c.terminate(wait=True)
    with pytest.raises(TypeError, match="synonym"):
        WriteToCSV("x.csv", max_lines_before_flush=5, max_events=3)


@pytest.mark.parametrize("where", ["before", "after"])
def test_nothing_accepted_is_lost_when_a_later_event_fails(tmp_path, where):
    path = str(tmp_path / "o.csv")
    k = 5

    def boom(body):
        if body["i"] == k:
            raise RuntimeError("boom")
        return body

    writer = WriteToCSV(path, header=True, max_lines_before_flush=1000, max_seconds_before_flush=None)
    with pytest.raises(FlowError):
        run(writer, [{"i": i} for i in range(10)], **{where: Map(boom)})
    written = [row["i"] for row in read_back(path)]
    # a failing step before the writer: rows 0..k-1; after it: row k was accepted (written) too
    assert written == list(range(k if where == "before" else k + 1))


def test_fsspec_memory_url(tmp_path):
    run(WriteToCSV("memory://storey-wcsv/o.csv", columns=["a"], header=True), [{"a": 1}])
    fs = fsspec.filesystem("memory")
    try:
        assert fs.cat("/storey-wcsv/o.csv") == b"a\n1\n"
        assert [b["a"] for b in read_back("memory://storey-wcsv/o.csv")] == [1]
    finally:
        fs.rm("/storey-wcsv", recursive=True)


def test_a_second_run_truncates_again(tmp_path):
    path = tmp_path / "o.csv"
    flow = build_flow([Source(), WriteToCSV(str(path))])
    c = flow.run()
    c.emit([1])
    c.terminate(wait=True)
    c = flow.run()
    c.emit([2])
    c.terminate(wait=True)
    assert path.read_text() == "2\n"


_columns = {
    "i": st.integers(-(2**70), 2**70),
    "f": st.floats(allow_nan=True, allow_infinity=True),
    "b": st.booleans(),
    "s": st.text(alphabet='ab, "\n\r\t\u00e9\u4e2d', max_size=6).map(lambda s: "x" + s),
    "t": st.datetimes(
        min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.fixed_dictionaries({k: st.one_of(st.none(), v) for k, v in _columns.items()}),
        min_size=1,
        max_size=20,
    )
)
def test_round_trip_through_read_csv(tmp_path, rows):
    path = str(tmp_path / "rt.csv")
    run(WriteToCSV(path, header=True, max_lines_before_flush=7), rows)
    back = read_back(path)
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        assert list(got) == list(rows[0])
        for name in want:
            a, b = got[name], want[name]
            if name == "f" and b is not None:
                # a float column whose first value is e.g. 'inf'/'nan' still parses as float; an int-looking
                # float never appears because repr() always writes a '.', 'e', 'inf' or 'nan'
                assert type(a) is float and (a == b or (math.isnan(a) and math.isnan(b)))
            else:
                assert a == b and type(a) is type(b)


def test_a_run_that_fails_before_any_row_leaves_an_existing_file_alone(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("previous\n")

    def boom(body):
        raise RuntimeError("boom")

    with pytest.raises(FlowError):
        run(WriteToCSV(str(path), columns=["a"], header=True), [{"a": 1}], before=Map(boom))
    assert path.read_text() == "previous\n"


def test_write_csv_rows_is_the_writer_format():
    import io

    from storey.targets.files import write_csv_rows

    buf = io.StringIO()
    write_csv_rows(buf, [[None, 1.0, dt.datetime(2024, 1, 1, tzinfo=UTC), "a\rb", "c\nd", True]])
    assert buf.getvalue() == ',1.0,2024-01-01T00:00:00+00:00,"a\rb","c\nd",True\n'
