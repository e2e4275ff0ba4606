# %% [markdown]
# # Serving features online
#
# An `AggregateByKey` flow keeps per-key tiles in a `Table`; a separate serving flow reads them with
# `QueryByKey` as of each request's time. Here the table lives in an embedded SQLite file, so the two flows
# could be two processes. (Swap `SQLiteDriver` for `RedisDriver(redis_url)` to serve from Redis.)

# %%
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyarrow.parquet as pq

from storey import (AggregateByKey, Complete, FieldAggregator, FieldEquals, QueryByKey, Reduce, SlidingWindows,
                    Source, SQLiteDriver, Table, build_flow)
from storey._demo import demo_events_path

events = pq.read_table(demo_events_path()).slice(0, 20_000).to_pylist()
store = Path(tempfile.mkdtemp()) / "features.db"
len(events), events[0]

# %% [markdown]
# ## Ingest: aggregate the event stream into the table

# %%
windows = SlidingWindows(["1h", "2h", "24h"], "10m")
aggregates = [
    FieldAggregator("number_of_clicks", "click", ["count"], windows),
    FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
    FieldAggregator("failed_activities", "activity_status", ["count"], SlidingWindows(["1h"], "10m"),
                    aggr_filter=FieldEquals("activity_status", "fail")),
]
ingest = build_flow([
    Source(),
    AggregateByKey(aggregates, Table("features", SQLiteDriver(str(store))), key="key", time_field="time"),
    Reduce(0, lambda n, _: n + 1),
]).run()
for body in events:
    ingest.emit(body)
ingest.terminate(wait=True)

# %% [markdown]
# ## Serve: a request flow that returns features as of the request time

# %%
serving = build_flow([
    Source(),
    QueryByKey(["number_of_clicks_count_1h", "number_of_clicks_count_24h", "purchases_avg_24h"],
               Table("features", SQLiteDriver(str(store))), key="key", time_field="time"),
    Complete(),
]).run()
user = events[-1]["key"]
last_time = max(e["time"] for e in events if e["key"] == user)
import datetime as dt

answers = []
for minutes in range(0, 26 * 60, 20):
    when = last_time + dt.timedelta(minutes=minutes)
    answers.append((minutes, serving.emit({"key": user, "time": when}).await_result()))
serving.terminate(wait=True)
answers[0]

# %% [markdown]
# Features **expire** as the request time moves past the user's last event: the 1 h count decays to 0
# first, the 24 h count a day later.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
ax.step([m / 60 for m, _ in answers], [a["number_of_clicks_count_1h"] for _, a in answers], label="count 1h")
ax.step([m / 60 for m, _ in answers], [a["number_of_clicks_count_24h"] for _, a in answers], label="count 24h")
ax.set_xlabel("hours after the user's last event")
ax.set_ylabel("clicks")
ax.legend()
assert answers[-1][1]["number_of_clicks_count_24h"] == 0
