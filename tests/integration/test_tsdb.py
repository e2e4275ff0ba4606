"""`WriteToTSDB` against the V3IO emulator's framesd endpoints, through the real ``v3io_frames`` client.

Two views of what was written: the **wire** (the protobuf frames the client sent, decoded here: times in
exact int64 ns, index columns, metric columns, null flags) and the emulator's **samples** (what framesd
stored: labels, metric, time in ms, value).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import AsyncSource, FlowError, Map, Reduce, Source, V3ioError, build_flow
from storey.drivers._retry import RetryPolicy
from storey.errors import MissingFieldError
from storey.event import Event
from storey.targets.tsdb import FramesServerError, TSDBTarget, WriteToTSDB, is_transient
from storey.testing.v3io_emulator import V3ioEmulator

try:
    import v3io_frames
    from v3io_frames import frames_pb2 as fpb
except ImportError as exc:  # never a silent skip: CI (STOREY_REQUIRE_SERVICES=1) fails instead
    _msg = f"PACKAGE MISSING: v3io_frames cannot be imported ({exc}; pip install storey[tsdb]); these tests did NOT run"
    if os.environ.get("STOREY_REQUIRE_SERVICES") == "1":
        raise ImportError(_msg) from exc
    pytest.skip(_msg, allow_module_level=True)

pytestmark = pytest.mark.v3io

TABLE = "/bigdata/metrics"
FAST = RetryPolicy(retry_backoff_secs=0.001)
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z in ns


# ------------------------------------------------------------------------------------------- helpers
def target(emu: V3ioEmulator, path: str = TABLE, *, fast: bool = False, **kwargs: Any) -> WriteToTSDB:
    kwargs.setdefault("rate", "1/s")
    step = WriteToTSDB(path, v3io_frames=emu.frames_url, access_key="k", **kwargs)
    if fast:
        step._retry = FAST
    return step


def collect() -> Reduce:
    return Reduce([], lambda acc, x: [*acc, x])


def run(steps: list, events: list[Event]) -> Any:
    c = build_flow([Source(), *steps]).run()
    for ev in events:
        c.emit(ev)
    return c.terminate(wait=True)


def at(ns: int) -> np.datetime64:
    """An exact nanosecond event time."""
    return np.datetime64(ns, "ns")


def frames_client(emu: V3ioEmulator) -> Any:
    return v3io_frames.Client(emu.frames_url, container="bigdata", token="k", should_check_version=False)


def write_requests(emu: V3ioEmulator) -> list[Any]:
    return [r for r in emu.requests if r.function == "FramesWrite"]


def wire(emu: V3ioEmulator) -> list[dict[str, Any]]:
    """Every frame of every successful write, decoded: index and metric columns by name, null flags."""
    out = []
    for req in write_requests(emu):
        if req.status != 200:
            continue
        body, pos, messages = req.body, 0, []
        while pos < len(body):
            (size,) = struct.unpack_from("<q", body, pos)
            messages.append(body[pos + 8 : pos + 8 + size])
            pos += 8 + size
        for raw in messages[1:]:
            frame = fpb.Frame.FromString(raw)
            out.append(
                {
                    "index": {c.name: _values(c) for c in frame.indices},
                    "index_types": [fpb.DType.Name(c.dtype) for c in frame.indices],
                    "metrics": {c.name: _values(c) for c in frame.columns},
                    "nulls": [sorted(k for k, v in n.nullColumns.items() if v) for n in frame.null_values],
                }
            )
    return out


def _values(col: Any) -> list[Any]:
    return list(
        {fpb.FLOAT: col.floats, fpb.INTEGER: col.ints, fpb.STRING: col.strings, fpb.TIME: col.times}[
            col.dtype
        ]
    )


def samples(emu: V3ioEmulator, path: str = TABLE) -> list[tuple[str, dict[str, str], int, float]]:
    out = []
    for s in emu.tsdb_samples(path):
        labels = dict(s.labels)
        out.append((labels.pop("__name__"), labels, s.time_ms, s.value))
    return out


def cause_chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None:
        out.append(exc)
        exc = exc.__cause__
    return out


# --------------------------------------------------------------------------------- what is written
label_values = st.one_of(st.none(), st.sampled_from(["a", "b", "host-1", "é"]), st.integers(0, 3))
metric_values = st.one_of(st.none(), st.integers(-(2**40), 2**40), st.floats(-1e9, 1e9, allow_nan=False))


@st.composite
def batches(draw: Any) -> list[tuple[int, Any, dict[str, Any]]]:
    n = draw(st.integers(1, 12))
    # Sub-millisecond parts up to 998_999 ns: the emulator divides ns by 1e6 in floating point, and
    # away from the next millisecond that division truncates like integer division. Times may repeat
    # and go back.
    offsets = draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    return [
        (
            T0 + off * 1_000_000 + draw(st.sampled_from([0, 1, 999, 998_999])),
            draw(label_values),
            {"cpu": draw(metric_values), "mem": draw(st.integers(0, 2**40))},
        )
        for off in offsets
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=batches(), max_events=st.sampled_from([None, 1, 3]))
def test_samples_have_exact_times_labels_and_values(v3io_emulator_thread, rows, max_events) -> None:
    emu = v3io_emulator_thread
    emu.reset()
    events = [Event(dict(body), key=key, time=at(ns)) for ns, key, body in rows]
    out = run([target(emu, index_cols=["host=$key"], max_events=max_events), collect()], events)
    assert out == [body for _, _, body in rows]  # forwarded unchanged, in input order

    # oracle: batches of max_events rows in input order (the rest at termination), each sorted by time
    step = max_events or len(rows)
    batched = [rows[i : i + step] for i in range(0, len(rows), step)]
    batched = [sorted(b, key=lambda r: r[0]) for b in batched]  # sorted() is stable
    written = [r for b in batched for r in b]

    frames = wire(emu)
    assert [len(f["index"]["time"]) for f in frames] == [len(b) for b in batched]
    assert [t for f in frames for t in f["index"]["time"]] == [ns for ns, _, _ in written]  # exact ns
    assert all(f["index_types"] == ["TIME", "STRING"] for f in frames)
    expected_labels = ["" if k is None else str(k) for _, k, _ in written]
    assert [h for f in frames for h in f["index"]["host"]] == expected_labels
    assert all(list(f["metrics"]) == ["cpu", "mem"] for f in frames)
    assert [m for f in frames for m in f["metrics"]["mem"]] == [b["mem"] for _, _, b in written]
    nulls = [n for f in frames for n in (f["nulls"] or [[] for _ in f["index"]["time"]])]
    assert nulls == [["cpu"] if b["cpu"] is None else [] for _, _, b in written]

    expected = []
    for (ns, _, body), label in zip(written, expected_labels, strict=True):
        for metric in ("cpu", "mem"):
            value = body[metric]
            expected.append(
                (metric, {"host": label}, ns // 1_000_000, 0.0 if value is None else float(value))
            )
    assert samples(emu) == expected


def test_times_that_go_back_are_sorted_within_a_batch(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    times = [T0 + 5, T0 + 2, T0 + 9, T0 + 2, T0]
    run([target(emu, max_events=3)], [Event({"v": i}, time=at(t)) for i, t in enumerate(times)])
    assert [f["index"]["time"] for f in wire(emu)] == [[T0 + 2, T0 + 5, T0 + 9], [T0, T0 + 2]]
    assert [f["metrics"]["v"] for f in wire(emu)] == [[1, 0, 2], [4, 3]]


def test_time_from_a_body_field_renamed_columns_and_labels(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    events = [
        Event({"ts": "2024-01-01T00:00:00.123456789Z", "cpu": 1.5, "dc": "eu", "x": "ignored"}, key="h1"),
        Event(
            {"ts": dt.datetime(2024, 1, 1, 0, 0, 1, 5, tzinfo=dt.UTC), "cpu": 2, "dc": "us", "x": 0}, key=7
        ),
        Event({"ts": 1_704_067_202_000, "cpu": None, "dc": None, "x": 0}, key="h1"),  # epoch ms
    ]
    step = target(emu, time_col="t=ts", index_cols=["host=$key", "dc"], columns=["cpu_pct=cpu"])
    run([step], events)
    (frame,) = wire(emu)
    assert frame["index"] == {
        "t": [T0 + 123_456_789, T0 + 1_000_005_000, T0 + 2_000_000_000],
        "host": ["h1", "7", "h1"],
        "dc": ["eu", "us", ""],
    }
    assert frame["metrics"] == {"cpu_pct": [1.5, 2.0, 0.0]}
    assert samples(emu) == [
        ("cpu_pct", {"host": "h1", "dc": "eu"}, 1_704_067_200_123, 1.5),
        ("cpu_pct", {"host": "7", "dc": "us"}, 1_704_067_201_000, 2.0),
        ("cpu_pct", {"host": "h1", "dc": ""}, 1_704_067_202_000, 0.0),
    ]


def test_list_bodies_fill_labels_then_metrics(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    events = [Event(["a", 1, 0.5], time=at(T0)), Event(["b", 2, 0.25], time=at(T0 + 1))]
    run([target(emu, index_cols=["host"], columns=["n", "load"])], events)
    (frame,) = wire(emu)
    assert frame["index"] == {"time": [T0, T0 + 1], "host": ["a", "b"]}
    assert frame["metrics"] == {"n": [1, 2], "load": [0.5, 0.25]}


def test_inferred_metrics_follow_the_first_body_and_skip_time_and_labels(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    events = [
        Event({"z": 1, "host": "a", "time": "no", "b": 2.0}, time=at(T0)),
        Event({"b": 3.0, "z": 4, "host": "b", "extra": 9}, time=at(T0 + 5)),
    ]
    run([target(emu, index_cols=["host"])], events)
    (frame,) = wire(emu)
    assert list(frame["metrics"]) == ["z", "b"]  # body key order, not sorted
    assert frame["metrics"] == {"z": [1, 4], "b": [2.0, 3.0]}


# ------------------------------------------------------------------------------------ table creation
def test_rate_creates_the_table_before_the_first_write(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    step = target(emu, rate="1/m", aggr="count,sum", aggr_granularity="2h")
    run([step], [Event({"v": 1}, time=at(T0))])
    calls = [r.function for r in emu.requests if r.function.startswith("Frames")]
    assert calls == ["FramesCreate", "FramesWrite"]
    create = next(r for r in emu.requests if r.function == "FramesCreate").json()
    assert create["table"] == "metrics"
    assert create["session"]["container"] == "bigdata"
    assert (create["rate"], create["aggregates"], create["aggregation_granularity"]) == (
        "1/m",
        "count,sum",
        "2h",
    )
    assert create["if_exists"] == v3io_frames.IGNORE
    schema = json.loads(emu.object_data(f"{TABLE}/.schema"))["tableSchemaInfo"]
    assert schema == {"rate": "1/m", "aggregates": "count,sum", "aggregationGranularity": "2h"}
    assert samples(emu) == [("v", {}, T0 // 1_000_000, 1.0)]


def test_an_existing_table_is_kept(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    client = frames_client(emu)
    client.create("tsdb", "metrics", rate="1/h", aggregates="max", aggregation_granularity="1d")
    old = v3io_frames_frame()
    client.write("tsdb", "metrics", old, index_cols=["time"])
    step = target(emu, rate="1/s", aggr="count")
    run([step], [Event({"v": 2}, time=at(T0 + 10**9))])
    schema = json.loads(emu.object_data(f"{TABLE}/.schema"))["tableSchemaInfo"]
    assert schema == {"rate": "1/h", "aggregates": "max", "aggregationGranularity": "1d"}
    assert samples(emu) == [("v", {}, T0 // 1_000_000, 1.0), ("v", {}, T0 // 1_000_000 + 1000, 2.0)]


def v3io_frames_frame() -> Any:
    import pandas as pd

    return pd.DataFrame({"time": pd.to_datetime([T0], unit="ns", utc=True), "v": [1.0]})


def test_without_rate_nothing_is_created(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    frames_client(emu).create("tsdb", "metrics", rate="1/s")
    run([target(emu, rate="")], [Event({"v": 1}, time=at(T0))])
    assert [r.function for r in emu.requests if r.function.startswith("Frames")] == [
        "FramesCreate",  # ours, above
        "FramesWrite",
    ]
    assert len(samples(emu)) == 1


def test_a_missing_table_without_rate_fails(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    with pytest.raises(FlowError) as info:
        run([target(emu, rate="", fast=True)], [Event({"v": 1}, time=at(T0))])
    err = info.value.__cause__
    assert isinstance(err, V3ioError)
    assert "no TSDB schema file found" in str(err)


def test_each_run_creates_the_table_if_it_is_missing(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    step = target(emu)
    flow = [step]
    run(flow, [Event({"v": 1}, time=at(T0))])
    emu.reset()  # the table is gone between the runs
    run(flow, [Event({"v": 2}, time=at(T0 + 1))])
    assert [r.function for r in emu.requests] == ["FramesCreate", "FramesWrite"]
    assert samples(emu) == [("v", {}, T0 // 1_000_000, 2.0)]


# ------------------------------------------------------------------------------------------ batching
def writes_seen_by_each_event(emu: V3ioEmulator) -> tuple[Map, list[int]]:
    seen: list[int] = []

    def note(body: Any) -> Any:
        seen.append(len(write_requests(emu)))
        return body

    return Map(note), seen


def test_max_events_writes_full_batches_before_forwarding(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    probe, seen = writes_seen_by_each_event(emu)
    events = [Event({"v": i}, time=at(T0 + i)) for i in range(7)]
    run([target(emu, max_events=3), probe], events)
    assert seen == [0, 0, 1, 1, 1, 2, 2]  # the 3rd and 6th events wait for their batch's write
    assert [len(f["index"]["time"]) for f in wire(emu)] == [3, 3, 1]  # the rest at termination
    assert [s[3] for s in samples(emu)] == [float(i) for i in range(7)]


def test_by_default_everything_is_written_at_termination(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    probe, seen = writes_seen_by_each_event(emu)
    run([target(emu), probe], [Event({"v": i}, time=at(T0 + i)) for i in range(50)])
    assert seen == [0] * 50
    assert [len(f["index"]["time"]) for f in wire(emu)] == [50]


def test_no_event_writes_nothing(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    run([target(emu)], [])
    assert list(emu.requests) == []


def test_timeout_secs_writes_a_waiting_batch(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    c = build_flow([Source(), target(emu, timeout_secs=0.1)]).run()
    c.emit(Event({"v": 1}, time=at(T0)))
    c.emit(Event({"v": 2}, time=at(T0 + 1)))
    deadline = time.monotonic() + 10
    while not write_requests(emu) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(f["index"]["time"]) for f in wire(emu)] == [2]
    c.emit(Event({"v": 3}, time=at(T0 + 2)))
    c.terminate(wait=True)
    assert [len(f["index"]["time"]) for f in wire(emu)] == [2, 1]


def test_flush_after_seconds_is_a_synonym() -> None:
    step = WriteToTSDB(TABLE, v3io_frames="http://127.0.0.1:1", flush_after_seconds=2)
    assert step._timeout_secs == 2
    with pytest.raises(TypeError, match="synonym"):
        WriteToTSDB(TABLE, v3io_frames="http://127.0.0.1:1", flush_after_seconds=2, timeout_secs=1)


def test_rows_are_written_when_a_later_step_fails(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread

    def boom(body: Any) -> Any:
        if body["v"] == 4:
            raise RuntimeError("later step failed")
        return body

    with pytest.raises(FlowError) as info:
        run(
            [target(emu, max_events=3), Map(boom)],
            [Event({"v": i}, time=at(T0 + i)) for i in range(10)],
        )
    assert isinstance(info.value.__cause__, RuntimeError)
    # rows 0-2 were written as a batch; rows 3-4 were accepted (buffered) and are written at close
    assert [len(f["index"]["time"]) for f in wire(emu)] == [3, 2]
    assert [s[3] for s in samples(emu)] == [0.0, 1.0, 2.0, 3.0, 4.0]


# -------------------------------------------------------------------------------- threads and loops
class RecordingClient:
    """Wraps a real frames client and records the thread of each call and whether a loop runs there."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, str, bool]] = []

    def _note(self, name: str) -> None:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.calls.append((name, threading.current_thread().name, on_loop))

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self._note("create")
        return self.client.create(*args, **kwargs)

    def write(self, *args: Any, **kwargs: Any) -> Any:
        self._note("write")
        return self.client.write(*args, **kwargs)


def test_a_given_client_is_called_from_a_worker_thread(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    client = RecordingClient(frames_client(emu))
    step = WriteToTSDB("metrics", frames_client=client, rate="1/s", max_events=2)  # the client's container
    loop_threads: set[str] = set()
    probe = Map(lambda body: loop_threads.add(threading.current_thread().name) or body)
    run([step, probe], [Event({"v": i}, time=at(T0 + i)) for i in range(3)])
    assert [name for name, _, _ in client.calls] == ["create", "write", "write"]
    assert not any(on_loop for _, _, on_loop in client.calls)
    assert len(loop_threads) == 1
    assert not loop_threads & {thread for _, thread, _ in client.calls}
    assert len(samples(emu)) == 3
    client.client.write("tsdb", "metrics", v3io_frames_frame(), index_cols=["time"])  # still usable


async def test_the_event_loop_keeps_running_during_a_slow_write(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(delay=0.5, function="FramesWrite")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    c = build_flow([AsyncSource(), target(emu)]).run()
    await c.emit({"v": 1}, event_time=at(T0))
    await c.terminate()
    start = ticks
    t = time.monotonic()
    await c.await_termination()
    elapsed = time.monotonic() - t
    ticking.cancel()
    assert elapsed >= 0.4
    assert ticks - start >= 10  # the loop ticked while the client waited for framesd
    assert len(samples(emu)) == 1


# ---------------------------------------------------------------------------------- retries, failures
@pytest.mark.parametrize(
    ("fault", "function"),
    [
        ({"status": 503, "times": 2}, "FramesWrite"),
        ({"status": 500, "times": 1}, "FramesCreate"),
        ({"drop": True, "times": 1}, "FramesWrite"),
    ],
    ids=["write-503", "create-500", "write-dropped"],
)
def test_transient_failures_are_retried_then_succeed(v3io_emulator_thread, fault, function) -> None:
    emu = v3io_emulator_thread
    injected = emu.inject_fault(function=function, **fault)
    t = time.monotonic()
    run([target(emu)], [Event({"v": i}, time=at(T0 + i)) for i in range(3)])  # the default policy
    elapsed = time.monotonic() - t
    assert injected.hits == fault["times"]
    attempts = [r.status for r in emu.requests if r.function == function]
    assert len(attempts) == fault["times"] + 1
    assert elapsed >= 0.1 * (2 ** fault["times"] - 1)  # 0.1 s, then 0.2 s
    assert [s[3] for s in samples(emu)] == [0.0, 1.0, 2.0]  # written once


def test_a_persistent_5xx_fails_the_flow_after_the_default_retries(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(503, times=None, function="FramesWrite", message="overloaded")
    t = time.monotonic()
    with pytest.raises(FlowError) as info:
        run([target(emu)], [Event({"v": 1}, time=at(T0))])
    elapsed = time.monotonic() - t
    chain = cause_chain(info.value)
    assert isinstance(chain[1], V3ioError)
    assert "still failing after 6 attempts" in str(chain[1])
    assert isinstance(chain[2], FramesServerError) and chain[2].status == 503
    assert isinstance(chain[3], v3io_frames.Error) and "overloaded" in str(chain[3])
    assert len(write_requests(emu)) == 6  # 1 + max_retries 5
    assert elapsed >= 0.1 + 0.2 + 0.4 + 0.8 + 1.6
    assert emu.tsdb_samples(TABLE) == []


def test_a_4xx_is_not_retried(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(400, times=None, function="FramesWrite")
    with pytest.raises(FlowError) as info:
        run([target(emu)], [Event({"v": 1}, time=at(T0))])
    assert isinstance(info.value.__cause__, V3ioError)
    assert isinstance(info.value.__cause__.__cause__, v3io_frames.Error)
    assert len(write_requests(emu)) == 1


def test_a_server_down_at_start_fails_after_retries() -> None:
    emu = V3ioEmulator().start()
    url = emu.frames_url
    emu.stop()  # nothing listens there now
    step = WriteToTSDB(TABLE, v3io_frames=url, rate="1/s")
    step._retry = FAST
    with pytest.raises(FlowError) as info:
        run([step], [Event({"v": 1}, time=at(T0))])
    err = info.value.__cause__
    assert isinstance(err, V3ioError)
    assert "still failing after 6 attempts" in str(err)
    assert is_transient(err.__cause__)


def test_a_timer_write_failure_fails_the_flow(v3io_emulator_thread) -> None:
    emu = v3io_emulator_thread
    emu.inject_fault(400, times=None, function="FramesWrite")
    c = build_flow([Source(), target(emu, timeout_secs=0.05)]).run()
    c.emit(Event({"v": 1}, time=at(T0)))
    with pytest.raises(FlowError) as info:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            c.emit(Event({"v": 2}, time=at(T0 + 1)))
            time.sleep(0.02)
    assert isinstance(info.value.__cause__, V3ioError)
    with pytest.raises(FlowError):
        c.await_termination()


def test_wrong_access_key_fails_with_v3io_error() -> None:
    with V3ioEmulator(access_key="secret") as emu:
        step = WriteToTSDB(TABLE, v3io_frames=emu.frames_url, access_key="wrong", rate="1/s")
        step._retry = FAST
        with pytest.raises(FlowError) as info:
            run([step], [Event({"v": 1}, time=at(T0))])
        assert isinstance(info.value.__cause__, V3ioError)
        assert "401" in str(info.value.__cause__)


def test_transient_classification() -> None:
    import requests

    assert is_transient(FramesServerError(502, RuntimeError("x")))
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    wrapped = v3io_frames.WriteError("conn")
    wrapped.__context__ = requests.exceptions.ConnectionError("refused")
    assert is_transient(wrapped)
    assert is_transient(requests.exceptions.ReadTimeout())
    assert not is_transient(requests.exceptions.SSLError())
    assert not is_transient(v3io_frames.Error("cannot call API - bad request"))
    assert not is_transient(ValueError("x"))


# ------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "body", "error", "match"),
    [
        ({"index_cols": ["host"]}, {"host": "a"}, ValueError, "no metric columns"),
        ({"columns": ["v"]}, {"w": 1}, MissingFieldError, "'v' is missing"),
        ({"time_col": "ts"}, {"ts": None, "v": 1}, MissingFieldError, "time column 'ts' is null"),
        ({"time_col": "ts"}, {"ts": "yesterday", "v": 1}, ValueError, "time column 'ts'"),
        ({}, [1, 2], ValueError, "columns are not known"),
        ({}, 5, ValueError, "columns are not known"),
    ],
)
def test_bad_events_fail_the_flow(v3io_emulator_thread, kwargs, body, error, match) -> None:
    emu = v3io_emulator_thread
    with pytest.raises(FlowError) as info:
        run([target(emu, **kwargs)], [Event(body, time=at(T0))])
    assert isinstance(info.value.__cause__, error)
    assert match in str(info.value.__cause__)
    assert "WriteToTSDB" in str(info.value.__cause__)


# ---------------------------------------------------------------------------------- construction
def test_url_and_access_key_fall_back_to_the_environment(monkeypatch) -> None:
    with V3ioEmulator(access_key="secret") as emu:
        monkeypatch.setenv("V3IO_FRAMES", emu.frames_url)
        monkeypatch.setenv("V3IO_ACCESS_KEY", "secret")
        run([TSDBTarget(TABLE, rate="1/s")], [Event({"v": 1}, time=at(T0))])
        assert len(emu.tsdb_samples(TABLE)) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((TABLE,), {}, "no framesd URL"),
        ((TABLE,), {"v3io_frames": "ftp://host:8080"}, "http://, https:// or grpc://"),
        (("metrics",), {"v3io_frames": "http://h"}, "does not name a container"),
        (("s3://bucket/metrics",), {"v3io_frames": "http://h"}, "v3io://"),
        (("",), {"v3io_frames": "http://h"}, "must name a TSDB table"),
        ((TABLE,), {"v3io_frames": "http://h", "aggr": "sum"}, "needs rate="),
        ((TABLE,), {"v3io_frames": "http://h", "aggr_granularity": "1h"}, "needs rate="),
        ((TABLE,), {"v3io_frames": "http://h", "max_events": 0}, "max_events"),
        ((TABLE,), {"v3io_frames": "http://h", "timeout_secs": 0}, "timeout_secs"),
        ((TABLE,), {"v3io_frames": "http://h", "infer_columns_from_data": False}, "no metric columns"),
        ((TABLE,), {"v3io_frames": "http://h", "columns": ["v"], "index_cols": ["v"]}, "listed twice"),
    ],
)
def test_construction_errors(monkeypatch, args, kwargs, match) -> None:
    monkeypatch.delenv("V3IO_FRAMES", raising=False)
    with pytest.raises(ValueError, match=match):
        WriteToTSDB(*args, **kwargs)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="did you mean 'max_events'"):
        WriteToTSDB(TABLE, v3io_frames="http://h", max_event=3)


@pytest.mark.parametrize(
    ("path", "container", "table"),
    [
        ("/bigdata/metrics", "", ("bigdata", "metrics")),
        ("bigdata/a/b", "", ("bigdata", "a/b")),
        ("v3io://bigdata/a/b", "", ("bigdata", "a/b")),
        ("v3io:///bigdata/a", "", ("bigdata", "a")),
        ("/a/b", "users", ("users", "a/b")),
    ],
)
def test_paths_name_the_container_and_table(v3io_emulator_thread, path, container, table) -> None:
    emu = v3io_emulator_thread
    step = WriteToTSDB(path, container=container, v3io_frames=emu.frames_url, rate="1/s")
    assert (step._container, step._table) == table
    run([step], [Event({"v": 1}, time=at(T0))])
    assert len(emu.tsdb_samples("/" + "/".join(table))) == 1
