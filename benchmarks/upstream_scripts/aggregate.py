"""Upstream README ``AggregateByKey`` flow over the README workload, in-memory table.

Params: ``path`` (workload Parquet), ``n`` (first n rows), ``feed`` ('emit' | 'source').

Features (the seed README, with the status field of the workload): clicks count, purchases avg/min/max
over ``SlidingWindows(['1h','2h','24h'], '10m')`` and failed activities count over
``SlidingWindows(['1h'], '10m')`` with ``aggr_filter`` on ``activity_status == 'fail'``. Table
``Table('x', NoopDriver())``; key and time from the body (``key_field='key'``, ``time_field='time'``).
Reduce counts events and sums one feature as a check.
"""

from __future__ import annotations

import time

from _common import Timer, emit_result, load_rows, params, rate


def steps():
    from storey import AggregateByKey, FieldAggregator, NoopDriver, Table
    from storey.dtypes import SlidingWindows

    table = Table("x", NoopDriver())
    windows = SlidingWindows(["1h", "2h", "24h"], "10m")
    return AggregateByKey(
        [
            FieldAggregator("number_of_clicks", "click", ["count"], windows),
            FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
            FieldAggregator(
                "failed_activities",
                "activity_status",
                ["count"],
                SlidingWindows(["1h"], "10m"),
                aggr_filter=lambda element: element["activity_status"] == "fail",
            ),
        ],
        table,
        key_field="key",
        time_field="time",
    )


def reducer(acc, body):
    return (acc[0] + 1, acc[1] + body.get("number_of_clicks_count_24h", 0))  # absent when too late


def main() -> None:
    p = params()
    from storey import DataframeSource, Reduce, SyncEmitSource, build_flow

    rows = load_rows(p["path"], p.get("n"))
    n = len(rows)
    extra = {}
    if p.get("feed", "emit") == "emit":
        with Timer() as t:
            controller = build_flow([SyncEmitSource(), steps(), Reduce((0, 0.0), reducer)]).run()
            half = n // 2
            for i, body in enumerate(rows):
                if i == half:
                    t_half = time.perf_counter()
                controller.emit(body, key=body["key"])
            controller.terminate()
            count, check = controller.await_termination()
        # Rate over the second half: most keys already exist then (upstream's per-key set-up is costly).
        extra["second_half_events_per_s"] = round((n - half) / (time.perf_counter() - t_half), 1)
    else:
        import pandas as pd

        df = pd.DataFrame(rows)
        df["time"] = pd.to_datetime(df["time"], utc=True)
        amount = df["purchase_amount"]
        df["purchase_amount"] = amount.astype(object).where(amount.notna(), None)  # upstream sums NaN
        with Timer() as t:
            controller = build_flow(
                [DataframeSource(df, key_field="key"), steps(), Reduce((0, 0.0), reducer)]
            ).run()
            count, check = controller.await_termination()
    if count != n:
        raise SystemExit(f"emitted {count} events of {n}")
    features = 3 + 3 * 3 + 1
    emit_result(
        rate(
            n,
            t.seconds,
            path=f"AggregateByKey README ({p.get('feed', 'emit')})",
            features=features,
            us_per_event_per_feature=round(t.seconds / n / features * 1e6, 3),
            check=check,
            **extra,
        )
    )


if __name__ == "__main__":
    main()
