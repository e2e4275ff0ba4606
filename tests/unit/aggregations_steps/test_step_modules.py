"""Step modules (`storey.aggregations._compiled_state.StepModule`): a fused step's ``step_rows`` compiled with its
parameters as constants must give the generic module's bits.

The step module is the generic functions' own source with the plan's parameters folded in (`fold_constants`),
so these tests run whole flows three ways on the same hypothesis-drawn streams: the batch lane on the step
module (``STOREY_STEP_MODULES=eager``), the batch lane on the generic module (``off``) and the per-event path,
and compare outputs, metrics, persisted blobs and last-event marks bit for bit. The plans are fixed (each
compiles a module of its own, a few seconds each); together they take every branch the folding removes or
keeps: counts moved by deltas, capped int and float counts, sliding and fixed windows, filters, every
aggregation.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings

from storey import FieldAggregator, FieldEquals, FixedWindows, SlidingWindows
from storey.aggregations import _compiled_state, _step_fused
from storey.aggregations.kernels.base import _numba_enabled
from storey.aggregations.kernels.compiled import cache_dir
from tests.unit.aggregations_steps.test_batch_lane import assert_same_runs, run
from tests.unit.aggregations_steps.test_fused_step import _long_rows, _readme_aggs, events

pytestmark = pytest.mark.skipif(not _numba_enabled(), reason="numba is not importable or is disabled")


def _counts():
    """Count-only plans (window counts moved by deltas), an int cap, fixed and sliding windows."""
    return [
        FieldAggregator("c", "x", ["count"], FixedWindows(["2s", "6s"])),
        FieldAggregator("k", "s", ["count"], SlidingWindows(["2s", "8s"], "2s"), max_value=2),
    ]


def _moments():
    """Every other aggregation, a float-capped count, a filter on another field."""
    return [
        FieldAggregator("m", "y", ["stdvar", "stddev", "first", "sqr"], SlidingWindows(["1s", "4s"], "1s")),
        FieldAggregator(
            "q",
            "x",
            ["count", "sum", "min", "max", "last"],
            FixedWindows(["4s"]),
            max_value=1.5,
            aggr_filter=FieldEquals("s", "b"),
        ),
        FieldAggregator("f", "s", ["count"], SlidingWindows(["2s"], "1s"), aggr_filter=FieldEquals("s", "a")),
    ]


PLANS = {"readme": _readme_aggs, "counts": _counts, "moments": _moments}


def _three_ways(monkeypatch, aggs, rows, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("STOREY_STEP_MODULES", "eager")
        specialized = run(aggs(), rows, fields=True, **kwargs)
    with monkeypatch.context() as m:
        m.setenv("STOREY_STEP_MODULES", "off")
        generic = run(aggs(), rows, fields=True, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event = run(aggs(), rows, fields=True, **kwargs)
    rows_fn = specialized[4]._fused.run.__globals__["ROWS"]
    assert rows_fn.__module__.startswith("storey_step_")  # the lane ran on the step module
    assert generic[4]._fused.run.__globals__["ROWS"].__module__.startswith("storey_state_")
    return specialized, generic, per_event


@pytest.mark.parametrize("plan", sorted(PLANS))
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows=events())
def test_step_module_gives_the_generic_modules_bits(monkeypatch, plan, rows):
    specialized, generic, per_event = _three_ways(monkeypatch, PLANS[plan], rows, buffer_size=16)
    assert_same_runs(specialized, generic, f"{plan}: step module vs generic")
    assert_same_runs(specialized, per_event, f"{plan}: step module vs per event")


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_step_module_on_long_streams_that_grow_buffers(monkeypatch, plan):
    rows = _long_rows(3000, keys=40)
    specialized, generic, per_event = _three_ways(monkeypatch, PLANS[plan], rows)
    assert_same_runs(specialized, generic, f"{plan}: step module vs generic")
    assert_same_runs(specialized, per_event, f"{plan}: step module vs per event")


def test_auto_mode_compiles_in_the_background_then_loads_at_start(monkeypatch):
    """``auto``: a step not compiled before runs on the generic module, compiles its step module on a thread
    once it has taken `STEP_MODULES_AFTER` events and switches to it; the next flow of the same plan loads it
    at its start. Outputs stay those of the per-event path throughout."""
    monkeypatch.setenv("STOREY_STEP_MODULES", "auto")
    monkeypatch.setattr(_step_fused, "STEP_MODULES_AFTER", 500)
    rows = _long_rows(3000, keys=40)
    with monkeypatch.context() as m:
        m.setattr(_compiled_state.StepModule, "compiled_before", lambda self: False)  # as on a new machine
        first = run(_readme_aggs(), rows, fields=True)
    g = first[4]._fused.run.__globals__
    assert g["SPECIALIZE"] is None  # the compile was started
    deadline = time.monotonic() + 300
    while not g["ROWS"].__module__.startswith("storey_step_") and time.monotonic() < deadline:
        time.sleep(0.05)
    step_module = _compiled_state.StepModule(first[4].plans[0].state_class._MODULE, g["CTX"])
    assert g["ROWS"].__module__ == step_module.name
    assert step_module.compiled_before() and (cache_dir() / f"{step_module.name}.compiled").exists()
    second = run(_readme_aggs(), rows, fields=True)
    g2 = second[4]._fused.run.__globals__
    assert g2["ROWS"].__module__ == step_module.name and g2["SPECIALIZE"] is None  # loaded at the start
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event = run(_readme_aggs(), rows, fields=True)
    assert_same_runs(first, per_event, "auto, switched during the run")
    assert_same_runs(second, per_event, "auto, loaded at the start")


def test_an_unknown_mode_is_an_error(monkeypatch):
    monkeypatch.setenv("STOREY_STEP_MODULES", "fast")
    with pytest.raises(ValueError, match="STOREY_STEP_MODULES must be auto, eager or off"):
        _compiled_state.step_modules_mode()


def test_a_step_module_that_fails_to_compile_leaves_the_generic_one(monkeypatch, caplog):
    """A failing compile is logged; the lane goes on with the generic module, outputs unchanged."""
    monkeypatch.setenv("STOREY_STEP_MODULES", "auto")
    monkeypatch.setattr(_step_fused, "STEP_MODULES_AFTER", 500)
    started = []

    def broken(self):
        started.append(self.name)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_compiled_state.StepModule, "compiled_before", lambda self: False)
    monkeypatch.setattr(_compiled_state.StepModule, "compile_in_child", broken)
    rows = _long_rows(3000, keys=40)
    with caplog.at_level("ERROR", logger="storey.aggregations._step_fused"):
        lane = run(_readme_aggs(), rows, fields=True)
        deadline = time.monotonic() + 30
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
    g = lane[4]._fused.run.__globals__
    assert started and g["SPECIALIZE"] is None
    assert g["ROWS"].__module__.startswith("storey_state_")
    assert any("compiling its step module failed" in r.getMessage() for r in caplog.records)
    with monkeypatch.context() as m:
        m.setattr(_step_fused, "batch_eligible", lambda step: False)
        per_event = run(_readme_aggs(), rows, fields=True)
    assert_same_runs(lane, per_event, "auto, compile failed")
