"""Emit policy data and the dict form (spec AGGREGATIONS.md §6.3–6.4)."""

from __future__ import annotations

import pytest

from storey.aggregations.emit import (
    EmissionType,
    EmitAfterDelay,
    EmitAfterMaxEvent,
    EmitAfterPeriod,
    EmitAfterWindow,
    EmitBase,
    EmitEveryEvent,
    EmitPolicy,
    LateDataHandling,
    emit_policy_from_dict,
)


def test_names():
    assert [
        c.name()
        for c in (EmitEveryEvent, EmitAfterMaxEvent, EmitAfterPeriod, EmitAfterWindow, EmitAfterDelay)
    ] == [
        "everyEvent",
        "maxEvents",
        "afterPeriod",
        "afterWindow",
        "afterDelay",
    ]
    assert EmitBase is EmitPolicy
    assert {e.name for e in EmissionType} == {"All", "Incremental"}
    assert {e.name for e in LateDataHandling} == {"Nothing", "Sort_before_emit"}


@pytest.mark.parametrize(
    ("seconds", "ns"),
    [(0, 0), (1, 10**9), (0.1, 100_000_000), (1.5e-9, 2), (2.5e-9, 2), (3600, 3600 * 10**9)],
)
def test_seconds_to_ns_rounds(seconds, ns):
    assert EmitAfterDelay(seconds).delay_ns == ns == round(seconds * 1e9)


@pytest.mark.parametrize("cls", [EmitAfterPeriod, EmitAfterWindow, EmitAfterDelay])
def test_negative_delays_fail(cls):
    with pytest.raises(ValueError):
        cls(-1)
    with pytest.raises(ValueError):
        cls(float("nan"))
    with pytest.raises(TypeError):
        cls("1")


def test_max_events_validation():
    p = EmitAfterMaxEvent(2, timeout_secs=0.5)
    assert (p.max_events, p.timeout_ns) == (2, 500_000_000)
    assert EmitAfterMaxEvent(1).timeout_ns is None
    for bad in (0, -1):
        with pytest.raises(ValueError):
            EmitAfterMaxEvent(bad)
    for bad in (1.0, True, "3"):
        with pytest.raises(TypeError):
            EmitAfterMaxEvent(bad)
    with pytest.raises(ValueError):
        EmitAfterMaxEvent(3, timeout_secs=-1)


def test_delay_required():
    with pytest.raises(TypeError):
        EmitAfterDelay()  # type: ignore[call-arg]
    assert EmitAfterPeriod().delay_ns == 0
    assert EmitAfterWindow().delay_ns == 0


def test_incremental_rejected():
    with pytest.raises(ValueError):
        EmitAfterPeriod(emission_type=EmissionType.Incremental)
    assert EmitEveryEvent(EmissionType.All).emission_type is EmissionType.All


@pytest.mark.parametrize(
    ("d", "want"),
    [
        ({"mode": "everyEvent"}, EmitEveryEvent()),
        ({"mode": "maxEvents", "maxEvents": 3}, EmitAfterMaxEvent(3)),
        ({"mode": "maxEvents", "maxEvents": 3, "timeout": 2}, EmitAfterMaxEvent(3, 2)),
        ({"mode": "afterPeriod"}, EmitAfterPeriod()),
        ({"mode": "afterPeriod", "delay": 5}, EmitAfterPeriod(5)),
        ({"mode": "afterWindow", "delay": 5}, EmitAfterWindow(5)),
        ({"mode": "afterDelay", "delay": 1}, EmitAfterDelay(1)),
    ],
)
def test_dict_form(d, want):
    before = dict(d)
    got = emit_policy_from_dict(d)
    assert got == want
    assert type(got) is type(want)
    assert d == before


@pytest.mark.parametrize(
    ("d", "exc"),
    [
        ({"mode": "sometimes"}, TypeError),
        ({"mode": 3}, TypeError),
        ({}, ValueError),
        ({"mode": "maxEvents"}, ValueError),
        ({"mode": "afterDelay"}, ValueError),
        ({"mode": "everyEvent", "delay": 1}, ValueError),
        ({"mode": "afterPeriod", "timeout": 1}, ValueError),
    ],
)
def test_dict_form_errors(d, exc):
    with pytest.raises(exc):
        emit_policy_from_dict(d)


def test_dtypes_reexports():
    import storey.dtypes as dtypes

    assert dtypes.EmitAfterPeriod is EmitAfterPeriod
    assert dtypes.emit_policy_from_dict is emit_policy_from_dict
