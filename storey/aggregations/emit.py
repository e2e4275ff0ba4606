"""Emit policies: *when* `AggregateByKey` emits and as of which time, never what value (§6.3–6.4).

These classes hold validated data only. Delays and timeouts are seconds, converted once to ns with
``round(x * 1e9)``. The scheduling itself lives in `storey.aggregations.emitter`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "EmissionType",
    "EmitAfterDelay",
    "EmitAfterMaxEvent",
    "EmitAfterPeriod",
    "EmitAfterWindow",
    "EmitBase",
    "EmitEveryEvent",
    "EmitPolicy",
    "LateDataHandling",
    "emit_policy_from_dict",
    "seconds_to_ns",
]


class EmissionType(enum.Enum):
    """Kept for import compatibility; only `All` is supported."""

    All = 1
    Incremental = 2


class LateDataHandling(enum.Enum):
    """Kept for import compatibility only; it has no effect."""

    Nothing = 1
    Sort_before_emit = 2


def seconds_to_ns(seconds: float, what: str) -> int:
    """Convert a non-negative, finite number of seconds to ns with ``round(x * 1e9)``.

    Examples
    --------
    >>> seconds_to_ns(1.5, "delay_in_seconds")
    1500000000
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        msg = f"`{what}` must be a number of seconds, got {type(seconds).__name__} {seconds!r}"
        raise TypeError(msg)
    x = float(seconds)
    if math.isnan(x) or math.isinf(x) or x < 0:
        msg = f"`{what}` must be a finite number of seconds >= 0, got {seconds!r}"
        raise ValueError(msg)
    return round(x * 1e9)


class EmitPolicy:
    """Base class of the emit policies (alias `EmitBase`).

    Parameters
    ----------
    emission_type
        Only `EmissionType.All` is supported; `EmissionType.Incremental` raises `ValueError`.
    """

    def __init__(self, emission_type: EmissionType = EmissionType.All) -> None:
        if emission_type is not EmissionType.All:
            msg = f"only EmissionType.All is supported, got {emission_type!r}"
            raise ValueError(msg)
        self.emission_type = emission_type

    @staticmethod
    def name() -> str:
        """The policy's mode name, as used by the dict form."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if k != "emission_type" and not k.endswith("_ns")
        )
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items(), key=lambda kv: kv[0]))))


EmitBase = EmitPolicy


class EmitEveryEvent(EmitPolicy):
    """Emit every event right after it is processed, with features as of its own time (the default).

    Examples
    --------
    >>> EmitEveryEvent.name()
    'everyEvent'
    """

    @staticmethod
    def name() -> str:
        """``'everyEvent'``."""
        return "everyEvent"


class EmitAfterMaxEvent(EmitPolicy):
    """Emit every `max_events`-th event of a key, optionally after an event-time timeout.

    Parameters
    ----------
    max_events
        An int >= 1.
    timeout_secs
        ``None``, or seconds after the event that starts a new count at which the key's latest event is
        emitted.

    Examples
    --------
    >>> p = EmitAfterMaxEvent(3, timeout_secs=2)
    >>> p.max_events, p.timeout_ns, p.name()
    (3, 2000000000, 'maxEvents')
    """

    def __init__(
        self,
        max_events: int,
        timeout_secs: float | None = None,
        emission_type: EmissionType = EmissionType.All,
    ) -> None:
        super().__init__(emission_type)
        if isinstance(max_events, bool) or not isinstance(max_events, int):
            msg = f"`max_events` must be an int >= 1, got {type(max_events).__name__} {max_events!r}"
            raise TypeError(msg)
        if max_events < 1:
            msg = f"`max_events` must be an int >= 1, got {max_events!r}"
            raise ValueError(msg)
        self.max_events = max_events
        self.timeout_secs = timeout_secs
        self.timeout_ns = None if timeout_secs is None else seconds_to_ns(timeout_secs, "timeout_secs")

    @staticmethod
    def name() -> str:
        """``'maxEvents'``."""
        return "maxEvents"


class _DelayedPolicy(EmitPolicy):
    def __init__(self, delay_in_seconds: float = 0, emission_type: EmissionType = EmissionType.All) -> None:
        super().__init__(emission_type)
        self.delay_in_seconds = delay_in_seconds
        self.delay_ns = seconds_to_ns(delay_in_seconds, "delay_in_seconds")


class EmitAfterPeriod(_DelayedPolicy):
    """Emit, for each key with data, a new event at every boundary ``j·P₁`` once ``C >= b + delay``.

    ``P₁`` is the period of the first aggregator; features are evaluated as of ``b − 1 ns``.

    Examples
    --------
    >>> EmitAfterPeriod(delay_in_seconds=60).delay_ns
    60000000000
    """

    @staticmethod
    def name() -> str:
        """``'afterPeriod'``."""
        return "afterPeriod"


class EmitAfterWindow(_DelayedPolicy):
    """As `EmitAfterPeriod`, with boundaries at multiples of the first aggregator's smallest window.

    Examples
    --------
    >>> EmitAfterWindow().name()
    'afterWindow'
    """

    @staticmethod
    def name() -> str:
        """``'afterWindow'``."""
        return "afterWindow"


class EmitAfterDelay(_DelayedPolicy):
    """A per-key debounce: emit a key's latest event `delay_in_seconds` after its first pending event.

    Examples
    --------
    >>> EmitAfterDelay(0.5).delay_ns
    500000000
    """

    def __init__(self, delay_in_seconds: float, emission_type: EmissionType = EmissionType.All) -> None:
        super().__init__(delay_in_seconds, emission_type)

    @staticmethod
    def name() -> str:
        """``'afterDelay'``."""
        return "afterDelay"


# mode -> (class, {dict key: constructor argument}, required dict keys)
_DICT_FORMS: dict[str, tuple[type[EmitPolicy], dict[str, str], frozenset[str]]] = {
    "everyEvent": (EmitEveryEvent, {}, frozenset()),
    "maxEvents": (
        EmitAfterMaxEvent,
        {"maxEvents": "max_events", "timeout": "timeout_secs"},
        frozenset({"maxEvents"}),
    ),
    "afterPeriod": (EmitAfterPeriod, {"delay": "delay_in_seconds"}, frozenset()),
    "afterWindow": (EmitAfterWindow, {"delay": "delay_in_seconds"}, frozenset()),
    "afterDelay": (EmitAfterDelay, {"delay": "delay_in_seconds"}, frozenset({"delay"})),
}


def emit_policy_from_dict(d: Mapping[str, Any]) -> EmitPolicy:
    """Build a policy from its dict form (§6.4); `d` is never mutated.

    Raises
    ------
    TypeError
        An unknown ``mode``.
    ValueError
        A missing required key or an unexpected key.

    Examples
    --------
    >>> emit_policy_from_dict({"mode": "maxEvents", "maxEvents": 5})
    EmitAfterMaxEvent(max_events=5, timeout_secs=None)
    >>> emit_policy_from_dict({"mode": "afterDelay", "delay": 1}).delay_ns
    1000000000
    """
    if not isinstance(d, Mapping):
        msg = f"an emit policy dict must be a mapping, got {type(d).__name__}"
        raise TypeError(msg)
    if "mode" not in d:
        msg = f"emit policy dict {dict(d)!r} has no 'mode'; expected one of {sorted(_DICT_FORMS)}"
        raise ValueError(msg)
    mode = d["mode"]
    if not isinstance(mode, str) or mode not in _DICT_FORMS:
        msg = f"unknown emit policy mode {mode!r}; expected one of {sorted(_DICT_FORMS)}"
        raise TypeError(msg)
    cls, keys, required = _DICT_FORMS[mode]
    unexpected = sorted(set(d) - set(keys) - {"mode"})
    if unexpected:
        msg = f"emit policy mode {mode!r} got unexpected key(s) {unexpected}; allowed: {sorted(keys)}"
        raise ValueError(msg)
    missing = sorted(required - set(d))
    if missing:
        msg = f"emit policy mode {mode!r} is missing the required key(s) {missing}"
        raise ValueError(msg)
    return cls(**{arg: d[key] for key, arg in keys.items() if key in d})
