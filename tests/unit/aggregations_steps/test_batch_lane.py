"""The batch lane of `AggregateByKey` (`storey.aggregations._step_fused.batch_source`) against the per-event path.

Emitted events and reader rows reach a fused `AggregateByKey` in batches; it takes runs of rows with one
compiled call each. Hypothesis draws the steps and multi-key streams of `test_fused_step` (late, too-late and
tied events, ints, None, NaN, strings, filters), keys and times from the event or from body fields, and the
source's buffer size (so batch boundaries move). The batch lane must give the per-event fused path's outputs
bit for bit, with the same keys, metrics, persisted blobs and last-event marks (the id of each key's last
event, as `Table.last_applied` reads it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey import (
    AggregateByKey,
    FieldAggregator,
    FieldEquals,
    FlowError,
    NoopDriver,
    QueryByKey,
    Reduce,
    SlidingWindows,
    Source,
    Table,
    build_flow,
)
from storey.aggregations import _step_fused
from storey.aggregations.kernels.base import _numba_enabled
from storey.table import LAST_EVENT_ID, LAST_EVENT_TIME_NS
from tests.unit.aggregations_steps.test_fused_step import (
    BASE,
    _long_rows,
    _readme_aggs,
    _y_present,
    aggregators,
    assert_same_bodies,
    events,
)

pytestmark = pytest.mark.skipif(not _numba_enabled(), reason="numba is not importable or is disabled")


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _datetime(t_ns: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=t_ns // 1000)


def _collect(acc, event):
    acc.append((event.key, event.id, event.body))
    return acc


def run(aggs, rows, *, fields: bool, buffer_size: int = 1024, table=None, **kwargs):
    """Emit `rows` into ``Source → AggregateByKey → Reduce``; keys and times from body fields or from the
    event. Returns outputs (key, id, body), metrics, blobs, last-event marks, the step and the emitted
    events' ids of each key's last row."""
    table = table if table is not None else Table("t", NoopDriver())
    if fields:
        step = AggregateByKey(aggs, table, key="key", time_field="t", **kwargs)
    else:
        step = AggregateByKey(aggs, table, **kwargs)
    c = build_flow([Source(buffer_size=buffer_size), step, Reduce([], _collect, full_event=True)]).run()
    for body, t in rows:
        if fields:
            c.emit({**body, "t": _datetime(t)})
        else:
            c.emit(dict(body), key=body["key"], event_time=t // 1_000_000)
    out = c.terminate(wait=True)
    blobs = {(key, name): st.encode() for name in step._names for key, st in table.states(name)}
    keys = {body["key"] for body, _ in rows}
    marks = {key: asyncio.run(table.last_applied(key)) for key in keys}
    return out, dict(step.metrics), blobs, marks, step


def batched_and_per_event(monkeypatch, aggs, rows, **kwargs):
    batched = run(aggs, rows, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event = run(aggs, rows, **kwargs)
    eligible = _step_fused.batch_eligible(batched[4])
    assert ("_do_batch" in vars(batched[4])) == eligible and "_do_batch" not in vars(per_event[4])
    return batched, per_event


def assert_same_runs(batched, per_event, context):
    assert_same_bodies([b for _, _, b in batched[0]], [b for _, _, b in per_event[0]], context)
    assert [k for k, _, _ in batched[0]] == [k for k, _, _ in per_event[0]], context
    assert batched[1] == per_event[1], context
    assert batched[2] == per_event[2], context
    # each key's persisted last event is the last output event of that key (ids are drawn per run)
    for run_ in (batched, per_event):
        last = {}
        for key, event_id, body in run_[0]:
            last[key] = (event_id, body)
        for key, mark in run_[3].items():
            assert mark is not None and mark[0] == last[key][0], context
    assert [m[1] for m in batched[3].values()] == [m[1] for m in per_event[3].values()], context


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],  # monkeypatch.context
)
@given(
    aggs=aggregators(),
    rows=events(),
    fields=st.booleans(),
    buffer_size=st.sampled_from([1, 3, 16, 1024]),
)
def test_batch_lane_equals_the_per_event_path(monkeypatch, aggs, rows, fields, buffer_size):
    batched, per_event = batched_and_per_event(
        monkeypatch, aggs, rows, fields=fields, buffer_size=buffer_size
    )
    assert_same_runs(batched, per_event, f"fields={fields} buffer={buffer_size}")


@pytest.mark.parametrize("fields", [True, False], ids=["body fields", "event key and time"])
def test_long_stream_regrows_buffers_inside_batches(monkeypatch, fields):
    """Sparse keys over days plus one hot key with a new tile per event: buffers grow in the middle of a
    compiled run (several times for the same key in one batch) and the bits stay those of the per-event
    path."""
    rows = _long_rows(3000, keys=30)
    t0 = rows[-1][1]
    hot = [({"key": "hot", "x": 1, "y": float(i % 7), "s": "a"}, t0 + i * 600 * 10**9) for i in range(700)]
    batched, per_event = batched_and_per_event(
        monkeypatch, _readme_aggs(), rows + hot, fields=fields, buffer_size=4096
    )
    assert batched[1]["late_events"] > 0 and batched[1]["skipped_values"] > 0
    assert_same_runs(batched, per_event, f"fields={fields}")
    grown = batched[4]._states["hot"][1]._b
    assert len(grown) > 4 * len(type(batched[4]._states["hot"][1])(0)._b)  # grew more than once


@pytest.mark.parametrize(
    "bad",
    [{"x": "oops"}, {"x": None, "key": ["un", "hashable", {}]}],
    ids=["non-numeric value", "unhashable key"],
)
def test_a_failing_row_fails_as_on_the_per_event_path_after_the_rows_before_it(monkeypatch, bad):
    aggs = [FieldAggregator("a", "x", ["sum"], SlidingWindows(["1h"], "10m"))]
    rows = [({"key": f"k{i % 3}", "x": float(i)}, BASE + i * 10**9) for i in range(40)]
    rows.insert(25, ({"key": "k1", **bad}, BASE + 25 * 10**9))
    seen = {}
    messages = []
    for per_event in (False, True):
        got: list = []
        with monkeypatch.context() as m:
            if per_event:
                m.setattr(_step_fused, "batch_eligible", lambda step: False)
            step = AggregateByKey(aggs, Table("t", NoopDriver()), key="key")
            c = build_flow(
                [Source(buffer_size=1024), step, Reduce(None, lambda acc, b: got.append(b["x"]))]
            ).run()
            ids = [c.emit(dict(body), event_time=t // 1_000_000) for body, t in rows]
            assert ids == [None] * len(rows)
            with pytest.raises(FlowError) as info:
                c.terminate(wait=True)
        seen[per_event] = got
        messages.append(re.sub("'[0-9a-f]{32}'", "<id>", str(info.value)))
        assert info.value.step == step.name
    assert messages[0] == messages[1]
    assert seen[False] == seen[True] == [float(i) for i in range(25)]


def test_only_pure_filters_and_body_fields_take_the_lane():
    """The lane reads every row's values and filters (also of rows that turn out too late): it is taken
    with `FieldEquals` filters and field values only; a custom filter keeps the per-event fused path."""
    windows = SlidingWindows(["1h"], "10m")
    rows = [({"key": "k", "x": 1.0, "y": 2.0, "s": "a"}, BASE)]
    for flt, lane in ((None, True), (FieldEquals("s", "a"), True), (_y_present, False)):
        agg = FieldAggregator("a", "x", ["sum"], windows, aggr_filter=flt)
        step = run([agg], rows, fields=True)[4]
        assert ("_do_batch" in vars(step)) is lane
    step = run([FieldAggregator("a", lambda b: b["x"], ["sum"], windows)], rows, fields=True)[4]
    assert "_do_batch" not in vars(step)


def test_a_shared_table_keeps_rows_one_by_one():
    """A `QueryByKey` on the same table must see the state as of its own row, not of the whole batch."""
    table = Table("t", NoopDriver())
    agg = FieldAggregator("p", "v", ["sum"], SlidingWindows(["1h"], "10m"))
    step = AggregateByKey([agg], table, key="key")
    query = QueryByKey(["p_sum_1h"], table, aliases={"p_sum_1h": "q"})
    c = build_flow([Source(), step, query, Reduce([], lambda acc, b: [*acc, b])]).run()
    for i in range(50):
        c.emit({"key": "a", "v": float(i)}, event_time=i * 7 * 60_000)
    out = c.terminate(wait=True)
    assert "_do_batch" not in vars(step)
    assert [b["q"] for b in out] == [b["p_sum_1h"] for b in out]


def test_reader_batches_take_the_lane(tmp_path):
    """`ReadCSV` rows (reader batches; keys and times from the reader's metadata) give the bits of emitting
    them (keys and times from body fields)."""
    from storey import ReadCSV

    rows = _long_rows(800, keys=12)
    path = tmp_path / "e.csv"
    with path.open("w") as f:
        f.write("key,t,x,y,s\n")
        for body, t in rows:
            y = "" if body["y"] is None else repr(body["y"])
            f.write(f"{body['key']},{_datetime(t).isoformat()},{body['x']},{y},{body['s']}\n")

    def flow(source, **kwargs):
        step = AggregateByKey(_readme_aggs(), Table("t", NoopDriver()), **kwargs)
        return step, build_flow([source, step, Reduce([], lambda acc, b: [*acc, b])])

    # the reader's rows carry the key and time (reader batch metadata), the emitted events their bodies
    step, f = flow(ReadCSV(str(path), header=True, build_dict=True, key_field="key", timestamp_field="t"))
    from_file = f.run().await_termination()
    assert "_do_batch" in vars(step)
    _, g = flow(Source(), key="key", time_field="t")
    c = g.run()
    for body, t in rows:
        c.emit({**body, "t": _datetime(t)})
    emitted = c.terminate(wait=True)
    strip = [{k: v for k, v in b.items() if k not in ("t", "y")} for b in from_file]
    assert_same_bodies(strip, [{k: v for k, v in b.items() if k not in ("t", "y")} for b in emitted], "csv")


def test_the_address_book_follows_buffers_that_grow_and_copies_are_not_in_it():
    """`AddressBook` rows hold each aggregator buffer's current address and length, whoever grows it."""
    from storey.aggregations._compiled_state import AddressBook

    step = run(_readme_aggs(), [({"key": "k", "x": 1, "y": 2.0, "s": "a"}, BASE)], fields=True)[4]
    classes = [p.state_class for p in step.plans]
    book = AddressBook(2 * len(classes))
    keys = [f"k{i}" for i in range(300)]  # more keys than the book's first allocation
    for key in keys:
        book.add(key, tuple(cls(BASE) for cls in classes))

    def check():
        for key in keys:
            row = book.rows[key]
            for i, st in enumerate(book.states[row]):
                assert (book.arr[row, 2 * i], book.arr[row, 2 * i + 1]) == (st._b.ctypes.data, len(st._b))

    check()
    for j, key in enumerate(keys):
        for _ in range(j % 3):
            book.states[book.rows[key]][j % len(classes)]._grow()
    check()
    st = book.states[0][0]
    before = book.arr.copy()
    st.copy()._grow()  # a copy is not the key's state: the book does not follow it
    assert (book.arr == before).all()


def test_marks_keep_ids_or_row_metadata_not_chunks():
    """A key's last-event mark holds its row in the chunk's row metadata (keys, times, ids: no bodies) until
    its id is needed, then only the id; never the chunk (which would keep every body of the chunk alive for
    as long as the key is cached). Ids are drawn only for the rows still last when they are asked for."""
    import gc

    from storey.event import Event, _LazyId
    from storey.flow.batch import EventBatch, _Rows

    rows = [({"key": f"k{i % 2000}", "x": 1, "y": 2.0, "s": "a"}, BASE + i * 10**9) for i in range(6000)]
    table = Table("t", NoopDriver())
    step = AggregateByKey(_readme_aggs(), table, key="key", time_field="t")
    c = build_flow([Source(), step, Reduce(0, lambda acc, _: acc + 1)]).run()
    for body, t in rows:
        c.emit({**body, "t": _datetime(t)})
    deadline = time.monotonic() + 60
    while step.metrics["events"] < len(rows) and time.monotonic() < deadline:  # all taken, none written yet
        time.sleep(0.01)
    assert "_do_batch" in vars(step)
    entries = list(table._entries.values())
    (board,) = {id(entry.board): entry.board for entry in entries if entry.board is not None}.values()
    sources = {id(s): s for s in board.sources[: board.rows] if s is not None}
    assert sources and all(type(s) is _Rows for s in sources.values())
    held = [o for s in sources.values() for o in gc.get_referents(s)]
    assert not [o for o in held if type(o) is dict or type(o) is EventBatch]  # no bodies, no chunks
    drawn = [i for s in sources.values() for i in (s.ids or []) if i is not None]
    assert drawn == []  # no id drawn yet: nothing asked for one
    assert c.terminate(wait=True) == len(rows)  # writes every key: their ids are drawn
    marks = {f"k{i}": asyncio.run(table.last_applied(f"k{i}")) for i in range(2000)}
    on_board = [board.ids[entry.board_row] for entry in entries if entry.board is board]
    assert len(on_board) > 1900 and all(type(i) is str for i in on_board)
    assert not any(board.sources[: board.rows])  # resolved: the metadata is no longer held
    assert {type(o) for o in gc.get_referents(board)} <= {type, int, tuple, np.ndarray}
    drawn = [i for s in sources.values() for i in (s.ids or []) if i is not None]
    assert sorted(drawn) == sorted(on_board)  # exactly the ids asked for were drawn, into their rows
    refs = [entry.last_ref for entry in entries if entry.board is None]  # rows of the per-event path
    assert all(type(ref) in (str, _LazyId, Event) for ref in refs)
    assert not [o for o in gc.get_referrers(*on_board, *refs) if type(o) is EventBatch]
    assert len(set(on_board)) == len(on_board) and all(m is not None for m in marks.values())


def test_background_flushes_between_batches_persist_each_keys_last_event(monkeypatch):
    """A table flushed in the background while the lane runs (its marks are `MarkBoard` rows: a write clears
    them, the next batch of the key marks it again): the stored records end as those of the per-event path,
    and each key's stored last event is its last output event."""
    rows = _long_rows(n=6000, keys=300)

    class Counting(NoopDriver):
        writes = 0

        async def save_keys(self, table_path, records):
            type(self).writes += 1
            await super().save_keys(table_path, records)

    def stored(flush_interval):
        driver = Counting()
        table = Table("t", driver, flush_interval_secs=flush_interval)
        out, _, blobs, marks, step = run(_readme_aggs(), rows, fields=True, buffer_size=64, table=table)
        assert ("_do_batch" in vars(step)) == (flush_interval is not None)
        records = {key: asyncio.run(Table("t", driver).load_record(key)) for key in marks}
        return out, blobs, marks, records

    per_event_mp = monkeypatch.context()
    with per_event_mp as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        reference = stored(None)
    Counting.writes = 0
    got = stored(0.001)
    assert Counting.writes >= 3  # flushes during the run, not only the final one
    assert got[1] == reference[1]  # blobs
    last = {key: event_id for key, event_id, _ in got[0]}
    for key, record in got[3].items():
        assert record[LAST_EVENT_ID] == last[key] == got[2][key][0]
        assert record[LAST_EVENT_TIME_NS] == reference[3][key][LAST_EVENT_TIME_NS]
        assert {k: v for k, v in record.items() if k != LAST_EVENT_ID} == {
            k: v for k, v in reference[3][key].items() if k != LAST_EVENT_ID
        }


def test_list_keys_are_their_tuples_on_the_lane(monkeypatch):
    """Body keys that are lists (unhashable) key the states by their tuples, on the lane as per event."""
    rows = [
        ({"key": ["u", i % 7], "x": i % 3, "y": float(i), "s": "ab"[i % 2]}, BASE + i * 60 * 10**9)
        for i in range(500)
    ]

    def go():
        step = AggregateByKey(_readme_aggs(), Table("t", NoopDriver()), key="key", time_field="t")
        c = build_flow([Source(), step, Reduce([], _collect, full_event=True)]).run()
        for body, t in rows:
            c.emit({**body, "t": _datetime(t)})
        return c.terminate(wait=True), step

    lane, step = go()
    assert "_do_batch" in vars(step)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event, _ = go()
    assert [k for k, _, _ in lane] == [k for k, _, _ in per_event] == [tuple(b["key"]) for b, _ in rows]
    assert_same_bodies([b for _, _, b in lane], [b for _, _, b in per_event], "list keys")


class _Body(Mapping):
    """A mapping body that is not a dict (the lane's per-row output path)."""

    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, name):
        return self._data[name]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


@pytest.mark.parametrize("mapping_every", [0, 7], ids=["all dicts", "some mappings"])
def test_output_bodies_on_the_lane_merge_as_per_event(monkeypatch, mapping_every):
    """Output bodies are the features then the body's fields, body fields winning (also over a feature of the
    same name, which keeps its place), for dict bodies and for other mappings, on the lane as per event."""
    aggs = _readme_aggs()
    rows = []
    for i in range(400):
        body = {
            "key": f"k{i % 5}",
            "x": i % 3,
            "y": float(i),
            "s": "ab"[i % 2],
            "t": _datetime(BASE + i * 10**10),
        }
        if i % 3 == 0:
            body["clicks_count_1h"] = f"shadowed {i}"  # a feature's name (see `_readme_aggs`)
        rows.append(body)

    def go():
        step = AggregateByKey(aggs, Table("t", NoopDriver()), key="key", time_field="t")
        c = build_flow([Source(), step, Reduce([], _collect, full_event=True)]).run()
        for i, body in enumerate(rows):
            c.emit(_Body(body) if mapping_every and i % mapping_every == 0 else dict(body))
        return [b for _, _, b in c.terminate(wait=True)], step

    lane, step = go()
    assert "_do_batch" in vars(step)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event, _ = go()
    assert_same_bodies(lane, per_event, "bodies")
    names = [n for plan in step.plans for n in plan.feature_names]
    for body, out in zip(rows, lane, strict=True):
        assert list(out) == list(dict.fromkeys([*names, *body]))
        assert all(out[f] == v for f, v in body.items())
