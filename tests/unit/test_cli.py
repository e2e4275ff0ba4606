"""The `storey` console script: backfill with feature files, demo, exit codes (AGGREGATIONS.md §8.9)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storey.frames as frames
from storey.cli import DEMO_FEATURES, load_feature_spec, main

ROWS = {
    "key": ["a", "b", "a", "a", "b"],
    "time": pa.array([0, 60, 120, 4000, 4100], pa.timestamp("s", "UTC")),
    "click": [1, 2, 3, 4, 5],
    "status": ["ok", "fail", "fail", "ok", "fail"],
}
SPEC = {
    "key": "key",
    "time_field": "time",
    "aggregates": [
        {
            "name": "clicks",
            "column": "click",
            "operations": ["sum", "count"],
            "windows": ["1h"],
            "period": "10m",
        },
        {
            "name": "fails",
            "column": "status",
            "operations": ["count"],
            "windows": ["1h"],
            "period": "10m",
            "aggregation_filter": {"field": "status", "equals": "fail"},
        },
    ],
}


@pytest.fixture
def events(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table(ROWS), path)
    return path


def _expected(events):
    spec = load_feature_spec_from_dict(SPEC)
    return frames.aggregate(str(events), spec["aggregates"], key="key", time_field="time")


def load_feature_spec_from_dict(doc):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "spec.json"
    path.write_text(json.dumps(doc))
    return load_feature_spec(path)


@pytest.mark.parametrize("fmt", ["json", "yaml", "py"])
def test_backfill_with_every_feature_file_format(tmp_path, events, fmt, capsys):
    spec = tmp_path / f"features.{fmt}"
    if fmt == "json":
        spec.write_text(json.dumps(SPEC))
    elif fmt == "yaml":
        import yaml

        spec.write_text(yaml.safe_dump(SPEC))
    else:
        spec.write_text(f"key = 'key'\ntime_field = 'time'\naggregates = {SPEC['aggregates']!r}\n")
    out = tmp_path / "features.parquet"
    assert main(["backfill", str(events), "--features", str(spec), "-o", str(out), "--no-progress"]) == 0
    got = pq.read_table(out)
    want = _expected(events)
    assert got.column_names == want.column_names
    assert got.to_pylist() == want.to_pylist()
    printed = capsys.readouterr().out
    assert "rows in:  5" in printed and "rows out: 5" in printed and "rows/s" in printed


def test_filter_in_feature_file_becomes_field_equals(tmp_path, events):
    out = tmp_path / "o.csv"
    spec = tmp_path / "f.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["backfill", str(events), "--features", str(spec), "-o", str(out), "--no-progress"]) == 0
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    fails = [int(line.split(",")[header.index("fails_count_1h")]) for line in lines[1:]]
    assert fails == [
        0,
        1,
        1,
        0,
        1,
    ]  # b@60 fail; a@120 fail; a@4000: the 1h window left 0-10m; b@4100: 60s gone


def test_usage_errors_exit_2_and_bad_input_exits_1(tmp_path, events, capsys):
    assert main(["backfill", str(events)]) == 2  # --features and -o are required
    spec = tmp_path / "nokey.json"
    spec.write_text(json.dumps({"aggregates": SPEC["aggregates"]}))
    assert main(["backfill", str(events), "--features", str(spec), "-o", str(tmp_path / "x.parquet")]) == 2
    assert "key" in capsys.readouterr().err
    good = tmp_path / "f.json"
    good.write_text(json.dumps(SPEC))
    rc = main(
        [
            "backfill",
            str(tmp_path / "missing.parquet"),
            "--features",
            str(good),
            "-o",
            str(tmp_path / "y.parquet"),
        ]
    )
    assert rc == 1
    rc = main(
        [
            "backfill",
            str(events),
            "--features",
            str(good),
            "--time-field",
            "nope",
            "-o",
            str(tmp_path / "z.parquet"),
        ]
    )
    assert rc == 1
    assert "nope" in capsys.readouterr().err


def test_demo_runs_without_pandas(tmp_path):
    out = tmp_path / "demo.parquet"
    code = (
        "import sys\n"
        "class NoPandas:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pandas' or name.startswith('pandas.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'pandas'\")\n"
        "sys.meta_path.insert(0, NoPandas())\n"
        "from storey.cli import main\n"
        f"sys.exit(main(['demo', '-o', {str(out)!r}, '--no-progress']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    names = [
        f"{a['name']}_{op}_{w}"
        for a in DEMO_FEATURES["aggregates"]
        for op in a["operations"]
        for w in a["windows"]
    ]
    assert set(names) <= set(table.column_names)
    assert table.num_rows > 100_000
    assert "number_of_clicks_count_1h" in proc.stdout and "rows out" in proc.stdout
