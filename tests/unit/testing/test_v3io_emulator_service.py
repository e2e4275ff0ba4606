"""The V3IO emulator as a service: auth, fault injection, lifecycle (async, thread, CLI), the request log
and the framesd endpoints used by the v3io-frames HTTP client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import pandas as pd
import pytest
import v3io.aio.dataplane
import v3io.dataplane

from storey.testing.v3io_emulator import V3ioEmulator

pytestmark = pytest.mark.v3io

NEVER = v3io.aio.dataplane.RaiseForStatus.never
C = "bigdata"


def aio_client(url: str, key: str = "k") -> v3io.aio.dataplane.Client:
    # retry_intervals=(0,): let connection errors through instead of the SDK's minute of retries
    return v3io.aio.dataplane.Client(
        endpoint=url, access_key=key, logger_verbosity="ERROR", retry_intervals=(0,)
    )


# ----------------------------------------------------------------------------------------------- auth
async def test_wrong_access_key_gets_401() -> None:
    async with V3ioEmulator(access_key="secret") as emu:
        good, bad = aio_client(emu.url, "secret"), aio_client(emu.url, "wrong")
        await good.kv.put(C, "t", "k", {"a": 1})
        resp = await bad.kv.get(C, "t", "k", raise_for_status=NEVER)
        assert resp.status_code == 401
        with pytest.raises(v3io.dataplane.response.HttpResponseError) as info:
            await bad.object.put(C, "obj", body="x")
        assert info.value.status_code == 401
        assert emu.object_data(f"/{C}/obj") is None
        assert (await good.kv.get(C, "t", "k")).output.item == {"a": 1}
        await good.close()
        await bad.close()


def test_wrong_access_key_gets_401_sync_client() -> None:
    with V3ioEmulator(access_key="secret") as emu:
        c = v3io.dataplane.Client(endpoint=emu.url, access_key="wrong", logger_verbosity="ERROR")
        try:
            assert c.kv.get(C, "t", "k", raise_for_status="never").status_code == 401
        finally:
            c.close()


# ------------------------------------------------------------------------------------------- faults
async def test_forced_status_for_the_next_n_matching_requests(v3io_emulator) -> None:
    c = aio_client(v3io_emulator.url)
    fault = v3io_emulator.inject_fault(503, times=2, function="UpdateItem", path=f"/{C}/t/*")
    await c.kv.put(C, "t", "k", {"n": 0})  # PutItem does not match
    statuses = [
        (await c.kv.update(C, "t", "k", expression="n = n + 1", raise_for_status=NEVER)).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    assert fault.hits == 2
    assert fault.exhausted
    assert v3io_emulator.item(f"/{C}/t/k") == {"n": 1}  # failed requests changed nothing
    other = v3io_emulator.inject_fault(500, times=None, path=f"/{C}/other/*")
    for _ in range(3):
        assert (await c.kv.get(C, "other", "x", raise_for_status=NEVER)).status_code == 500
    assert (await c.kv.get(C, "t", "k", raise_for_status=NEVER)).status_code == 200
    assert other.hits == 3
    v3io_emulator.clear_faults()
    assert (await c.kv.get(C, "other", "x", raise_for_status=NEVER)).status_code == 404
    await c.close()


async def test_fault_predicate_and_error_body(v3io_emulator) -> None:
    c = aio_client(v3io_emulator.url)
    v3io_emulator.inject_fault(
        429, match=lambda r: r.json().get("AttributesToGet") == "x", error_code=-7, message="slow down"
    )
    await c.kv.put(C, "t", "k", {"x": 1})
    assert (await c.kv.get(C, "t", "k")).status_code == 200
    resp = await c.kv.get(C, "t", "k", attribute_names=["x"], raise_for_status=NEVER)
    assert resp.status_code == 429
    assert json.loads(resp.body) == {"ErrorCode": -7, "ErrorMessage": "slow down"}
    with pytest.raises(ValueError, match="needs a status"):
        v3io_emulator.inject_fault()
    await c.close()


async def test_dropped_connections(v3io_emulator) -> None:
    c = aio_client(v3io_emulator.url)
    fault = v3io_emulator.inject_fault(drop=True, times=2, function="GetItem")
    await c.kv.put(C, "t", "k", {"a": 1})
    # aiohttp resends an idempotent request (GetItem is a PUT) once on a reused connection, hence 2 drops
    with pytest.raises(aiohttp.ClientConnectionError):
        await c.kv.get(C, "t", "k")
    assert fault.hits == 2
    assert (await c.kv.get(C, "t", "k")).output.item == {"a": 1}
    assert [r.status for r in v3io_emulator.requests if r.function == "GetItem"] == [None, None, 200]
    await c.close()


async def test_delays(v3io_emulator) -> None:
    c = aio_client(v3io_emulator.url)
    v3io_emulator.inject_fault(delay=5.0, function="GetItem")
    await c.kv.put(C, "t", "k", {"a": 1})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.kv.get(C, "t", "k"), 0.2)
    v3io_emulator.inject_fault(delay=0.2, function="GetItem")
    start = time.monotonic()
    assert (await c.kv.get(C, "t", "k")).output.item == {"a": 1}
    assert time.monotonic() - start >= 0.2
    await c.close()


# ---------------------------------------------------------------------------------------- lifecycle
def test_background_thread_restart_keeps_the_url() -> None:
    emu = V3ioEmulator().start()
    url = emu.url
    c = v3io.dataplane.Client(endpoint=url, access_key="k", logger_verbosity="ERROR")
    try:
        c.kv.put(C, "t", "k", {"a": 1})
        emu.stop()
        emu.stop()  # idempotent
        with pytest.raises(RuntimeError, match="not running"):
            _ = emu.url
        emu.start()
        assert emu.url == url
        assert c.kv.get(C, "t", "k").output.item == {"a": 1}  # state survives a restart
    finally:
        c.close()
        emu.stop()


async def test_server_down_then_up_for_aio_clients() -> None:
    emu = V3ioEmulator()
    await emu.start_async()
    c = aio_client(emu.url)
    await c.kv.put(C, "t", "k", {"a": 1})
    await emu.stop_async()
    with pytest.raises(aiohttp.ClientConnectionError):
        await c.kv.get(C, "t", "k")
    await emu.start_async()
    assert (await c.kv.get(C, "t", "k")).output.item == {"a": 1}
    with pytest.raises(RuntimeError, match="already running"):
        await emu.start_async()
    await c.close()
    await emu.stop_async()


def test_port_in_use_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError):
            V3ioEmulator(port=port).start()


def test_command_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "storey.testing.v3io_emulator", "--port", str(port), "--access-key", "cli"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        c = v3io.dataplane.Client(endpoint=f"127.0.0.1:{port}", access_key="cli", logger_verbosity="ERROR")
        c.kv.put(C, "t", "k", {"a": 1})
        assert c.kv.get(C, "t", "k").output.item == {"a": 1}
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_reset_and_request_log() -> None:
    with V3ioEmulator() as emu:
        c = v3io.dataplane.Client(endpoint=emu.url, access_key="k", logger_verbosity="ERROR")
        c.kv.put(C, "t", "k", {"a": 1})
        c.object.get(C, "t/k", raise_for_status="never")
        assert [(r.method, r.function, r.path, r.status) for r in emu.requests] == [
            ("PUT", "PutItem", f"/{C}/t/k", 200),
            ("GET", "GetObject", f"/{C}/t/k", 200),
        ]
        emu.reset()
        assert emu.item(f"/{C}/t/k") is None
        assert list(emu.requests) == []
        c.close()


# --------------------------------------------------------------------------------------- framesd/TSDB
def frames_client(emu: V3ioEmulator, token: str = "k"):
    try:
        import v3io_frames
    except ImportError as exc:  # v3io-frames imports pytz without declaring it
        msg = f"PACKAGE MISSING: v3io_frames cannot be imported ({exc}); these tests did NOT run"
        if os.environ.get("STOREY_REQUIRE_SERVICES") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return v3io_frames.Client(emu.frames_url, container=C, token=token)


def tsdb_frame() -> pd.DataFrame:
    # What the frames client sends correctly under pandas 3: ns times, object-dtype labels.
    times = pd.to_datetime(["2024-01-01T00:00:00.000Z", "2024-01-01T00:00:01.500Z"]).astype(
        "datetime64[ns, UTC]"
    )
    return pd.DataFrame(
        {"time": times, "host": pd.Series(["a", "b"], dtype=object), "cpu": [1.5, 2.0], "mem": [1, 2]}
    )


def test_frames_tsdb_create_and_write(v3io_emulator_thread: V3ioEmulator) -> None:
    client = frames_client(v3io_emulator_thread)
    import v3io_frames

    with pytest.raises(v3io_frames.CreateError, match="Must specify 'rate'"):
        client.create("tsdb", "metrics")
    client.create("tsdb", "metrics", rate="1/s", aggregates="count,sum", aggregation_granularity="1h")
    with pytest.raises(v3io_frames.CreateError, match="already exists"):
        client.create("tsdb", "metrics", rate="1/s")
    client.create("tsdb", "metrics", rate="1/s", if_exists=v3io_frames.IGNORE)
    assert client.write("tsdb", "metrics", tsdb_frame(), index_cols=["time", "host"]) == {
        "num_frames": 1,
        "num_rows": 2,
    }
    samples = v3io_frames_samples(v3io_emulator_thread)
    assert samples == [
        ("cpu", {"host": "a"}, 1704067200000, 1.5),
        ("mem", {"host": "a"}, 1704067200000, 1.0),
        ("cpu", {"host": "b"}, 1704067201500, 2.0),
        ("mem", {"host": "b"}, 1704067201500, 2.0),
    ]
    # the table is visible in the V3IO namespace through its schema object
    schema = json.loads(v3io_emulator_thread.object_data(f"/{C}/metrics/.schema"))
    assert schema["tableSchemaInfo"]["rate"] == "1/s"
    client.delete("tsdb", "metrics")
    with pytest.raises(v3io_frames.Error, match="no TSDB schema file found"):
        client.write("tsdb", "metrics", tsdb_frame(), index_cols=["time", "host"])


def v3io_frames_samples(emu: V3ioEmulator) -> list[tuple]:
    out = []
    for s in emu.tsdb_samples(f"/{C}/metrics"):
        labels = dict(s.labels)
        out.append((labels.pop("__name__"), labels, s.time_ms, s.value))
    return out


@pytest.mark.filterwarnings(
    "ignore:DatetimeIndex.values:FutureWarning", "ignore:DatetimeIndex.values:DeprecationWarning"
)
def test_frames_tsdb_rules(v3io_emulator_thread: V3ioEmulator) -> None:
    client = frames_client(v3io_emulator_thread)
    import v3io_frames

    client.create("tsdb", "metrics", rate="1/s")
    df = tsdb_frame().drop(columns=["host"])
    with pytest.raises(v3io_frames.Error, match="no index of type time"):
        client.write("tsdb", "metrics", df.set_index("mem"))
    with pytest.raises(v3io_frames.Error, match="out of order"):
        client.write("tsdb", "metrics", df.iloc[::-1].set_index("time"))
    client.write("tsdb", "metrics", df.set_index("time"), labels={"dc": "eu"})
    assert {("cpu", "eu"), ("mem", "eu")} == {
        (m, labels["dc"]) for m, labels, _, _ in v3io_frames_samples(v3io_emulator_thread)
    }


def test_frames_wrong_token_fails_like_a_v3io_401() -> None:
    with V3ioEmulator(access_key="secret") as emu:
        bad = frames_client(emu, token="wrong")
        import v3io_frames

        with pytest.raises(v3io_frames.CreateError, match="401"):
            bad.create("tsdb", "m", rate="1/s")
        frames_client(emu, token="secret").create("tsdb", "m", rate="1/s")
