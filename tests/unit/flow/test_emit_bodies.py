"""Plain bodies emitted without an `Event` (`ThreadInbox.put_body`, `EventBatch.of_bodies`).

`FlowController.emit(body)` with no key, time or result queues the body and its emit time; the run loop
hands a drain of plain bodies on as one `EventBatch` whose events are built only when a step needs them, and
a drain that also holds `Event`s (emits with a key, a time or a result) as a list of events in queue order.
Either way a step sees exactly the event ``Event(body)`` would have been at the emit.
"""

from __future__ import annotations

import asyncio
import threading
import time

from storey import Event, FlatMap, Map, Reduce, Source, build_flow
from storey.flow.batch import EventBatch
from storey.flow.runtime import TERMINATE, Run, ThreadInbox


def test_pairs_stay_whole_with_bodies_and_events_from_many_threads():
    inbox = ThreadInbox(3)
    n_threads, n = 4, 1500
    got: list[tuple[object, int]] = []
    kinds = set()

    async def consume():
        run = Run(build_flow([Source(), Reduce(0, lambda a, b: a)]))
        try:
            async for batch in inbox.batches(run):
                if batch is TERMINATE:
                    return
                if type(batch) is EventBatch:
                    kinds.add("bodies")
                    got.extend(zip(batch.bodies, batch.times_ns(), strict=True))
                else:
                    kinds.add("events")
                    got.extend((e.body, e.time_ns) for e in batch)
                if len(got) % 5 == 0:
                    await asyncio.sleep(0.0002)  # producers block on the full queue meanwhile
        finally:
            run.head._active_run = None

    def produce(t):
        for i in range(n):
            ms = t * n + i
            if i % 3 == 0:
                inbox.put(Event((t, i), time=ms))
            else:
                inbox.put_body((t, i), ms * 1_000_000)

    consumer = threading.Thread(target=asyncio.run, args=(consume(),))
    consumer.start()
    threads = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    inbox.put_terminate()
    consumer.join(30)
    assert not consumer.is_alive()
    assert len(got) == n_threads * n
    for (t, i), time_ns in got:  # every body arrives with its own time: no pair was split
        assert time_ns == (t * n + i) * 1_000_000
    for t in range(n_threads):
        assert [i for (tt, i), _ in got if tt == t] == list(range(n))
    assert "events" in kinds


def test_emitted_bodies_look_like_events_built_at_emit():
    seen = []

    def record(event):
        seen.append((event.body, event.key, event.time_ns, event.origin, event.id, event.path))
        return event

    c = build_flow(
        [Source(), FlatMap(lambda b: [b, b]), Map(record, full_event=True), Reduce(0, lambda a, b: a + 1)]
    ).run()
    before = time.time_ns()
    for i in range(300):
        if i % 50 == 7:
            c.emit(i, key=f"k{i}", event_time=i)  # an Event in the same queue
        else:
            c.emit(i)
    after = time.time_ns()
    assert c.terminate(wait=True) == 600
    assert [s[0] for s in seen] == [i for i in range(300) for _ in range(2)]
    for n, (body, key, time_ns, origin, event_id, path) in enumerate(seen):
        if body % 50 == 7:
            assert (key, time_ns) == (f"k{body}", body * 1_000_000)
        else:
            assert key is None and before // 1000 * 1000 <= time_ns <= after and time_ns % 1000 == 0
        assert origin is None and path == "/"
        assert isinstance(event_id, str) and len(event_id) == 32
        if n % 2:  # the two items a FlatMap made from one event share its id
            assert event_id == seen[n - 1][4]
    assert len({s[4] for s in seen}) == 300
    times = [s[2] for s in seen if s[0] % 50 != 7]
    assert times == sorted(times)  # emit order
