# %% [markdown]
# # Point-in-time training set
#
# Labels happen at times of their own; each label must get the features as they were at that moment,
# computed only from events at or before it. `storey.frames.as_of` does this with a sort-merge over the
# labels (not one scan per label), and no later event ever leaks in, not even one in the same tile.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import storey.frames as frames
from storey import FieldAggregator, SlidingWindows
from storey._demo import demo_events_path

events = pq.read_table(demo_events_path()).slice(0, 40_000)
aggregates = [FieldAggregator("purchases", "purchase_amount", ["count", "sum", "max"], SlidingWindows(["1h", "24h"], "10m"))]

rng = np.random.default_rng(0)
keys = np.array(events.column("key").to_pylist())
times = events.column("time").to_numpy()
pick = rng.choice(len(keys), 500, replace=False)
labels = pa.table({
    "key": keys[pick],
    "time": pa.array(times[pick] + np.timedelta64(7, "m"), pa.timestamp("ns", "UTC")),
    "churned": rng.integers(0, 2, len(pick)),
})
training = frames.as_of(labels, events, aggregates, key="key", time_field="time")
training.to_pandas().head()

# %% [markdown]
# ## Leakage check
# Recompute one feature by brute force from the events strictly visible at each label time and compare.

# %%
df = events.to_pandas()
P = np.timedelta64(10, "m")
checked = 0
for row in training.to_pylist()[:100]:
    q = np.datetime64(row["time"].replace(tzinfo=None), "ns")
    mine = df[(df["key"] == row["key"]) & (df["time"].dt.tz_localize(None) <= q)]
    tile_q = (q - np.datetime64(0, "ns")) // P
    tiles = (mine["time"].dt.tz_localize(None).to_numpy() - np.datetime64(0, "ns")) // P
    window = mine[tiles >= tile_q - 5]
    assert row["purchases_count_1h"] == window["purchase_amount"].notna().sum()
    checked += 1
print("checked", checked, "labels: no leakage")

fig, ax = plt.subplots(figsize=(6, 3))
t = training.to_pandas()
ax.scatter(t["purchases_count_24h"], t["purchases_sum_24h"], s=6, c=t["churned"], cmap="coolwarm")
ax.set_xlabel("purchases count 24h at label time")
ax.set_ylabel("purchases sum 24h")
