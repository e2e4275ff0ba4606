"""Durations, SlidingWindows/FixedWindows and tile math (spec AGGREGATIONS.md §2)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storey._time import to_ns
from storey.aggregations.windows import (
    MAX_TILES,
    FixedWindows,
    FixedWindowType,
    SlidingWindows,
    accepts,
    format_duration,
    parse_duration,
    retention_bound,
    tile_of,
    window_range,
)

S = 10**9
MIN = 60 * S
H = 3600 * S


@pytest.mark.parametrize(
    ("text", "ns"), [("1s", S), ("10m", 10 * MIN), ("2h", 2 * H), ("1d", 24 * H), ("90m", 90 * MIN)]
)
def test_parse_duration(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "bad", ["0h", "1.5h", "ms", "1w", "1H", " 1h", "1h ", "1 h", "01h", "", "h", "1h\n", "-1h"]
)
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_parse_duration_type():
    with pytest.raises(TypeError):
        parse_duration(60)  # type: ignore[arg-type]


@given(st.integers(1, 10**6), st.sampled_from("smhd"))
def test_format_roundtrip(k, unit):
    ns = parse_duration(f"{k}{unit}")
    assert parse_duration(format_duration(ns)) == ns


@pytest.mark.parametrize(
    ("windows", "period_ns"),
    [(["1h", "2h", "24h"], 6 * MIN), (["30m"], 3 * MIN), (["45m", "1h"], 90 * S), (["1d"], 144 * MIN)],
)
def test_default_period_is_gcd_over_10(windows, period_ns):
    assert SlidingWindows(windows).period_ns == period_ns


def test_sliding_sorts_stably_and_keeps_user_strings():
    w = SlidingWindows(["24h", "60m", "2h"], "10m")
    assert w.windows == ("60m", "2h", "24h")
    assert w.tiles_per_window == (6, 12, 144)
    assert w.n_tiles == 144


def test_sliding_rejects_same_duration():
    with pytest.raises(ValueError, match="same duration"):
        SlidingWindows(["60m", "1h"], "10m")


def test_sliding_period_must_divide():
    with pytest.raises(ValueError, match=r"window '1h' is not a multiple of period '7m'"):
        SlidingWindows(["1h"], "7m")


def test_sliding_rejects_empty_and_non_lists():
    with pytest.raises(ValueError):
        SlidingWindows([])
    with pytest.raises(TypeError):
        SlidingWindows("1h")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SlidingWindows(["1h"], "1.5m")


def test_tile_limit():
    assert SlidingWindows(["1000000s"], "1s").n_tiles == MAX_TILES
    with pytest.raises(ValueError, match="more than 1000000"):
        SlidingWindows(["1000001s"], "1s")
    with pytest.raises(ValueError, match="more than 1000000"):
        FixedWindows(["1s", "30d"])


def test_fixed_period_is_gcd_and_no_period_argument():
    w = FixedWindows(["2h", "90m"])
    assert w.windows == ("90m", "2h")
    assert w.period_ns == 30 * MIN
    with pytest.raises(TypeError):
        FixedWindows(["1h"], "10m")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        FixedWindows(["1h"], period="10m")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="same duration"):
        FixedWindows(["1d", "24h"])


@given(st.integers(-(10**18), 10**18), st.integers(1, 10**12))
def test_tile_is_floor_division(t, p):
    k = tile_of(t, p)
    assert k * p <= t < (k + 1) * p


def test_sliding_membership_example_2_3():
    # P = 10 min, W = 1 h: as of 22:47:00 the window is tiles 21:50 … 22:40
    p = 10 * MIN
    tau = to_ns("2024-03-05T22:47:00Z")
    lo, hi = window_range("sliding", tile_of(tau, p), 6)
    assert lo * p == to_ns("2024-03-05T21:50:00Z")
    assert hi * p == to_ns("2024-03-05T22:40:00Z")
    assert lo <= tile_of(to_ns("2024-03-05T21:50:00Z"), p) <= hi
    assert not lo <= tile_of(to_ns("2024-03-05T21:49:59Z"), p) <= hi


@given(st.integers(-(10**17), 10**17), st.integers(1, 50), st.integers(1, 10**10))
def test_sliding_span_bounds(tau, n_w, p):
    lo, hi = window_range("sliding", tile_of(tau, p), n_w)
    span = tau - lo * p
    w = n_w * p
    assert w - p <= span < w
    assert hi == tile_of(tau, p)


@given(st.integers(-(10**17), 10**17), st.integers(1, 50), st.integers(1, 10**10))
def test_fixed_ranges_are_calendar_windows(tau, n_w, p):
    w = n_w * p
    k = tile_of(tau, p)
    lo, hi = window_range("fixed", k, n_w)
    assert lo * p == (tau // w) * w
    assert hi == k
    lo2, hi2 = window_range("fixed", k, n_w, FixedWindowType.LastClosedWindow)
    assert (lo2 * p, (hi2 + 1) * p) == ((tau // w) * w - w, (tau // w) * w)


def test_fixed_window_example_2_4():
    # windows 1h/2h/3h/24h, one event every 25 min from 21:40Z, counted as of 23:45Z: 2, 5, 6, 6
    w = FixedWindows(["1h", "2h", "3h", "24h"])
    start = to_ns(dt.datetime(2020, 1, 1, 21, 40, tzinfo=dt.UTC))
    events = [start + i * 25 * MIN for i in range(6)]
    tau = to_ns("2020-01-01T23:45:00Z")
    assert events[-1] == tau
    k = tile_of(tau, w.period_ns)
    counts = []
    for i in range(4):
        lo, hi = w.range(k, i)
        counts.append(sum(1 for t in events if lo <= tile_of(t, w.period_ns) <= hi))
    assert counts == [2, 5, 6, 6]


def test_fixed_7d_starts_on_thursday():
    w = FixedWindows(["7d"])
    tau = to_ns("2024-03-06T12:00:00Z")  # a Wednesday
    lo, _ = w.range(tile_of(tau, w.period_ns), 0)
    start = dt.datetime.fromtimestamp(lo * w.period_ns / 1e9, tz=dt.UTC)
    assert start.weekday() == 3 and start.hour == 0  # Thursday 00:00 UTC


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(1, 100))
def test_acceptance_and_retention_bounds(k, m, n):
    assert accepts(k, m, n) == (k >= m - n + 1)
    assert retention_bound(m, n, False) == m - 2 * n + 2
    assert retention_bound(m, n, True) == m - 3 * n + 2


def test_equality_and_repr():
    assert SlidingWindows(["1h"], "10m") == SlidingWindows(["1h"], "10m")
    assert SlidingWindows(["1h"], "10m") != SlidingWindows(["1h"], "20m")
    assert SlidingWindows(["1h"], "10m") != FixedWindows(["1h"])
    assert repr(FixedWindows(["2h", "1h"])) == "FixedWindows(['1h', '2h'])"
    assert SlidingWindows.from_period_ns(["1h"], 10 * MIN) == SlidingWindows(["1h"], "10m")
    assert FixedWindows.from_period_ns(["2h"], H).tiles_per_window == (2,)
    with pytest.raises(ValueError):
        FixedWindows.from_period_ns(["90m"], H)
