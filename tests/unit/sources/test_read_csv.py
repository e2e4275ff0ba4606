"""ReadCSV as a flow source (spec STEPS.md §5.3, §3.4, §10)."""

from __future__ import annotations

import datetime as dt
import logging

import fsspec
import pytest

from storey import CSVSource, FlowError, ReadCSV, Reduce, build_flow
from storey._time import to_ns
from storey.errors import CSVParseError, MissingFieldError

UTC = dt.UTC


def write(tmp_path, text, name="a.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def collect(source):
    return (
        build_flow([source, Reduce([], lambda acc, e: [*acc, e], full_event=True)]).run().await_termination()
    )


def test_alias_is_the_same_class():
    assert CSVSource is ReadCSV


def test_list_bodies_key_and_time_by_index_zero(tmp_path):
    path = write(tmp_path, "2024-01-01T00:00:00,a,1\n2024-01-01T00:00:01+01:00,b,2\n")
    events = collect(ReadCSV(path, key_field=1, timestamp_field=0))
    assert [e.body for e in events] == [
        [dt.datetime(2024, 1, 1, tzinfo=UTC), "a", 1],
        [dt.datetime(2023, 12, 31, 23, 0, 1, tzinfo=UTC), "b", 2],
    ]
    assert [e.key for e in events] == ["a", "b"]
    assert [e.time_ns for e in events] == [to_ns("2024-01-01T00:00:00Z"), to_ns("2023-12-31T23:00:01Z")]
    assert [e.origin for e in events] == [(path, 1), (path, 2)]


def test_key_field_zero_is_valid(tmp_path):
    path = write(tmp_path, "k1,1\nk2,2\n")
    assert [e.key for e in collect(ReadCSV(path, key_field=0))] == ["k1", "k2"]


def test_dict_bodies_by_name_and_id_field(tmp_path):
    path = write(tmp_path, "id,user,t,v\nx1,u1,2024-01-01,1.5\nx2,u2,2024-01-02,\n")
    events = collect(
        ReadCSV(path, header=True, build_dict=True, key_field="user", time_field="t", id_field="id")
    )
    assert [e.body for e in events] == [
        {"id": "x1", "user": "u1", "t": dt.datetime(2024, 1, 1, tzinfo=UTC), "v": 1.5},
        {"id": "x2", "user": "u2", "t": dt.datetime(2024, 1, 2, tzinfo=UTC), "v": None},
    ]
    assert [e.id for e in events] == ["x1", "x2"]
    assert [e.origin for e in events] == [(path, 2), (path, 3)]
    assert events[0].time == dt.datetime(2024, 1, 1, tzinfo=UTC)


def test_header_without_build_dict_gives_lists(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    assert [e.body for e in collect(ReadCSV(path, header=True))] == [[1, 2]]


def test_build_dict_without_header_is_ignored(tmp_path):
    path = write(tmp_path, "1,2\n")
    assert [e.body for e in collect(ReadCSV(path, build_dict=True))] == [[1, 2]]


def test_no_time_field_means_now(tmp_path):
    path = write(tmp_path, "1\n")
    before = dt.datetime.now(UTC)
    [event] = collect(ReadCSV(path))
    assert before <= event.time <= dt.datetime.now(UTC)
    assert event.time.tzinfo is not None


def test_several_files_in_order(tmp_path):
    a = write(tmp_path, "v\n1\n2\n", name="b.csv")
    b = write(tmp_path, "v\n3\n", name="a.csv")
    events = collect(ReadCSV([a, b], header=True, build_dict=True))
    assert [(e.body["v"], e.origin) for e in events] == [(1, (a, 2)), (2, (a, 3)), (3, (b, 2))]


def test_time_field_synonym_and_both_given(tmp_path):
    path = write(tmp_path, "t\n2024-01-01\n")
    [event] = collect(ReadCSV(path, header=True, time_field="t"))
    assert event.time == dt.datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(TypeError, match="synonym"):
        ReadCSV(path, header=True, time_field="t", timestamp_field="t")


def test_construction_errors(tmp_path):
    with pytest.raises(ValueError, match="header"):
        ReadCSV("x.csv", key_field="k")
    with pytest.raises(ValueError, match="on_error"):
        ReadCSV("x.csv", on_error="ignore")
    with pytest.raises(TypeError, match="did you mean 'header'"):
        ReadCSV("x.csv", headers=True)


def test_unknown_name_fails_when_the_header_is_read(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(FlowError) as info:
        collect(ReadCSV(path, header=True, key_field="k"))
    assert isinstance(info.value.__cause__, ValueError)
    assert "'k'" in str(info.value.__cause__)


def test_missing_file_is_flow_error_caused_by_file_not_found(tmp_path):
    with pytest.raises(FlowError) as info:
        collect(ReadCSV(str(tmp_path / "nope.csv")))
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert "nope.csv" in str(info.value.__cause__)
    assert info.value.step == "ReadCSV"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a,b\n1,2\n3\n", 3),  # wrong field count
        ("a,b\n1,2\nx,2\n", 3),  # bad type
        ("a,t\n1,2024-01-01\n2,never\n", 3),  # bad timestamp
        ("", 1),  # empty file with header=True
    ],
)
def test_parse_errors_fail_the_flow_with_file_and_line(tmp_path, text, line):
    path = write(tmp_path, text)
    seen = []
    flow = build_flow(
        [ReadCSV(path, header=True, timestamp_field=1 if "t" in text[:4] else None), _Sink(seen)]
    )
    with pytest.raises(FlowError) as info:
        flow.run().await_termination()
    cause = info.value.__cause__
    assert isinstance(cause, CSVParseError)
    assert (cause.path, cause.line) == (path, line)
    assert f"line {line}" in str(cause) and path in str(cause)
    assert len(seen) == max(0, line - 2)  # the good rows before the bad one were processed


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"a\n1\n\xc3\x28\n3\n")
    with pytest.raises(FlowError) as info:
        collect(ReadCSV(str(path), header=True))
    assert info.value.__cause__.line == 3
    source = ReadCSV(str(path), header=True, on_error="skip")
    assert [e.body for e in collect(source)] == [[1], [3]]
    assert source.metrics["skipped_rows"] == 1


def test_skip_counts_and_logs(tmp_path, caplog):
    path = write(tmp_path, "a,b\n1,2\n3\nx,4\n5,6\n")
    source = ReadCSV(path, header=True, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="storey"):
        events = collect(source)
    assert [e.body for e in events] == [[1, 2], [5, 6]]
    assert source.metrics["skipped_rows"] == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("line 3" in m and path in m for m in messages)
    assert any("line 4" in m for m in messages)
    collect(source)  # metrics are reset at each run
    assert source.metrics["skipped_rows"] == 2


def test_empty_timestamp_is_missing_field_even_with_skip(tmp_path):
    path = write(tmp_path, "t,v\n2024-01-01,1\n,2\n")
    with pytest.raises(FlowError) as info:
        collect(ReadCSV(path, header=True, timestamp_field="t", on_error="skip"))
    assert isinstance(info.value.__cause__, MissingFieldError)
    assert "line 3" in str(info.value.__cause__) and path in str(info.value.__cause__)


def test_fsspec_memory_url(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("/storey-tests/read.csv", "w") as f:
        f.write("k,v\na,1\n")
    events = collect(ReadCSV("memory://storey-tests/read.csv", header=True, build_dict=True, key_field="k"))
    assert [(e.key, e.body) for e in events] == [("a", {"k": "a", "v": 1})]
    fs.rm("/storey-tests", recursive=True)


async def test_run_async_returns_the_termination_result(tmp_path):
    path = write(tmp_path, "1\n2\n3\n")
    flow = build_flow([ReadCSV(path), Reduce(0, lambda acc, b: acc + b[0])])
    assert await flow.run_async() == 6


def test_many_rows_cross_batches(tmp_path):
    n = 5000
    path = write(tmp_path, "i,t\n" + "".join(f"{i},{i}\n" for i in range(n)))
    events = collect(ReadCSV(path, header=True, build_dict=True, timestamp_field="t"))
    assert [e.body["i"] for e in events] == list(range(n))
    assert [e.time_ns for e in events] == [to_ns(i) for i in range(n)]
    assert events[-1].origin == (path, n + 1)


def test_duplicate_names_with_build_dict(tmp_path):
    path = write(tmp_path, "a,a\n1,2\n")
    with pytest.raises(FlowError, match="unique"):
        collect(ReadCSV(path, header=True, build_dict=True))


class _Sink(Reduce):
    def __init__(self, seen):
        super().__init__(None, lambda acc, x: seen.append(x))
