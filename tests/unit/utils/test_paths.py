"""Path expansion and hive partitions (spec STEPS.md §5.4), checked against pyarrow.dataset."""

from __future__ import annotations

import os
import shutil
from urllib.parse import quote

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey._utils._paths import (
    expand_paths,
    hive_directory,
    hive_partitions,
    hive_segments,
    open_input,
    open_output,
)


def touch_parquet(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table({"x": [1]}), path)


def test_directories_are_walked_in_lexicographic_order_skipping_hidden(tmp_path):
    root = tmp_path / "data"
    for rel in [
        "b/2.parquet",
        "b/10.parquet",
        "a.parquet",
        "_tmp/x.parquet",
        ".hidden/y.parquet",
        "c/_SUCCESS",
    ]:
        touch_parquet(str(root / rel))
    files = [os.path.relpath(f.path, root) for f in expand_paths(str(root))]
    assert files == ["a.parquet", "b/10.parquet", "b/2.parquet"]
    assert files == sorted(files)


def test_lists_are_merged_sorted_and_deduplicated(tmp_path):
    for rel in ["z.parquet", "d/a.parquet"]:
        touch_parquet(str(tmp_path / rel))
    files = expand_paths([str(tmp_path / "z.parquet"), str(tmp_path / "d"), str(tmp_path / "z.parquet")])
    assert [f.path for f in files] == [str(tmp_path / "d" / "a.parquet"), str(tmp_path / "z.parquet")]


def test_explicit_hidden_file_is_kept_and_missing_path_raises(tmp_path):
    touch_parquet(str(tmp_path / "_x.parquet"))
    assert [f.path for f in expand_paths(str(tmp_path / "_x.parquet"))] == [str(tmp_path / "_x.parquet")]
    with pytest.raises(FileNotFoundError, match="nope"):
        expand_paths(str(tmp_path / "nope"))


def test_relative_paths_stay_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch_parquet("rel/k=1/f.parquet")
    [f] = expand_paths("rel")
    assert f.path == os.path.join("rel", "k=1", "f.parquet")
    assert f.partitions == (("k", "1"),)


def test_memory_urls_keep_their_scheme():
    fs = fsspec.filesystem("memory")
    for rel in ["b=2/f.parquet", "b=1/f.parquet", "_x/f.parquet"]:
        with fs.open(f"/storey-paths/{rel}", "wb") as f:
            f.write(b"x")
    try:
        files = expand_paths("memory://storey-paths")
        assert [f.path for f in files] == [
            "memory://storey-paths/b=1/f.parquet",
            "memory://storey-paths/b=2/f.parquet",
        ]
        assert [f.partitions for f in files] == [(("b", "1"),), (("b", "2"),)]
    finally:
        fs.rm("/storey-paths", recursive=True)


def test_hive_segments():
    assert hive_segments(["a=1", "plain", "b=%20x", "c=__HIVE_DEFAULT_PARTITION__", "=v"]) == (
        ("a", "1"),
        ("b", " x"),
        ("c", None),
    )


def test_open_output_creates_parents_and_open_input_reads(tmp_path):
    path = str(tmp_path / "a" / "b" / "f.txt")
    with open_output(path, "w") as f:
        f.write("x\n")
    with open_input(path) as f:
        assert f.read() == b"x\n"
    with pytest.raises(FileNotFoundError):
        open_input(str(tmp_path / "nope"))


def test_hive_directory_round_trips_through_hive_segments():
    rel = hive_directory([("a", 1), ("b c", "x/y"), ("n", None)])
    assert rel == "a=1/b%20c=x%2Fy/n=__HIVE_DEFAULT_PARTITION__"
    assert hive_segments(rel.split("/")) == (("a", "1"), ("b c", "x/y"), ("n", None))


_values = st.one_of(
    st.integers(-(2**33), 2**33).map(str),
    st.sampled_from(["+3", "007", "0x10", "-0", "", "abc", "1.5", " 3", "__HIVE_DEFAULT_PARTITION__", "a b"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(_values, _values), min_size=1, max_size=5, unique=True))
def test_partition_types_and_values_match_pyarrow_dataset(tmp_path, values):
    root = tmp_path / "hive"
    shutil.rmtree(root, ignore_errors=True)
    for a, b in values:
        touch_parquet(str(root / f"a={quote(a, safe='')}" / f"b={quote(b, safe='')}" / "f.parquet"))
    files = expand_paths(str(root))
    ours = hive_partitions(files)
    columns = [name for name, _ in ours.fields]
    assert columns == ["a", "b"]
    try:
        dataset = ds.dataset(str(root), partitioning="hive")
    except pa.ArrowInvalid:  # pyarrow refuses a field with only nulls; we type it as string
        assert any(all(v[i] == "__HIVE_DEFAULT_PARTITION__" for v in values) for i in (0, 1))
        return
    theirs = {name: dataset.schema.field(name).type for name in columns}
    assert dict(ours.fields) == theirs
    expected = {
        os.path.normpath(fr.path): ds.get_partition_keys(fr.partition_expression)
        for fr in dataset.get_fragments()
    }
    for f, got in zip(files, ours.values, strict=True):
        want = expected[os.path.normpath(f.path)]
        assert got == {k: want.get(k) for k in columns}
