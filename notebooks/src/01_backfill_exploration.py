# %% [markdown]
# # Backfill exploration with `storey.frames`
#
# Read the bundled demo events (Parquet), compute the seed README features for every event, plot the
# feature time series of a few users with the 10-minute tile boundaries, and look at late events.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

import storey.frames as frames
from storey import FieldAggregator, FieldEquals, SlidingWindows
from storey._demo import demo_events_path

events = pq.read_table(demo_events_path()).slice(0, 60_000)
events.schema

# %%
windows = SlidingWindows(["1h", "2h", "24h"], "10m")
aggregates = [
    FieldAggregator("number_of_clicks", "click", ["count"], windows),
    FieldAggregator("purchases", "purchase_amount", ["avg", "min", "max"], windows),
    FieldAggregator("failed_activities", "activity_status", ["count"], SlidingWindows(["1h"], "10m"),
                    aggr_filter=FieldEquals("activity_status", "fail")),
]
features = frames.aggregate(events, aggregates, key="key", time_field="time")
df = features.to_pandas()
print(features.num_rows, "rows;", features.schema.metadata[b"storey.metrics"].decode())
df.head()

# %% [markdown]
# ## Feature time series of the busiest users
# Counts step up with each event and fall when old tiles leave the window; the dotted lines are the tile
# boundaries (every 10 minutes, aligned to the epoch, the same for every key).

# %%
top = df["key"].value_counts().index[:3]
fig, axes = plt.subplots(len(top), 1, figsize=(9, 7), sharex=False)
for ax, user in zip(axes, top):
    rows = df[df["key"] == user].sort_values("time")
    ax.step(rows["time"], rows["number_of_clicks_count_1h"], where="post", label="clicks 1h")
    ax.step(rows["time"], rows["number_of_clicks_count_2h"], where="post", label="clicks 2h")
    start, end = rows["time"].min().floor("10min"), rows["time"].max().ceil("10min")
    for b in np.arange(start, end, np.timedelta64(10, "m"))[:60]:
        ax.axvline(b, color="grey", lw=0.3, ls=":")
    ax.set_title(user)
    ax.legend(loc="upper left")
fig.tight_layout()

# %% [markdown]
# ## Late events
# An event older than its key's newest event is *late*. Within the largest window it is added to its own
# tile (later features see it); older than that it is *too late*: emitted without those features and counted.

# %%
metrics = frames.aggregate(events, aggregates, key="key", time_field="time").schema.metadata[b"storey.metrics"]
times = events.column("time").to_numpy().astype("datetime64[ns]").astype(np.int64)
keys = events.column("key").to_pylist()
high = {}
late = np.zeros(len(keys), bool)
for i, (k, t) in enumerate(zip(keys, times)):
    late[i] = t < high.get(k, t)
    high[k] = max(high.get(k, t), t)
too_late_rows = df[df["number_of_clicks_count_24h"].isna()]
print("late events:", int(late.sum()), "| too late (features absent):", len(too_late_rows), "|", metrics.decode())
assert len(too_late_rows) <= late.sum()
