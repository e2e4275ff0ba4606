"""The engines' output: one record per emitted row, column-wise (before the bodies are assembled).

Both frames engines produce `Emissions`: for each output row, in stream order, the row it echoes (``src``,
an index into the batch's row space, or ``-1`` for a boundary emission), the key id, the time (the event's
time, or the boundary ``b`` of a period/window emission), each feature value and, per aggregator, whether
its features are present (absent = the aggregator was too late, §5.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from storey.frames._layout import StepLayout

__all__ = ["Emissions", "EmissionsBuilder"]


class Emissions:
    """Column-wise emitted rows.

    Attributes
    ----------
    src, kid, time
        int64 arrays (one element per output row).
    features
        One array per feature (layout order): int64 for integer features, float64 otherwise.
    present
        One bool array per aggregator.
    """

    __slots__ = ("features", "kid", "present", "src", "time")

    def __init__(
        self,
        src: np.ndarray,
        kid: np.ndarray,
        time: np.ndarray,
        features: Sequence[np.ndarray],
        present: Sequence[np.ndarray],
    ) -> None:
        self.src = src
        self.kid = kid
        self.time = time
        self.features = list(features)
        self.present = list(present)

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def empty(cls, layout: StepLayout) -> Emissions:
        z = np.empty(0, dtype=np.int64)
        feats = [np.empty(0, dtype=np.int64 if f else np.float64) for fl in layout.int_features for f in fl]
        return cls(z, z, z, feats, [np.empty(0, dtype=bool) for _ in layout.plans])

    def slice(self, start: int, stop: int) -> Emissions:
        return Emissions(
            self.src[start:stop],
            self.kid[start:stop],
            self.time[start:stop],
            [f[start:stop] for f in self.features],
            [p[start:stop] for p in self.present],
        )

    @staticmethod
    def concat(parts: Sequence[Emissions]) -> Emissions:
        if len(parts) == 1:
            return parts[0]
        return Emissions(
            np.concatenate([p.src for p in parts]),
            np.concatenate([p.kid for p in parts]),
            np.concatenate([p.time for p in parts]),
            [np.concatenate(cols) for cols in zip(*(p.features for p in parts), strict=True)],
            [np.concatenate(cols) for cols in zip(*(p.present for p in parts), strict=True)],
        )


class EmissionsBuilder:
    """Row-at-a-time builder used by the pure-Python reference engine."""

    def __init__(self, layout: StepLayout) -> None:
        self.layout = layout
        self.src: list[int] = []
        self.kid: list[int] = []
        self.time: list[int] = []
        self.values: list[list[tuple | None]] = [[] for _ in layout.plans]

    def add(self, src: int, kid: int, time: int, values: Sequence[tuple | None]) -> None:
        self.src.append(src)
        self.kid.append(kid)
        self.time.append(time)
        for col, v in zip(self.values, values, strict=True):
            col.append(v)

    def __len__(self) -> int:
        return len(self.src)

    def build(self) -> Emissions:
        layout = self.layout
        feats: list[np.ndarray] = []
        present: list[np.ndarray] = []
        for a, rows in enumerate(self.values):
            mask = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows))
            present.append(mask)
            for f, is_int in enumerate(layout.int_features[a]):
                fill = 0 if is_int else 0.0
                col = [fill if r is None else r[f] for r in rows]
                feats.append(np.array(col, dtype=np.int64 if is_int else np.float64))
        out = Emissions(
            np.array(self.src, dtype=np.int64),
            np.array(self.kid, dtype=np.int64),
            np.array(self.time, dtype=np.int64),
            feats,
            present,
        )
        self.src, self.kid, self.time = [], [], []
        self.values = [[] for _ in layout.plans]
        return out
