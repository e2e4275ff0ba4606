"""SQLiteDriver specifics: the stored layout, locking, retries and threading (STEPS.md §9.2)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from storey.drivers import SQLiteDriver
from storey.errors import SQLiteError


def storey_threads(path: Path) -> list[threading.Thread]:
    """The live connection threads of the drivers on `path` (other tests' drivers may still be stopping)."""
    return [t for t in threading.enumerate() if t.name == f"storey-sqlite {path}"]


async def test_layout_matches_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"  # parent directories are created
    driver = SQLiteDriver(path)
    await driver.save_key("tbl", "k", {"x": math.nan, "n": None, "blob": b"\x00"})
    await driver.save_schema("tbl", {"storey_schema": 1})
    await driver.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [(row[1], row[2], row[5]) for row in conn.execute("PRAGMA table_info(storey_attrs)")]
        assert columns == [
            ("table_path", "TEXT", 1),
            ("key", "TEXT", 2),
            ("name", "TEXT", 3),
            ("value", "BLOB", 0),
        ]
        rows = conn.execute("SELECT name, typeof(value), value FROM storey_attrs ORDER BY name").fetchall()
        assert rows == [("blob", "blob", b"y:\x00"), ("n", "blob", b"n:"), ("x", "blob", b"f:nan")]
        assert conn.execute("SELECT table_path, doc FROM storey_schemas").fetchall() == [
            ("tbl", '{"storey_schema":1}')
        ]


async def test_memory_database_is_private_and_survives_close() -> None:
    one, two = SQLiteDriver(), SQLiteDriver()
    await one.save_key("t", "k", {"a": 1})
    assert await two.load_key("t", "k") is None
    await one.close()
    assert await one.load_key("t", "k") == {"a": 1}


async def test_file_connection_lives_in_one_thread_that_close_stops(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    driver = SQLiteDriver(path)
    assert storey_threads(path) == []
    await driver.save_key("t", "k", {"a": 1})
    assert len(storey_threads(path)) == 1
    await driver.close()
    for _ in range(200):
        if not storey_threads(path):
            break
        await asyncio.sleep(0.005)
    assert storey_threads(path) == []
    assert await driver.load_key("t", "k") == {"a": 1}  # reopened lazily
    await driver.close()


def hold_lock(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def test_a_lock_that_outlasts_the_retries_raises_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    driver = SQLiteDriver(path, retry_backoff_secs=0.01, max_retries=3, busy_timeout_secs=0.01)
    await driver.save_key("t", "k", {"a": 1})
    locker = hold_lock(path)
    try:
        with pytest.raises(
            SQLiteError, match="save_key: still failing after 4 attempts: OperationalError"
        ) as info:
            await driver.save_key("t", "k", {"a": 2})
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert "locked" in str(info.value.__cause__)
    finally:
        locker.rollback()
        locker.close()
    assert await driver.load_key("t", "k") == {"a": 1}
    await driver.close()


async def test_a_lock_released_during_the_retries_is_survived(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    driver = SQLiteDriver(path, retry_backoff_secs=0.02, max_retries=6, busy_timeout_secs=0.01)
    await driver.save_key("t", "k", {"a": 1})
    locker = hold_lock(path)
    asyncio.get_running_loop().call_later(0.1, lambda: (locker.rollback(), locker.close()))
    await driver.save_key("t", "k", {"a": 2})
    assert await driver.load_key("t", "k") == {"a": 2}
    await driver.close()


async def test_a_locked_database_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    driver = SQLiteDriver(path, retry_backoff_secs=0.01, max_retries=0, busy_timeout_secs=0.3)
    await driver.save_key("t", "k", {"a": 1})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    locker = hold_lock(path)
    task = asyncio.ensure_future(ticker())
    try:
        start = time.monotonic()
        with pytest.raises(SQLiteError, match="locked"):
            await driver.save_key("t", "k", {"a": 2})
        assert time.monotonic() - start >= 0.25
        assert ticks >= 10  # the loop kept running while the worker thread waited on the lock
    finally:
        task.cancel()
        locker.rollback()
        locker.close()
        await driver.close()


async def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    driver = SQLiteDriver(tmp_path, retry_backoff_secs=60, max_retries=5)  # a directory is no database
    start = time.monotonic()
    with pytest.raises(
        SQLiteError, match=r"load_key: OperationalError: unable to open database file"
    ) as info:
        await driver.load_key("t", "k")
    assert time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    await driver.close()


async def test_corrupt_stored_value_is_a_sqlite_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    driver = SQLiteDriver(path)
    await driver.save_key("t", "k", {"a": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE storey_attrs SET value = x'00'")
    with pytest.raises(SQLiteError, match=r"key 'k'.*attribute 'a'"):
        await driver.load_key("t", "k")
    await driver.close()


async def test_two_driver_objects_share_a_file(tmp_path: Path) -> None:
    one, two = SQLiteDriver(tmp_path / "s.db"), SQLiteDriver(tmp_path / "s.db")
    await asyncio.gather(*(d.save_key("t", f"k{i}", {"i": i}) for i in range(50) for d in (one, two)))
    assert await one.load_key("t", "k49") == {"i": 49}
    await one.close()
    await two.close()
