"""`prefetched`: a background producer, items and its error in order, stopped and settled on close."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.sources._reading import prefetched


class Boom(Exception):
    pass


def produce(items, fail_at, log):
    try:
        for i, item in enumerate(items):
            if i == fail_at:
                raise Boom(i)
            log.append(threading.current_thread().name)
            yield item
    finally:
        log.append("closed")


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.integers()), fail_at=st.none() | st.integers(0, 20), depth=st.integers(1, 3))
def test_items_then_error_in_order(items, fail_at, depth):
    log = []
    got = []
    if fail_at is not None and fail_at < len(items):
        with pytest.raises(Boom) as info:
            for x in prefetched(produce(items, fail_at, log), depth):
                got.append(x)
        assert info.value.args == (fail_at,)
        assert got == items[:fail_at]
    else:
        got = list(prefetched(produce(items, fail_at, log), depth))
        assert got == items
    assert log[-1] == "closed"  # the producer is settled once the consumer is done
    assert set(log[:-1]) <= {"storey-prefetch"}


def test_closing_early_stops_the_producer():
    log = []
    gen = prefetched(produce(range(10**9), None, log), 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert log[-1] == "closed"
    assert len(log) <= 3 + 2 + 2  # taken, queued, and at most one in hand


def _failing_flow(source):
    from storey import FlowError, Reduce, build_flow

    def add(acc, body):
        if acc == 15:
            raise Boom("15")
        return acc + 1

    with pytest.raises(FlowError):
        build_flow([source, Reduce(0, add)]).run().await_termination()
    assert not [t for t in threading.enumerate() if t.name == "storey-prefetch"]


def test_a_failed_flow_stops_the_parquet_decoder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storey import ReadParquet

    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"v": list(range(1000))}), path, row_group_size=10)
    _failing_flow(ReadParquet(path, batch_size=10))


def test_a_failed_flow_stops_the_csv_reader(tmp_path, monkeypatch):
    import storey.sources.csv as csv_source
    from storey import ReadCSV
    from storey.frames import _io_csv

    monkeypatch.setattr(csv_source, "VECTORISED_MIN_BYTES", 0)
    monkeypatch.setattr(csv_source, "_FAST_BATCH", 4)
    monkeypatch.setattr(_io_csv, "_BLOCK", 50)
    monkeypatch.setattr(_io_csv, "_HEADER_MAX", 16)
    path = tmp_path / "a.csv"
    path.write_text("v,w\n" + "".join(f"{i},{i / 2}\n" for i in range(1000)), encoding="utf-8")
    _failing_flow(ReadCSV(str(path), header=True))
