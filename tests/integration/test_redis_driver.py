"""RedisDriver against a real redis-server on loopback: layout, failures, retries, crash and restart."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions

from storey.drivers import RedisDriver
from storey.errors import RedisError
from storey.table import STATE_PREFIX, Table

pytestmark = pytest.mark.redis


async def test_stored_layout_is_typed_hash_fields(redis_server: Any) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    driver = RedisDriver(redis_client=client, key_prefix="layout:")
    await driver.save_key(
        "/c/tbl", "u.1", {"n": None, "f": -0.0, "i": 3, "s": "é", STATE_PREFIX + "a": b"\x00\x01"}
    )
    await driver.save_schema("/c/tbl", {"storey_schema": 1})
    raw = await client.hgetall("layout:/c/tbl:u.1")
    assert raw == {
        b"n": b"n:",
        b"f": b"f:-0.0",
        b"i": b"i:3",
        b"s": "s:é".encode(),
        b"_storey_a_a": b"y:\x00\x01",
    }
    assert await client.type("layout:/c/tbl:.schema") == b"string"
    assert await client.get("layout:/c/tbl:.schema") == b'{"storey_schema":1}'
    with pytest.raises(RedisError, match=r"'\.schema' is reserved"):
        await driver.save_key("/c/tbl", ".schema", {"a": 1})
    await driver.close()
    assert await client.ping()  # a client passed in is not closed by the driver
    await client.aclose()


async def test_redis_url_environment_fallback(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    driver = RedisDriver(key_prefix="env:")
    await driver.save_key("t", "k", {"a": 1})
    assert await driver.load_key("t", "k") == {"a": 1}
    await driver.close()


async def test_permanent_errors_are_not_retried(redis_server: Any) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.set("perm:t:k", "a string, not a hash")
    driver = RedisDriver(redis_server.url, key_prefix="perm:", retry_backoff_secs=60)
    start = time.monotonic()
    with pytest.raises(RedisError, match="load_key: ResponseError: WRONGTYPE") as info:
        await driver.load_key("t", "k")
    assert time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, exceptions.ResponseError)
    await driver.close()
    await client.aclose()


async def test_server_down_at_start_fails_after_the_retries(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    server.stop()
    driver = RedisDriver(server.url, retry_backoff_secs=0.02, max_retries=3)
    start = time.monotonic()
    with pytest.raises(RedisError, match="save_key: still failing after 4 attempts: ConnectionError") as info:
        await driver.save_key("t", "k", {"a": 1})
    assert time.monotonic() - start >= 0.02 + 0.04 + 0.08
    assert isinstance(info.value.__cause__, exceptions.ConnectionError)
    await driver.close()


async def _restart_later(server: Any, delay: float) -> None:
    await asyncio.sleep(delay)
    await asyncio.get_running_loop().run_in_executor(None, server.start)


async def test_a_crash_during_a_write_is_survived_by_the_retries(
    redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    driver = RedisDriver(server.url, retry_backoff_secs=0.05, max_retries=8)
    await driver.save_key("t", "k", {"v": 1})
    server.stop()  # SIGKILL: the driver's pooled connection is now dead
    restart = asyncio.ensure_future(_restart_later(server, 0.2))
    await driver.save_key("t", "k", {"v": 2})  # retried until the server is back
    await restart
    assert await driver.load_key("t", "k") == {"v": 2}  # (the crash lost v=1: no persistence configured)
    assert "save_key: transient failure (ConnectionError" in caplog.text
    await driver.close()


async def test_writes_succeed_again_after_a_restart(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    driver = RedisDriver(server.url, retry_backoff_secs=0.01, max_retries=2)
    table = Table("t", driver)
    await table.persist_key("a", {"v": 1})
    server.stop()
    with pytest.raises(RedisError, match="still failing after 3 attempts") as info:
        await table.persist_key("a", {"v": 2})
    assert isinstance(info.value.__cause__, exceptions.ConnectionError)
    assert table.dirty_keys() == ["a"]
    await asyncio.get_running_loop().run_in_executor(None, server.start)
    await table.persist_key("b", {"v": 3})  # the same driver and table recover
    await table.flush()  # the failed write is retried from the dirty set
    assert await driver.load_key("t", "a") == {"v": 2}
    assert await driver.load_key("t", "b") == {"v": 3}
    await table.close()


def _send(port: int, command: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(command)
    return sock


async def test_busy_replies_are_retried(redis_server_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = redis_server_factory("--busy-reply-threshold", "10")
    driver = RedisDriver(server.url, retry_backoff_secs=0.05, max_retries=8)
    await driver.save_key("t", "k", {"v": 1})
    script = b"local i = 0 while true do i = i + 1 end"
    busy = _send(server.port, b"EVAL '" + script + b"' 0\r\n")  # blocks the server until SCRIPT KILL
    try:
        await asyncio.sleep(0.05)
        probe = aioredis.Redis.from_url(server.url)
        with pytest.raises(exceptions.ResponseError, match="BUSY"):
            await probe.get("x")  # the server really answers BUSY now
        await probe.aclose()

        async def kill_script_later() -> None:
            await asyncio.sleep(0.2)
            _send(server.port, b"SCRIPT KILL\r\n").close()

        killer = asyncio.ensure_future(kill_script_later())
        await driver.save_key("t", "k", {"v": 2})  # BUSY, BUSY, ... then accepted
        await killer
    finally:
        busy.close()
    assert await driver.load_key("t", "k") == {"v": 2}
    assert "save_key: transient failure (ResponseError: BUSY" in caplog.text
    await driver.close()
