"""The column notation shared by all writers (spec STEPS.md §8.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storey.errors import MissingFieldError
from storey.event import Event
from storey.targets._columns import Column, ColumnSelector, parse_column


@pytest.mark.parametrize(
    ("entry", "column"),
    [
        ("a", Column("a", "a", False)),
        ("out=src", Column("out", "src", False)),
        ("$key", Column("key", "key", True)),
        ("k=$key", Column("k", "key", True)),
        ("t=$time", Column("t", "time", True)),
        ("a=b=c", Column("a", "b=c", False)),
    ],
)
def test_parse_column(entry, column):
    assert parse_column(entry) == column
    assert parse_column(column.entry) == column


@pytest.mark.parametrize("entry", ["", "=a", "a=", "$", "x=$nope"])
def test_invalid_entries(entry):
    with pytest.raises(ValueError, match="column entry"):
        parse_column(entry)
    with pytest.raises(TypeError):
        parse_column(3)


def test_inference_explicit_columns_first_then_body_keys_in_body_order():
    sel = ColumnSelector(["z", "k=$key", "o=src"], infer_columns_from_data=True)
    ev = Event({"b": 1, "z": 2, "src": 3, "a": 4, "k": 5}, key="K")
    assert sel.row(ev) == [2, "K", 3, 1, 4]
    assert sel.names == [
        "z",
        "k",
        "o",
        "b",
        "a",
    ]  # 'src' is listed as a source, 'k' as a name; nothing sorted


def test_inference_is_the_default_without_columns_and_fixed_by_the_first_dict_body():
    sel = ColumnSelector()
    assert sel.row(Event([1, 2])) == [1, 2]  # a list before any dict body is written as is
    assert not sel.resolved
    assert sel.row(Event({"a": 1, "b": 2})) == [1, 2]
    assert sel.row(Event({"b": 3, "a": 4, "extra": 5})) == [4, 3]  # extra keys ignored
    with pytest.raises(MissingFieldError, match="'b'") as info:
        sel.row(Event({"a": 1}, id="ev1"))
    assert "ev1" in str(info.value)
    sel.reset()
    assert not sel.resolved


def test_missing_field_message_names_step_and_origin():
    sel = ColumnSelector(["x"], step="WriteToCSV")
    ev = Event({}, id="e1", origin=("in.csv", 7))
    with pytest.raises(MissingFieldError, match=r"'WriteToCSV'.*'x'.*e1.*in\.csv.*7"):
        sel.row(ev)


def test_list_bodies_fill_non_meta_columns_positionally():
    sel = ColumnSelector(["a", "$key", "b"], index_cols=["i"])
    assert sel.names == ["i", "a", "key", "b"]
    assert sel.row(Event([0, 1, 2], key="K")) == [0, 1, "K", 2]
    with pytest.raises(ValueError, match="length 2"):
        sel.row(Event([1, 2]))
    assert ColumnSelector(["a", "b"]).row(Event((1, 2))) == [1, 2]


def test_other_bodies():
    assert ColumnSelector().row(Event(5)) == [5]
    with pytest.raises(TypeError, match="dict or list"):
        ColumnSelector(["a"]).row(Event(5))


def test_time_as_ns_and_event_attributes():
    ev = Event({"v": 1}, key="k", time=1000, id="i1")
    assert ColumnSelector(["$time", "$id"], time_as_ns=True).row(ev) == [10**9, "i1"]
    assert ColumnSelector(["$time"]).row(ev) == [ev.time]


def test_as_dict():
    ev = Event({"a": 1, "b": 2}, key="k")
    assert ColumnSelector(["key=$key", "a"]).as_dict(ev) == {"key": "k", "a": 1}
    assert ColumnSelector(infer_columns_from_data=False).as_dict(ev) == {"a": 1, "b": 2}
    with pytest.raises(TypeError, match="not a dict"):
        ColumnSelector().as_dict(Event([1]))


def test_duplicate_output_names_raise():
    with pytest.raises(ValueError, match="twice"):
        ColumnSelector(["a", "a=$key"])


@given(
    keys=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6, unique=True),
    explicit=st.lists(st.text(min_size=1, max_size=3), max_size=3, unique=True),
)
def test_inferred_columns_oracle(keys, explicit):
    explicit = [e for e in explicit if "=" not in e and not e.startswith("$")]
    body = {k: i for i, k in enumerate(keys)}
    sel = ColumnSelector(explicit, infer_columns_from_data=True)
    expected = explicit + [k for k in keys if k not in explicit]
    if any(e not in body for e in explicit):
        with pytest.raises(MissingFieldError):
            sel.row(Event(body))
        return
    assert sel.row(Event(body)) == [body[k] for k in expected]
    assert sel.names == expected
