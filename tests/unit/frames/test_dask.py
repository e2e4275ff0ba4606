"""``engine='dask'`` (AGGREGATIONS.md §8.7): exactly the local engine's rows, states and metrics.

Every comparison runs the local engine on the same input and compares bit for bit (floats: ``a == b`` or
both NaN). Dask output is not in stream order across keys, so rows are compared after a *stable* sort by
key: each key's rows keep their order, which checks the per-key stream order as well. The engines run on
the threaded scheduler and on a 2-worker process `LocalCluster` (one per module).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import (
    EmitAfterDelay,
    EmitAfterMaxEvent,
    EmitAfterPeriod,
    EmitAfterWindow,
    EmitEveryEvent,
    FieldAggregator,
    FieldEquals,
    NoopDriver,
    SlidingWindows,
    SQLiteDriver,
    Table,
)
from storey._demo import demo_table
from storey.aggregations.blob import encode_state
from storey.errors import MissingFieldError
from storey.frames import aggregate, build_state
from storey.frames import dask as frames_dask
from storey.frames._dask_shuffle import stable_hash

# ------------------------------------------------------------------------------------------ helpers


def readme_aggregates() -> list[FieldAggregator]:
    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    return [
        FieldAggregator("number_of_clicks", "click", ["count"], windows),
        FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
        FieldAggregator(
            "failed_activities",
            "activity_status",
            ["count"],
            SlidingWindows(["1h"], "10m"),
            aggr_filter=FieldEquals("activity_status", "fail"),
        ),
    ]


def events(n: int, *, n_keys: int, seed: int = 0, **kwargs: Any) -> pa.Table:
    """README-style events with an ``id`` column (arrival position); late and too-late events included."""
    table = demo_table(n, n_keys=n_keys, seed=seed, **kwargs)
    return table.append_column("id", pa.array(np.arange(n, dtype=np.int64)))


def disordered(n: int = 3000, n_keys: int = 12, seed: int = 1) -> pa.Table:
    """Events far out of order across keys (30% moved back up to 30 min, one event per ~20 s): the step
    clock of the whole stream runs well ahead of each key's own times, so timers depend on other keys."""
    return events(n, n_keys=n_keys, seed=seed, events_per_second=0.05, late_fraction=0.3)


def by_key(table: pa.Table, key: str = "key") -> pa.Table:
    """Rows stably sorted by key (each key's rows keep their order)."""
    values = np.array([repr(v) for v in table.column(key).to_pylist()], dtype=object)
    return table.take(pa.array(np.argsort(values, kind="stable")))


def same(x: Any, y: Any) -> bool:
    return x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)


def assert_same_rows(local: pa.Table, other: pa.Table, key: str = "key") -> None:
    """Same columns, rows, and values bit for bit (after a stable sort by key)."""
    assert sorted(other.column_names) == sorted(local.column_names)
    assert other.num_rows == local.num_rows
    a, b = by_key(local, key), by_key(other.select(local.column_names), key)
    for name in local.column_names:
        xs, ys = a.column(name).to_pylist(), b.column(name).to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(xs, ys, strict=True)) if not same(x, y)]
        assert not bad, (
            f"column {name!r} differs at rows {bad[:5]}: {[xs[i] for i in bad[:3]]} != {[ys[i] for i in bad[:3]]}"
        )


def local_metrics(table: pa.Table) -> dict[str, int]:
    import json

    return json.loads(table.schema.metadata[b"storey.metrics"])


def run_dask(data: Any, aggregates: list[FieldAggregator], **kwargs: Any) -> tuple[pa.Table, dict[str, int]]:
    result = aggregate(
        data, aggregates, key=kwargs.pop("key", "key"), time_field="time", engine="dask", **kwargs
    )
    return frames_dask.compute(result)


def sqlite_rows(path: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        attrs = conn.execute(
            "SELECT table_path, key, name, value FROM storey_attrs ORDER BY 1, 2, 3"
        ).fetchall()
        schemas = conn.execute("SELECT table_path, doc FROM storey_schemas ORDER BY 1").fetchall()
    finally:
        conn.close()
    return attrs + schemas


# ------------------------------------------------------------------------------------------ schedulers


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A 2-worker process cluster (one per module), closed at the end."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(params=["threads", "cluster"])
def scheduler(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the threaded scheduler, then on the cluster (several parts, several partitions)."""
    target = "threads" if request.param == "threads" else request.getfixturevalue("cluster")
    with dask.config.set({"scheduler": target, "storey.partition-rows": 700}):
        yield request.param


@pytest.fixture
def threads() -> Iterator[None]:
    with dask.config.set({"scheduler": "threads", "storey.partition-rows": 700}):
        yield


# ------------------------------------------------------------------------------------------ rows


def test_every_event_is_the_local_result(scheduler: str) -> None:
    data = events(4000, n_keys=40, late_fraction=0.05, too_late_fraction=0.01)
    local = aggregate(data, readme_aggregates(), key="key", time_field="time")
    rows, metrics = run_dask(data, readme_aggregates())
    assert metrics == local_metrics(local)
    assert metrics["late_events"] > 0  # too-late events: their features are null
    assert_same_rows(local, rows)
    assert rows.sort_by("id").column("id").to_pylist() == list(range(4000))


POLICIES = {
    "period": EmitAfterPeriod(),
    "period-delay": EmitAfterPeriod(delay_in_seconds=150),
    "window": EmitAfterWindow(),
    "delay": EmitAfterDelay(300),
    "max-events-timeout": EmitAfterMaxEvent(4, timeout_secs=900),
    "max-events": EmitAfterMaxEvent(3),
}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_timer_policies_are_the_local_result(scheduler: str, policy: str) -> None:
    data = disordered()
    local = aggregate(data, readme_aggregates(), key="key", time_field="time", emit_policy=POLICIES[policy])
    rows, metrics = run_dask(data, readme_aggregates(), emit_policy=POLICIES[policy])
    assert local.num_rows > 50
    assert metrics == local_metrics(local)
    assert_same_rows(local, rows)


@pytest.mark.parametrize("policy", ["period", "delay", "max-events-timeout"])
def test_without_the_carried_clock_timers_differ(threads: None, policy: str, monkeypatch: Any) -> None:
    """The comparison above can fail: with each partition on its own clock, timer emissions change."""
    from storey.frames import _dask_partition

    data = disordered()
    local = aggregate(data, readme_aggregates(), key="key", time_field="time", emit_policy=POLICIES[policy])
    rows, _ = run_dask(data, readme_aggregates(), emit_policy=POLICIES[policy])
    assert_same_rows(local, rows)
    empty = np.empty(0, dtype=np.int64)
    monkeypatch.setattr(_dask_partition, "clock_rows", lambda *args: (empty, empty))
    rows, _ = run_dask(data, readme_aggregates(), emit_policy=POLICIES[policy])
    with pytest.raises(AssertionError):
        assert_same_rows(local, rows)


def test_output_writes_a_parquet_dataset(scheduler: str, tmp_path: Any) -> None:
    data = disordered()
    for policy in ("period", "delay"):
        local = aggregate(
            data, readme_aggregates(), key="key", time_field="time", emit_policy=POLICIES[policy]
        )
        out = str(tmp_path / policy)
        metrics = aggregate(
            data,
            readme_aggregates(),
            key="key",
            time_field="time",
            emit_policy=POLICIES[policy],
            engine="dask",
            output=out,
        )
        assert metrics == {**local_metrics(local), "rows_out": local.num_rows}
        files = sorted(os.listdir(out))
        assert len(files) > 1 and all(f.startswith("part-") and f.endswith(".parquet") for f in files)
        assert_same_rows(local, pq.read_table(out))


def test_empty_input(threads: None, tmp_path: Any) -> None:
    data = events(10, n_keys=2).slice(0, 0)
    local = aggregate(data, readme_aggregates(), key="key", time_field="time")
    rows, metrics = run_dask(data, readme_aggregates())
    assert rows.num_rows == 0 and metrics == local_metrics(local)
    assert (
        aggregate(
            data, readme_aggregates(), key="key", time_field="time", engine="dask", output=str(tmp_path)
        )["rows_out"]
        == 0
    )
    assert pq.read_table(tmp_path).num_rows == 0


# ------------------------------------------------------------------------------------------ inputs


def test_dask_dataframe_partitions_are_arrival_order(threads: None) -> None:
    import dask.dataframe as dd

    pdf = disordered().to_pandas()
    ddf = dd.from_pandas(pdf, npartitions=5, sort=False)
    policy = EmitAfterDelay(300)
    local = aggregate(ddf.compute(), readme_aggregates(), key="key", time_field="time", emit_policy=policy)
    rows, metrics = run_dask(ddf, readme_aggregates(), emit_policy=policy)
    assert metrics == local_metrics(local)
    assert_same_rows(local, rows)


def test_parquet_directory_and_csv_inputs(threads: None, tmp_path: Any) -> None:
    import pyarrow.csv as pcsv

    data = disordered()
    ns = data.column("time").cast(pa.int64()).to_numpy()
    iso = np.char.add(np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ms"), "Z")
    root = tmp_path / "dataset"
    for i, (lo, hi) in enumerate([(0, 1000), (1000, 3000)]):  # hive directories, small row groups
        (root / f"day={i}").mkdir(parents=True)
        pq.write_table(data.slice(lo, hi - lo), root / f"day={i}" / "x.parquet", row_group_size=300)
    csv_path = str(tmp_path / "events.csv")
    as_text = data.set_column(1, "time", pa.array(iso, pa.string())).slice(0, 500)
    pcsv.write_csv(as_text, csv_path, pcsv.WriteOptions(quoting_style="none"))
    policy = EmitAfterPeriod()
    for source in (str(root), [str(root / "day=0"), data.slice(1000, 500)], csv_path):
        local = aggregate(source, readme_aggregates(), key="key", time_field="time", emit_policy=policy)
        rows, metrics = run_dask(source, readme_aggregates(), emit_policy=policy)
        assert metrics == local_metrics(local)
        assert_same_rows(local, rows)


def test_tuple_and_callable_keys(threads: None) -> None:
    data = disordered().append_column("region", pa.array(np.arange(3000) % 3))
    policy = EmitAfterPeriod()
    for key in (["key", "region"], lambda body: body["key"][-1]):
        local = aggregate(data, readme_aggregates(), key=key, time_field="time", emit_policy=policy)
        rows, metrics = run_dask(data, readme_aggregates(), key=key, emit_policy=policy)
        assert metrics == local_metrics(local)
        assert_same_rows(local, rows, key="key")


def test_augmentation_fn(threads: None) -> None:
    def fn(body: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
        return {"id": body["id"], "clicks": features.get("number_of_clicks_count_1h")}

    data = disordered()
    local = aggregate(data, readme_aggregates(), key="key", time_field="time", augmentation_fn=fn)
    rows, _ = run_dask(data, readme_aggregates(), augmentation_fn=fn)
    assert_same_rows(local.sort_by("id"), rows.sort_by("id"), key="id")


# ------------------------------------------------------------------------------------------ state


def test_build_state_sqlite_file_blobs_are_the_local_ones(scheduler: str, tmp_path: Any) -> None:
    data = disordered()
    local_db, dask_db = str(tmp_path / "local.db"), str(tmp_path / "dask.db")
    local = build_state(
        data, readme_aggregates(), Table("t", SQLiteDriver(local_db)), key="key", time_field="time"
    )
    metrics = build_state(
        data,
        readme_aggregates(),
        Table("t", SQLiteDriver(dask_db)),
        key="key",
        time_field="time",
        engine="dask",
    )
    assert metrics == local
    assert len(sqlite_rows(local_db)) > 12
    assert sqlite_rows(dask_db) == sqlite_rows(local_db)


def test_build_state_seeds_redis_from_the_workers(scheduler: str, redis_server: Any) -> None:
    import uuid

    import redis

    from storey import RedisDriver

    data = disordered()
    prefixes = [f"storey-test-{uuid.uuid4().hex}-{engine}:" for engine in ("local", "dask")]
    for prefix, engine in zip(prefixes, ("local", "dask"), strict=True):
        table = Table("t", RedisDriver(redis_server.url, key_prefix=prefix))
        build_state(data, readme_aggregates(), table, key="key", time_field="time", engine=engine)
    client = redis.Redis.from_url(redis_server.url)
    try:
        stored = []
        for prefix in prefixes:
            keys = sorted(client.keys(prefix + "*"))
            read = {b"hash": client.hgetall, b"string": client.get}
            stored.append({k[len(prefix) :]: read[client.type(k)](k) for k in keys})
            client.delete(*keys)
    finally:
        client.close()
    assert len(stored[0]) > 12
    assert stored[1] == stored[0]


async def test_build_state_on_every_driver(threads: None, driver_factory: Any) -> None:
    """Workers write their keys (or, for in-process drivers, the caller does): the records equal the
    local engine's, on every backend."""
    data = disordered()
    keys = sorted(set(data.column("key").to_pylist()))
    records = []
    for engine in ("local", "dask"):
        driver = driver_factory()
        path = driver_factory.table_path(f"states_{engine}")
        build_state(
            data, readme_aggregates(), Table(path, driver), key="key", time_field="time", engine=engine
        )
        reader = Table(path, driver)
        records.append([dict(await reader.load_record(k)) for k in keys])
        assert await reader.load_schema() is not None
    assert all(records[0]) and records[1] == records[0]


def test_build_state_continues_from_stored_state(threads: None, tmp_path: Any) -> None:
    data = disordered()
    whole, split = str(tmp_path / "whole.db"), str(tmp_path / "split.db")
    build_state(data, readme_aggregates(), Table("t", SQLiteDriver(whole)), key="key", time_field="time")
    first, rest = data.slice(0, 1200), data.slice(1200)
    build_state(first, readme_aggregates(), Table("t", SQLiteDriver(split)), key="key", time_field="time")
    build_state(
        rest,
        readme_aggregates(),
        Table("t", SQLiteDriver(split)),
        key="key",
        time_field="time",
        engine="dask",
    )
    assert sqlite_rows(split) == sqlite_rows(whole)


def test_build_state_in_process_drivers_are_written_by_the_caller(threads: None) -> None:
    data = disordered()
    local_table = Table("t", NoopDriver())
    build_state(data, readme_aggregates(), local_table, key="key", time_field="time")
    for driver in (NoopDriver(), SQLiteDriver(":memory:")):
        table = Table("t", driver)
        build_state(data, readme_aggregates(), table, key="key", time_field="time", engine="dask")
        keys = sorted(set(data.column("key").to_pylist()))
        for agg in readme_aggregates():
            for k in keys:
                assert encode_state(table.get_state(k, agg.name)) == encode_state(
                    local_table.get_state(k, agg.name)
                )
        fresh = Table("t", driver)  # and they are persisted
        record = asyncio.run(fresh.load_record(keys[0]))
        assert record == asyncio.run(Table("t", local_table.storage).load_record(keys[0]))


def test_aggregate_with_a_table_and_no_output_writes_the_states_now(threads: None, tmp_path: Any) -> None:
    data = disordered()
    local_db, dask_db = str(tmp_path / "local.db"), str(tmp_path / "dask.db")
    policy = EmitAfterDelay(300)
    local = aggregate(
        data, readme_aggregates(), key="key", time_field="time", emit_policy=policy,
        table=Table("t", SQLiteDriver(local_db)),
    )  # fmt: skip
    result = aggregate(
        data, readme_aggregates(), key="key", time_field="time", emit_policy=policy,
        table=Table("t", SQLiteDriver(dask_db)), engine="dask",
    )  # fmt: skip
    assert sqlite_rows(dask_db) == sqlite_rows(local_db)  # before the result is computed
    rows, metrics = frames_dask.compute(result)
    assert metrics == local_metrics(local)
    assert_same_rows(local, rows)


def test_aggregate_with_a_table(threads: None, tmp_path: Any) -> None:
    data = disordered()
    local_db, dask_db = str(tmp_path / "local.db"), str(tmp_path / "dask.db")
    local = aggregate(
        data, readme_aggregates(), key="key", time_field="time", table=Table("t", SQLiteDriver(local_db))
    )
    metrics = aggregate(
        data,
        readme_aggregates(),
        key="key",
        time_field="time",
        table=Table("t", SQLiteDriver(dask_db)),
        engine="dask",
        output=str(tmp_path / "rows"),
    )
    assert metrics["events"] == local.num_rows
    assert_same_rows(local, pq.read_table(tmp_path / "rows"))
    assert sqlite_rows(dask_db) == sqlite_rows(local_db)


# ------------------------------------------------------------------------------------------ as_of, backfill


def test_as_of_is_the_local_result(scheduler: str) -> None:
    from storey.frames import as_of

    data = disordered()
    rng = np.random.default_rng(3)
    picks = rng.integers(0, data.num_rows, 400)
    shift = pa.array(rng.integers(-3_600_000, 3_600_000, 400) * 1_000_000, pa.duration("ns"))
    labels = pa.table(
        {
            "label_id": np.arange(400),
            "key": data.column("key").take(picks).to_pylist()[:-20] + ["nobody"] * 20,
            "time": pa.compute.add(data.column("time").take(picks), shift),
        }
    )
    for inclusive in (True, False):
        local = as_of(labels, data, readme_aggregates(), key="key", time_field="time", inclusive=inclusive)
        result = as_of(
            labels,
            data,
            readme_aggregates(),
            key="key",
            time_field="time",
            inclusive=inclusive,
            engine="dask",
        )
        rows, metrics = frames_dask.compute(result)
        assert metrics == local_metrics(local)
        assert_same_rows(local.sort_by("label_id"), rows.sort_by("label_id"), key="label_id")


def test_backfill_of_a_lone_aggregate_by_key_is_aggregate(threads: None) -> None:
    from storey import AggregateByKey
    from storey.frames import backfill

    data = disordered()

    def step() -> AggregateByKey:
        return AggregateByKey(readme_aggregates(), Table("t", NoopDriver()), emit_policy=EmitAfterPeriod())

    local = backfill(data, [step()], key_field="key", time_field="time")
    rows, _ = frames_dask.compute(backfill(data, [step()], key_field="key", time_field="time", engine="dask"))
    assert_same_rows(local, rows)


def test_backfill_of_row_steps_keeps_stream_order_and_copies_steps_per_part(threads: None) -> None:
    from storey import AggregateByKey, Filter, Map, MapClass
    from storey.frames import backfill

    class Counter(MapClass):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def do(self, body: dict[str, Any]) -> dict[str, Any]:
            self.n += 1
            return {**body, "n": self.n}

    data = disordered()
    steps = [Filter(lambda b: b["click"] > 0), Map(lambda b: {"id": b["id"], "c": 2 * b["click"]})]
    local = backfill(data, steps, key_field="key", time_field="time")
    rows, metrics = frames_dask.compute(
        backfill(data, steps, key_field="key", time_field="time", engine="dask")
    )
    assert rows.to_pylist() == local.to_pylist()  # no shuffle: stream order
    assert metrics == {"rows": 3000, "rows_out": local.num_rows}
    counted, _ = frames_dask.compute(backfill(data, [Counter()], key_field="key", engine="dask"))
    n = counted.column("n").to_pylist()
    assert n == [i % 700 + 1 for i in range(3000)]  # parts of 700 rows: the counter restarts per part
    with pytest.raises(NotImplementedError, match="engine='local'"):
        backfill(
            data, [steps[0], AggregateByKey(readme_aggregates(), Table("t", NoopDriver()))], engine="dask"
        )


# ------------------------------------------------------------------------------------------ errors


def test_bad_input_and_arguments(threads: None, tmp_path: Any) -> None:
    data = disordered()
    with pytest.raises(MissingFieldError, match="click"):
        run_dask(data.drop_columns(["click"]), readme_aggregates())
    nulls = data.set_column(1, "time", pa.array([None] * data.num_rows, data.schema.field("time").type))
    with pytest.raises(MissingFieldError, match="null"):
        run_dask(nulls, readme_aggregates())
    with pytest.raises(ValueError, match="CSV"):
        aggregate(data, readme_aggregates(), key="key", time_field="time", engine="dask", output="x.csv")
    memory = Table("t", SQLiteDriver(":memory:"))
    build_state(data.slice(0, 10), readme_aggregates(), memory, key="key", time_field="time")
    with pytest.raises(NotImplementedError, match="in-memory SQLite"):
        build_state(data, readme_aggregates(), memory, key="key", time_field="time", engine="dask")
    with pytest.raises(ValueError, match="not a Dask DataFrame"):
        frames_dask.metrics(data)


# ------------------------------------------------------------------------------------------ properties


def test_stable_hash_is_the_same_in_every_process(cluster: Any) -> None:
    keys = ["user_00001", 7, 7.0, True, ("a", 1), None, b"x"]
    here = [stable_hash(k) for k in keys]
    assert here[1] == here[2] and here[3] == stable_hash(1)
    there = cluster.run(lambda: [stable_hash(k) for k in keys])
    assert all(v == here for v in there.values())


POLICY_STRATEGY = st.sampled_from(
    [
        EmitEveryEvent(),
        EmitAfterPeriod(),
        EmitAfterPeriod(delay_in_seconds=60),
        EmitAfterWindow(),
        EmitAfterDelay(120),
        EmitAfterMaxEvent(2, timeout_secs=300),
        EmitAfterMaxEvent(2),
    ]
)


@st.composite
def streams(draw: Any) -> pa.Table:
    n = draw(st.integers(1, 60))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=n, max_size=n))
    minutes = draw(st.lists(st.integers(0, 240), min_size=n, max_size=n))
    values = draw(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=n, max_size=n))
    return pa.table(
        {
            "key": keys,
            "time": pa.array([m * 60_000 for m in minutes], pa.int64()),
            "x": pa.array(values, pa.float64()),
            "id": pa.array(range(n), pa.int64()),
        }
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=streams(), policy=POLICY_STRATEGY, rows=st.integers(1, 20), partitions=st.integers(1, 4))
def test_random_streams_are_the_local_result(data: pa.Table, policy: Any, rows: int, partitions: int) -> None:
    aggs = [
        FieldAggregator("x", "x", ["sum", "count", "max", "last"], SlidingWindows(["30m", "1h"], "10m")),
        FieldAggregator("y", "x", ["avg"], SlidingWindows(["20m"], "5m")),
    ]
    local = aggregate(data, aggs, key="key", time_field="time", emit_policy=policy)
    config = {"scheduler": "sync", "storey.partition-rows": rows, "storey.npartitions": partitions}
    with dask.config.set(config):
        result, metrics = run_dask(data, aggs, emit_policy=policy)
    assert metrics == local_metrics(local)
    if local.num_rows:
        assert_same_rows(local, result)
    else:
        assert result.num_rows == 0
