"""ReadCSV through `storey.frames`' vectorised reader gives exactly what the parser alone gives: bodies (values
and types), keys, times, origins, ids, errors, skipped rows and metrics, also when it falls back mid-file."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storey.sources.csv as csv_source
from storey import FlowError, ReadCSV, Reduce, build_flow
from storey.frames import _io_csv

VALUES = {
    "int": st.integers(-(10**6), 10**6).map(str),
    "float": st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    "bool": st.sampled_from(["true", "False", "TRUE"]),
    "str": st.sampled_from(["a", "bb", "x y", "ok", "fail"]),
    "time": st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2030, 1, 1)).map(
        lambda d: d.isoformat(timespec="milliseconds") + "Z"
    ),
}
ODD = st.sampled_from(['"quoted, value"', "", "1.5", "abc", "2024-01-01", "1,2"])


@st.composite
def csv_text(draw):
    kinds = draw(st.lists(st.sampled_from(["int", "float", "bool", "str"]), min_size=1, max_size=3))
    n = draw(st.integers(0, 60))
    lines = ["key,time," + ",".join(f"c{j}" for j in range(len(kinds)))]
    for _ in range(n):
        fields = [draw(VALUES["str"]), draw(VALUES["time"])]
        for kind in kinds:
            fields.append(draw(ODD) if draw(st.integers(0, 30)) == 0 else draw(VALUES[kind]))
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def read(paths, monkeypatch, vectorised, **kwargs):
    monkeypatch.setattr(csv_source, "VECTORISED", vectorised)
    monkeypatch.setattr(csv_source, "VECTORISED_MIN_BYTES", 0)
    monkeypatch.setattr(csv_source, "_FAST_BATCH", 7)
    monkeypatch.setattr(_io_csv, "_BLOCK", 97)  # many blocks: fallbacks happen mid-file
    monkeypatch.setattr(_io_csv, "_HEADER_MAX", 64)  # (the first read holds the header and what follows)
    source = ReadCSV(paths, header=True, key_field="key", time_field="time", **kwargs)
    flow = build_flow(
        [source, Reduce([], lambda a, e: [*a, (e.body, e.key, e.time_ns, e.origin)], full_event=True)]
    )
    try:
        out, error = flow.run().await_termination(), None
    except FlowError as exc:
        out, error = None, str(exc)
    typed = (
        None
        if out is None
        else [(tuple(map(type, b)) if isinstance(b, list) else type(b), *r) for b, *r in out]
    )
    return out, typed, error, dict(source.metrics)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(csv_text(), min_size=1, max_size=2), on_error=st.sampled_from(["raise", "skip"]))
def test_vectorised_equals_parser(tmp_path_factory, monkeypatch, texts, on_error):
    tmp = tmp_path_factory.mktemp("csv")
    paths = []
    for i, text in enumerate(texts):
        path = tmp / f"f{i}.csv"
        path.write_text(text, encoding="utf-8", newline="")
        paths.append(str(path))
    got = read(paths, monkeypatch, True, on_error=on_error)
    want = read(paths, monkeypatch, False, on_error=on_error)
    assert got[0] == want[0]
    assert got[1:] == want[1:]


def test_duplicate_header_names_use_the_parser(tmp_path, monkeypatch):
    path = tmp_path / "d.csv"
    path.write_text("key,time,v,v\na,2024-01-01T00:00:00Z,1,2\n", encoding="utf-8")
    got = read([str(path)], monkeypatch, True)
    assert got[0][0][0] == ["a", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 1, 2]
    assert got == read([str(path)], monkeypatch, False)


def test_small_local_files_use_the_parser_alone(tmp_path, monkeypatch):
    path = tmp_path / "s.csv"
    path.write_text("key,time\na,2024-01-01T00:00:00Z\n", encoding="utf-8")
    monkeypatch.setattr(_io_csv, "_fast_batches", pytest.fail)
    source = ReadCSV(str(path), header=True, key_field="key", time_field="time")
    assert build_flow([source, Reduce(0, lambda a, _: a + 1)]).run().await_termination() == 1


def test_small_files_import_neither_pyarrow_nor_storey_frames(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.csv"
    path.write_text("key,time\na,2024-01-01T00:00:00Z\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from storey import ReadCSV, Reduce, build_flow\n"
        f"src = ReadCSV({str(path)!r}, header=True, key_field='key', time_field='time')\n"
        "assert build_flow([src, Reduce(0, lambda a, _: a + 1)]).run().await_termination() == 1\n"
        "print(sorted(m for m in ('pyarrow', 'pandas', 'storey.frames') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
