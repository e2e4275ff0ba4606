"""Durations, epoch-aligned tiles and windows: pure time → tile math (spec AGGREGATIONS.md §2).

Every instant is an int64 count of epoch nanoseconds; `P` is the tile length (period) in ns and
``tile(t) = t // P`` (floor division, so tiles are aligned to the UTC epoch for every key).
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "FixedWindowType",
    "FixedWindows",
    "MAX_TILES",
    "SlidingWindows",
    "Windows",
    "accepts",
    "format_duration",
    "parse_duration",
    "retention_bound",
    "tile_of",
    "window_range",
]

MAX_TILES = 1_000_000
"""The largest allowed number of tile slots `N` in the largest window."""

_DURATION = re.compile(r"[1-9][0-9]*[smhd]")
_UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000}


def parse_duration(text: str) -> int:
    """Parse a duration string (``^[1-9][0-9]*[smhd]$``) to nanoseconds.

    Raises
    ------
    ValueError
        The string does not match the grammar (``0h``, ``1.5h``, ``ms``, ``1w``, ``1H``, spaces …).
    TypeError
        Not a `str`.

    Examples
    --------
    >>> parse_duration("10m")
    600000000000
    >>> parse_duration("1.5h")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration '1.5h': expected an integer >= 1 followed by s, m, h or d (e.g. '10m')
    """
    if not isinstance(text, str):
        msg = f"a duration must be a str such as '10m', got {type(text).__name__} {text!r}"
        raise TypeError(msg)
    if _DURATION.fullmatch(text) is None:
        msg = f"invalid duration {text!r}: expected an integer >= 1 followed by s, m, h or d (e.g. '10m')"
        raise ValueError(msg)
    return int(text[:-1]) * _UNIT_NS[text[-1]]


def format_duration(ns: int) -> str:
    """Format nanoseconds with the largest unit that divides them exactly (``ms``/``us``/``ns`` below 1 s).

    Only for display and for rebuilding windows from a stored period; ``ms``/``us``/``ns`` are not valid
    inputs to `parse_duration`.

    Examples
    --------
    >>> format_duration(600_000_000_000), format_duration(8_640_000_000_000), format_duration(100_000_000)
    ('10m', '144m', '100ms')
    """
    for unit in ("d", "h", "m", "s"):
        if ns % _UNIT_NS[unit] == 0:
            return f"{ns // _UNIT_NS[unit]}{unit}"
    for unit, size in (("ms", 1_000_000), ("us", 1_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def tile_of(t: int, period_ns: int) -> int:
    """The tile index of instant `t`: ``t // period_ns`` (rounds toward −∞).

    Examples
    --------
    >>> tile_of(-1, 10), tile_of(0, 10), tile_of(19, 10)
    (-1, 0, 1)
    """
    return t // period_ns


def accepts(k: int, m: int, n_slots: int) -> bool:
    """Acceptance rule of §5.2: an event in tile `k` is accepted iff ``k >= M − N + 1``.

    `m` is ``tile(H)`` after the update of the high-water mark and `n_slots` is `N`.
    """
    return k >= m - n_slots + 1


def retention_bound(m: int, n_slots: int, fixed: bool) -> int:
    """The oldest tile index that must be kept (§5.2): ``M − 2N + 2``, or ``M − 3N + 2`` for fixed windows."""
    return m - (3 if fixed else 2) * n_slots + 2


class FixedWindowType(enum.Enum):
    """Which fixed window an evaluation reads (§2.4)."""

    CurrentOpenWindow = 1
    LastClosedWindow = 2


def window_range(kind: str, k: int, n_w: int, fixed_type: FixedWindowType | None = None) -> tuple[int, int]:
    """The inclusive tile range ``(lo, hi)`` of a window of `n_w` tiles as of a time in tile `k`.

    Parameters
    ----------
    kind
        ``'sliding'`` or ``'fixed'``.
    k
        ``tile(τ)``.
    n_w
        The window length in tiles, ``W / P``.
    fixed_type
        For fixed windows: `FixedWindowType.CurrentOpenWindow` (default) or `LastClosedWindow`.

    Examples
    --------
    >>> window_range("sliding", 100, 6)
    (95, 100)
    >>> window_range("fixed", 100, 6), window_range("fixed", 100, 6, FixedWindowType.LastClosedWindow)
    ((96, 100), (90, 95))
    """
    if kind == "sliding":
        return k - n_w + 1, k
    start = (k // n_w) * n_w
    if fixed_type is FixedWindowType.LastClosedWindow:
        return start - n_w, start - 1
    return start, k


def _parse_windows(windows: Sequence[str], where: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if isinstance(windows, str) or not isinstance(windows, Sequence):
        msg = (
            f"{where}: `windows` must be a list of duration strings, got {type(windows).__name__} {windows!r}"
        )
        raise TypeError(msg)
    if len(windows) == 0:
        msg = f"{where}: `windows` must not be empty"
        raise ValueError(msg)
    parsed = sorted(((parse_duration(w), w) for w in windows), key=lambda pair: pair[0])
    for (ns_a, w_a), (ns_b, w_b) in itertools.pairwise(parsed):
        if ns_a == ns_b:
            msg = f"{where}: windows {w_a!r} and {w_b!r} have the same duration"
            raise ValueError(msg)
    return tuple(w for _, w in parsed), tuple(ns for ns, _ in parsed)


class Windows:
    """Base class of `SlidingWindows` and `FixedWindows` (a set of windows over one tile grid).

    Attributes
    ----------
    windows
        The user's window strings, in ascending duration.
    windows_ns
        Their durations in ns.
    period_ns
        The tile length `P`.
    tiles_per_window
        ``W / P`` for each window.
    n_tiles
        `N`, the tile count of the largest window.
    """

    window_type: ClassVar[str]
    windows: tuple[str, ...]
    windows_ns: tuple[int, ...]
    period_ns: int
    tiles_per_window: tuple[int, ...]
    n_tiles: int

    def _finish(self, where: str) -> None:
        self.tiles_per_window = tuple(w // self.period_ns for w in self.windows_ns)
        self.n_tiles = self.tiles_per_window[-1]
        if self.n_tiles > MAX_TILES:
            msg = (
                f"{where}: the largest window {self.windows[-1]!r} holds {self.n_tiles} tiles of "
                f"{format_duration(self.period_ns)}, more than {MAX_TILES}; use a longer period"
            )
            raise ValueError(msg)

    @property
    def max_window_ns(self) -> int:
        """The duration of the largest window in ns."""
        return self.windows_ns[-1]

    def range(self, k: int, i: int, fixed_type: FixedWindowType | None = None) -> tuple[int, int]:
        """The inclusive tile range of window `i` as of a time in tile `k` (see `window_range`)."""
        return window_range(self.window_type, k, self.tiles_per_window[i], fixed_type)

    def _key(self) -> tuple[object, ...]:
        return (self.window_type, self.windows, self.period_ns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Windows) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class SlidingWindows(Windows):
    """Sliding windows over a shared, epoch-aligned tile grid (§2.3).

    Parameters
    ----------
    windows
        A non-empty list of duration strings; sorted by ascending duration (stable), and two strings with
        the same duration fail with `ValueError`. Feature names keep the user's strings.
    period
        A duration string dividing every window. Default: ``gcd(window durations) / 10``.

    Examples
    --------
    >>> w = SlidingWindows(["24h", "1h", "2h"], "10m")
    >>> w.windows, w.period_ns, w.tiles_per_window
    (('1h', '2h', '24h'), 600000000000, (6, 12, 144))
    >>> SlidingWindows(["45m", "1h"]).period_ns // 1_000_000_000
    90
    >>> SlidingWindows(["1h"], "7m")
    Traceback (most recent call last):
    ...
    ValueError: SlidingWindows: window '1h' is not a multiple of period '7m'
    """

    window_type: ClassVar[str] = "sliding"

    def __init__(self, windows: Sequence[str], period: str | None = None) -> None:
        where = "SlidingWindows"
        self.windows, self.windows_ns = _parse_windows(windows, where)
        if period is None:
            self.period = None
            self.period_ns = math.gcd(*self.windows_ns) // 10
        else:
            self.period = period
            self.period_ns = parse_duration(period)
            for w, w_ns in zip(self.windows, self.windows_ns, strict=False):
                if w_ns % self.period_ns:
                    msg = f"{where}: window {w!r} is not a multiple of period {period!r}"
                    raise ValueError(msg)
        self._finish(where)

    @classmethod
    def from_period_ns(cls, windows: Sequence[str], period_ns: int) -> SlidingWindows:
        """Build from a period in ns (as stored in a schema document, §7.1)."""
        self = cls.__new__(cls)
        where = "SlidingWindows"
        self.windows, self.windows_ns = _parse_windows(windows, where)
        self.period = format_duration(period_ns)
        self.period_ns = int(period_ns)
        for w, w_ns in zip(self.windows, self.windows_ns, strict=False):
            if w_ns % self.period_ns:
                msg = f"{where}: window {w!r} is not a multiple of period {self.period!r}"
                raise ValueError(msg)
        self._finish(where)
        return self

    def __repr__(self) -> str:
        return f"SlidingWindows({list(self.windows)!r}, {format_duration(self.period_ns)!r})"


class FixedWindows(Windows):
    """Tumbling calendar windows aligned to the UTC epoch (§2.4); the period is ``gcd(window durations)``.

    There is no `period` argument: passing one raises `TypeError`.

    Examples
    --------
    >>> w = FixedWindows(["1h", "2h", "3h", "24h"])
    >>> w.period_ns // 3_600_000_000_000, w.tiles_per_window
    (1, (1, 2, 3, 24))
    """

    window_type: ClassVar[str] = "fixed"

    def __init__(self, windows: Sequence[str]) -> None:
        where = "FixedWindows"
        self.windows, self.windows_ns = _parse_windows(windows, where)
        self.period = None
        self.period_ns = math.gcd(*self.windows_ns)
        self._finish(where)

    @classmethod
    def from_period_ns(cls, windows: Sequence[str], period_ns: int) -> FixedWindows:
        """Build over a given tile length (a stored schema's period, §7.1/§7.4); every window must be a
        multiple of it."""
        self = cls.__new__(cls)
        where = "FixedWindows"
        self.windows, self.windows_ns = _parse_windows(windows, where)
        self.period = None
        self.period_ns = int(period_ns)
        for w, w_ns in zip(self.windows, self.windows_ns, strict=True):
            if w_ns % self.period_ns:
                msg = f"{where}: window {w!r} is not a multiple of period {format_duration(self.period_ns)!r}"
                raise ValueError(msg)
        self._finish(where)
        return self

    def __repr__(self) -> str:
        return f"FixedWindows({list(self.windows)!r})"
