"""WriteToTable, JoinWithTable and MapWithState over a Table (spec STEPS.md §6, §7, §9.1)."""

from __future__ import annotations

import asyncio

import pytest

from storey import (
    Context,
    FlowError,
    JoinWithTable,
    MapWithState,
    NoopDriver,
    Reduce,
    Source,
    SQLiteDriver,
    Table,
    WriteToTable,
    build_flow,
)


@pytest.fixture(params=["noop", "sqlite"])
def driver(request, tmp_path):
    return NoopDriver() if request.param == "noop" else SQLiteDriver(str(tmp_path / "t.db"))


def _load(driver, table_path, key):
    async def go():
        rec = await driver.load_key(table_path, key)
        await driver.close()
        return rec

    return asyncio.run(go())


def test_write_to_table_persists_rows_and_forwards_in_order(driver):
    table = Table("users", driver)
    c = build_flow(
        [Source(), WriteToTable(table, max_in_flight=3), Reduce([], lambda a, x: [*a, x["n"]])]
    ).run()
    for i in range(20):
        c.emit({"n": i, "name": f"u{i % 4}"}, key=f"k{i % 4}")
    assert c.terminate(wait=True) == list(range(20))
    for k in range(4):
        rec = _load(driver, "users", f"k{k}")
        assert rec["n"] == 16 + k and rec["name"] == f"u{k}"


def test_write_to_table_columns_and_meta_columns(driver):
    table = Table("t", driver)
    c = build_flow([Source(), WriteToTable(table, columns=["amount", "who=$key"])]).run()
    c.emit({"amount": 5, "ignored": 1}, key="a")
    c.terminate(wait=True)
    rec = _load(driver, "t", "a")
    assert rec["amount"] == 5 and rec["who"] == "a" and "ignored" not in rec


def test_write_to_table_rejects_none_keys_and_reserved_names():
    with pytest.raises(ValueError, match="reserved"):
        WriteToTable(Table("t", NoopDriver()), columns=["_storey_x"])
    c = build_flow([Source(), WriteToTable(Table("t", NoopDriver()), name="w")]).run()
    c.emit({"a": 1})
    with pytest.raises(FlowError) as info:
        c.await_termination()
    assert isinstance(info.value.__cause__, ValueError) and info.value.step == "w"


def test_map_with_state_table_state_is_persisted_at_close(driver):
    table = Table("state", driver)

    def count(x, state):
        state = {**state, "count": state.get("count", 0) + 1}
        return state["count"], state

    head = build_flow(
        [Source(), MapWithState(table, count, group_by_key=True), Reduce([], lambda a, x: [*a, x])]
    )
    c = head.run()
    for key in "abab":
        c.emit(0, key=key)
    assert c.terminate(wait=True) == [1, 1, 2, 2]
    assert _load(driver, "state", "a")["count"] == 2
    # a new Table over the same driver data continues from the stored state
    c = build_flow(
        [
            Source(),
            MapWithState(Table("state", driver), count, group_by_key=True),
            Reduce([], lambda a, x: [*a, x]),
        ]
    ).run()
    c.emit(0, key="a")
    assert c.terminate(wait=True) == [3]


def test_join_with_table_default_join_custom_join_and_drop(driver):
    table = Table("profiles", driver)
    seed = build_flow([Source(), WriteToTable(table)]).run()
    seed.emit({"age": 30}, key="u1")
    seed.terminate(wait=True)
    ctx = Context(initial_tables={"profiles": Table("profiles", driver)})
    c = build_flow(
        [
            Source(),
            JoinWithTable("profiles", "user", context=ctx),
            JoinWithTable(
                "profiles",
                lambda b: b["user"],
                join_function=lambda b, attrs: None if b["user"] == "gone" else {**b, "known": bool(attrs)},
                context=ctx,
            ),
            Reduce([], lambda a, x: [*a, x]),
        ]
    ).run()
    for user in ("u1", "u2", "gone"):
        c.emit({"user": user})
    assert c.terminate(wait=True) == [
        {"user": "u1", "age": 30, "known": True},
        {"user": "u2", "known": False},
    ]


def test_table_name_without_context_raises():
    with pytest.raises(TypeError, match="no context"):
        JoinWithTable("profiles", "user")
