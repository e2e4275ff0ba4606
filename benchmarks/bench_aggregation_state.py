"""Per-event cost of the shared aggregation state machine on the README workload (pure core, no flow).

Three aggregators as in the README: ``count`` of clicks over 1h/2h/24h (period 10m); ``avg``/``min``/``max``
of purchases over 1h/2h/24h (period 10m); a filtered ``count`` over 1h (period 10m). Each event goes through
``observe`` → filter/skip → ``add`` → ``evaluate`` for every aggregator, as `AggregateByKey` does with
`EmitEveryEvent`.

Usage: ``python benchmarks/bench_aggregation_state.py [n_events] [n_keys] [mean_gap_s_per_key]``
"""

from __future__ import annotations

import random
import sys
import time

from storey.aggregations.field import FieldAggregator
from storey.aggregations.state import AggregatorPlan
from storey.aggregations.windows import SlidingWindows


def make_events(n_events: int, n_keys: int, gap_s: float, seed: int = 1) -> list[tuple]:
    """(key, time_ns, purchase_amount, activity_status) rows; bodies are built per event in the loop, as a
    stream would receive them (a list of 10**6 body dicts would make the garbage collector the benchmark)."""
    rng = random.Random(seed)
    t = 1_700_000_000 * 10**9
    step = int(gap_s * 1e9 / n_keys)  # a key sees an event every `gap_s` seconds on average
    events = []
    for _ in range(n_events):
        t += rng.randint(0, 2 * step)
        jitter = rng.randint(0, 60 * 10**9) if rng.random() < 0.05 else 0  # 5% a bit late
        amount = None if rng.random() < 0.1 else rng.uniform(1, 500)
        status = "fail" if rng.random() < 0.2 else "ok"
        events.append((rng.randrange(n_keys), t - jitter, amount, status))
    return events


def main() -> None:
    n_events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    n_keys = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    gap_s = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    w = ["1h", "2h", "24h"]
    aggs = [
        FieldAggregator("number_of_clicks", "click", ["count"], SlidingWindows(w, "10m")),
        FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], SlidingWindows(w, "10m")),
        FieldAggregator(
            "failed_activities",
            "activity",
            ["count"],
            SlidingWindows(["1h"], "10m"),
            aggr_filter=lambda e: e["activity_status"] == "fail",
        ),
    ]
    plans = [AggregatorPlan(a) for a in aggs]
    fields = ["click", "purchase_amount", "activity_status"]
    filters = [None, None, aggs[2].aggr_filter]
    events = make_events(n_events, n_keys, gap_s)
    states: dict[int, list] = {}
    out: dict = {}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for key, t, amount, status in events:
        body = {"click": 1, "purchase_amount": amount, "activity_status": status}
        sts = states.get(key)
        if sts is None:
            sts = states[key] = [p.new_state() for p in plans]
        out = {}
        for st, field, flt in zip(sts, fields, filters, strict=False):
            if st.observe(t):
                v = body[field]
                if v is not None and (flt is None or flt(body)):
                    st.add(v if isinstance(v, str) else float(v), t)
                st.evaluate(t, out)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    print(
        f"{n_events} events, {n_keys} keys, one event per key every ~{gap_s:g}s: "
        f"{cpu / n_events * 1e6:.2f} us/event CPU ({n_events / cpu:,.0f} events/s; wall {wall / n_events * 1e6:.2f} us)"
    )


if __name__ == "__main__":
    main()
