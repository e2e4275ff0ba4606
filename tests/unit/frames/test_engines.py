"""The compiled engine == the pure-Python reference engine (real `KeyState` + `Emitter`), bit for bit.

The reference drives the streaming state machine itself; the compiled engine is generated from the same
kernel templates. Both must give identical rows, types, nulls and metrics, for every policy, across batch
boundaries (state, pending emissions and carried rows), and when starting from states stored in a Table.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storey.frames._compiled import compiled_available
from storey.frames.aggregate import _aggregate, _build_state
from tests.unit.frames._streams import aggregator_sets, assert_tables_equal, events, policies

pytest.importorskip("numba", reason="the compiled engine is optional (storey[fast])")

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(data, aggs, implementation, **kw):
    return _aggregate(data, aggs, key=kw.pop("key", "k"), time_field="t", implementation=implementation, **kw)


@SETTINGS
@given(
    events(max_rows=200, keys=5),
    aggregator_sets(),
    policies(),
    st.sampled_from(["k", ["k", "k2"]]),
    st.integers(1, 97),
)
def test_compiled_equals_reference(table, aggs, policy, key, batch_size):
    ref = _run(table, aggs, "reference", key=key, emit_policy=policy, batch_size=batch_size)
    out = _run(table, aggs, "compiled", key=key, emit_policy=policy, batch_size=batch_size)
    assert_tables_equal(ref, out)
    assert json.loads(ref.schema.metadata[b"storey.metrics"]) == json.loads(
        out.schema.metadata[b"storey.metrics"]
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(max_rows=120, keys=4), aggregator_sets(), policies(), st.integers(1, 119))
def test_compiled_equals_reference_from_stored_state(table, aggs, policy, cut):
    """Part of the events builds the Table state; the rest continues from it in both engines."""
    from storey import NoopDriver, Table

    cut = min(cut, table.num_rows)
    head, tail = table.slice(0, cut), table.slice(cut)
    outs = []
    for implementation in ("reference", "compiled"):
        store = Table("t", NoopDriver())
        _build_state(head, aggs, store, key="k", time_field="t", implementation=implementation)
        fresh = Table("t", store.storage)  # a new Table over the same driver: states are loaded from blobs
        outs.append(_run(tail, aggs, implementation, emit_policy=policy, table=fresh, batch_size=16))
    assert_tables_equal(*outs)


def test_compiled_engine_is_used_when_possible():
    from storey import FieldAggregator, FieldEquals, SlidingWindows
    from storey.frames._layout import StepLayout, as_policy

    w = SlidingWindows(["1h"], "10m")
    ok = [FieldAggregator("a", "x", ["sum"], w, aggr_filter=FieldEquals("s", "ok"))]
    slow = [FieldAggregator("a", lambda b: b["x"], ["sum"], w)]
    assert compiled_available(StepLayout(ok, None, as_policy(None, "t")))
    assert not compiled_available(StepLayout(slow, None, as_policy(None, "t")))
