"""The emulator's V3IO expression language: the expressions storey emits, the documented examples, and
property tests against Python arithmetic."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.testing._v3io_expr import ExprError, apply_update, eval_condition, parse_update
from storey.testing._v3io_model import TS, KvArray


def arr(typecode: str, values: list) -> bytes:
    return KvArray(typecode, values).encode()


def values_of(blob: bytes) -> list:
    decoded = KvArray.decode(blob)
    assert decoded is not None
    return decoded.values


def b64_array(values: list[float]) -> str:
    # What storey 1.14.1 sends inside blob('...'): the SDK's kv_array of doubles.
    raw = struct.pack("<IIII", 11223344, 1, 8 * len(values), 261) + struct.pack(f"<{len(values)}d", *values)
    return base64.b64encode(raw).decode()


# ------------------------------------------------------------------------------- storey's own traffic
def test_batched_flush_expression_from_storey_1_14() -> None:
    # Captured shape (ECOSYSTEM.md §1.6): init_array, psum/pmax/pmin over slices with blob operands,
    # TS literals and plain assignments, in one statement list.
    sums, maxes = [1.0, 2.0, 3.0, 4.0], [5.0, -1.0, 7.5, 0.0]
    expr = (
        "aggr_sum_a=init_array(6,'double',0.0);aggr_max_a=init_array(6,'double',-inf);"
        f"aggr_sum_a[2..5]=psum(aggr_sum_a[2..5], blob('{b64_array(sums)}'));"
        f"aggr_max_a[2..5]=pmax(aggr_max_a[2..5], blob('{b64_array(maxes)}'));"
        "_amount_a=1704067200:0;amount_sum_1h=6.0;name='xy';t=1704071700:0"
    )
    out = apply_update(expr, {}, {})
    assert values_of(out["aggr_sum_a"]) == [0.0, 0.0, *sums]
    assert values_of(out["aggr_max_a"]) == [-math.inf, -math.inf, *maxes]
    assert out["_amount_a"] == TS(1704067200, 0)
    assert out["amount_sum_1h"] == 6.0
    assert isinstance(out["amount_sum_1h"], float)
    assert out["name"] == "xy"
    assert out["t"] == TS(1704071700, 0)
    # and again on top: psum accumulates, pmin keeps the smaller elements
    again = apply_update(
        f"aggr_sum_a[2..5]=psum(aggr_sum_a[2..5], blob('{b64_array(sums)}'));"
        f"aggr_max_a[2..5]=pmin(aggr_max_a[2..5], blob('{b64_array([0.0] * 4)}'))",
        out,
        {},
    )
    assert values_of(again["aggr_sum_a"])[2:] == [2 * v for v in sums]
    assert values_of(again["aggr_max_a"])[2:] == [min(v, 0.0) for v in maxes]


def test_per_event_and_conditioned_forms_from_storey() -> None:
    attrs = {"aggr_a": arr("d", [0.0] * 6), "mx_a": arr("d", [1.0] * 6)}
    out = apply_update(
        "aggr_a[2]=aggr_a[2]+1.0;mx_a[2]=max(mx_a[2], 4.0);mx_a[3]=min(mx_a[3], 0.5)", attrs, {}
    )
    assert values_of(out["aggr_a"]) == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert values_of(out["mx_a"]) == [1.0, 1.0, 4.0, 0.5, 1.0, 1.0]
    # conditioned form: a newer base time re-initialises, an older one keeps the array
    cond = (
        "aggr_a=if_else((if_not_exists(_t_a,0:0)<1704067200:0),init_array(6,'double',0.0),aggr_a);"
        "aggr_a[2]=if_else((if_not_exists(_t_a,0:0)>1704067200:0),aggr_a[2],aggr_a[2]+1.0);"
        "_t_a=1704067200:0"
    )
    first = apply_update(cond, out, {})  # no _t_a yet: 0:0 < base, so re-initialised, then +1
    assert values_of(first["aggr_a"]) == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    second = apply_update(cond, first, {})  # same base time: kept, then +1
    assert values_of(second["aggr_a"])[2] == 2.0
    newer = {**second, "_t_a": TS(1704067300, 0)}
    third = apply_update(cond, newer, {})  # the stored base is newer: the element is left alone
    assert values_of(third["aggr_a"])[2] == 2.0


def test_storey_literal_spellings() -> None:
    # Upstream storey writes booleans with str(): True/False; keywords are case-insensitive.
    out = apply_update("SET a=True; set b=FALSE; c=`and`; REMOVE d", {"and": 1, "d": 2}, {})
    assert out == {"and": 1, "a": True, "b": False, "c": 1}
    assert apply_update('s="it\'s"', {}, {}) == {"s": "it's"}
    assert apply_update("x=1e-05; y=-inf; z=nan", {}, {})["x"] == 1e-05
    assert math.isnan(apply_update("z=nan", {}, {})["z"])


# ----------------------------------------------------------------------------- documented examples
def test_documented_update_examples() -> None:
    assert apply_update("produce=20000; dairy=15000; sum = produce + dairy", {}, {})["sum"] == 35000
    assert apply_update("temp=b; b=a; a=temp; REMOVE temp", {"a": 1, "b": 2}, {}) == {"a": 2, "b": 1}
    assert apply_update("SET ctr = if_not_exists(ctr,0) + 1;", {}, {}) == {"ctr": 1}
    assert apply_update("SET ctr = if_not_exists(ctr,0) + 1;", {"ctr": 41}, {}) == {"ctr": 42}
    assert values_of(apply_update("SET counters = init_array(5, 'int')", {}, {})["counters"]) == [0] * 5
    fib = apply_update(
        "arrSmallFibonacci = init_array(5, 'int'); arrSmallFibonacci[1]=1; "
        "arrSmallFibonacci[2] = arrSmallFibonacci[0] + arrSmallFibonacci[1]; "
        "arrSmallFibonacci[3] = arrSmallFibonacci[1] + arrSmallFibonacci[2]; "
        "arrSmallFibonacci[4] = arrSmallFibonacci[2] + arrSmallFibonacci[3];",
        {},
        {},
    )
    assert values_of(fib["arrSmallFibonacci"]) == [0, 1, 1, 2, 3]
    out = apply_update(
        "arr[2]=-1; arr[0]=6; arr[1]=7; arr[3]=arr[0]+arr[2]*arr[1]", {"arr": arr("l", [0] * 4)}, {}
    )
    assert values_of(out["arr"]) == [6, 7, -1, 6 + (-1) * 7]
    small = apply_update("smallArray = myArray[0..4]", {"myArray": arr("l", list(range(10)))}, {})
    assert values_of(small["smallArray"]) == [0, 1, 2, 3, 4]


def test_documented_min_max_semantics() -> None:
    def value(expr: str, attrs: dict | None = None) -> object:
        return apply_update(f"r = {expr}", attrs or {}, {})["r"]

    assert value("max(1.0, 9)") == 9.0
    assert isinstance(value("max(1.0, 9)"), float)
    assert value("min(1, 9.0)") == 1.0
    assert isinstance(value("min(1, 9.0)"), float)
    assert value("max(1==1, 1==2)") is True
    assert value("max(1==1, 3)") == 3
    assert value("min(1==1, 0)") == 0
    assert value("min(1==2, 1)") is False
    my = {"myArray": arr("l", [7, 13, 5, 1])}
    assert value("max(myArray)", my) == 13
    assert value("max(myArray[2..3])", my) == 5
    assert value("min(myArray[1..2])", my) == 5
    assert value("length(myArray[2..3])", my) == 2
    assert value("length('abc' + 'efg')") == 6
    assert value("(a==5)*4 + b", {"a": 5, "b": False}) == 4


def test_conditions_follow_the_documented_rules() -> None:
    item = {"age": 40, "firstName": "John", "State": "NY", "b": False, "arr": arr("l", [1, 7, 3])}
    assert eval_condition("(age == 40) and (firstName == 'John') and NOT(State IN ('AZ','MA'))", item, {})
    assert eval_condition("arr[0]==7 OR arr[1]==7", item, {})
    assert eval_condition(
        "starts(firstName, 'Jo') and ends(firstName, 'hn') and contains(firstName, 'oh')", item, {}
    )
    assert eval_condition("", item, {})  # an empty condition is true
    assert eval_condition("   ", item, {})
    # a missing attribute makes its comparison false; NOT of it is true
    assert not eval_condition("missing == 1", item, {})
    assert not eval_condition("missing != 1", item, {})
    assert eval_condition("not (missing == 1)", item, {})
    # comparing different types is false, both ways
    assert not eval_condition("age == true", item, {})
    assert not eval_condition("b == 0", item, {})
    assert not eval_condition("age != 'x'", item, {})
    # system attributes are visible to conditions (the transaction verifier)
    system = {"__mtime_secs": 10, "__mtime_nsecs": 5}
    assert eval_condition("__mtime_secs==10 and __mtime_nsecs==5", item, system)
    assert not eval_condition("__mtime_secs==10 and __mtime_nsecs==6", item, system)
    # precedence: and binds tighter than or; arithmetic tighter than comparison
    assert eval_condition("age == 1 or age == 40 and firstName == 'John'", item, {})
    assert eval_condition("age + 2 * 5 == 50", item, {})


@pytest.mark.parametrize(
    "expr",
    [
        "a = ",
        "a == 1",  # a condition is not an update statement
        "a = 1 +",
        "a = (1",
        "a = 'unterminated",
        "a = nosuchfn(1)",
        "a = 99999999999999999999",  # does not fit in 64 bits
        "a[0..] = 1",
        "= 5",
        "a = 1 $ 2",
    ],
)
def test_malformed_update_expressions_are_errors(expr: str) -> None:
    with pytest.raises(ExprError):
        apply_update(expr, {"a": 1}, {})


@pytest.mark.parametrize(
    ("expr", "attrs"),
    [
        ("a = missing + 1", {}),
        ("a[0] = 1", {}),
        ("a[5] = 1", {"a": arr("l", [0, 0])}),
        ("a[0..1] = init_array(3, 'int')", {"a": arr("l", [0, 0])}),
        ("a = x / 0", {"x": 1}),
        ("a = s[0]", {"s": "text"}),
        ("__mtime_secs = 1", {}),
        ("a = init_array(2, 'float')", {}),
        ("a = blob('***')", {}),
    ],
)
def test_failing_updates_raise_and_change_nothing(expr: str, attrs: dict) -> None:
    before = dict(attrs)
    with pytest.raises(ExprError):
        apply_update(expr, attrs, {})
    assert attrs == before


def test_statements_run_in_order_and_atomically() -> None:
    attrs = {"a": 1}
    with pytest.raises(ExprError):
        apply_update("a = 2; b = missing", attrs, {})
    assert attrs == {"a": 1}
    assert parse_update("SET a=1;;SET b=2;") == parse_update("a=1; b=2")


def test_integer_semantics_are_c_like() -> None:
    def value(expr: str) -> object:
        return apply_update(f"r = {expr}", {}, {})["r"]

    assert value("7 / 2") == 3
    assert value("-7 / 2") == -3  # truncation toward zero
    assert value("-7 % 3") == -1
    assert value("7.0 / 2") == 3.5
    assert value("1.0 / 0") == math.inf
    assert value("9223372036854775807 + 1") == -(2**63)  # 64-bit wrap-around
    assert value("6 & 3") == 2
    assert value("6 | 3") == 7
    assert value("6 ^ 3") == 5
    assert value("1 << 4") == 16
    assert value("~0") == -1


# ------------------------------------------------------------------------------------ properties
def _expr_tree(leaves: st.SearchStrategy) -> st.SearchStrategy:
    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_expr_tree(st.integers(-1000, 1000).map(str)))
def test_integer_arithmetic_matches_python(expr: str) -> None:
    expected = eval(expr)  # the oracle: the same tree in Python (small ints, no overflow)
    got = apply_update(f"r = {expr}", {}, {})["r"]
    assert got == expected
    assert type(got) is int


@settings(max_examples=150, deadline=None)
@given(_expr_tree(st.floats(-1e6, 1e6, allow_nan=False).map(repr)))
def test_float_arithmetic_matches_python_bit_for_bit(expr: str) -> None:
    expected = eval(expr)
    got = apply_update(f"r = {expr}", {}, {})["r"]
    assert struct.pack("<d", float(got)) == struct.pack("<d", float(expected))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=8),
    st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=8),
)
def test_parallel_functions_are_element_wise(xs: list[float], ys: list[float]) -> None:
    n = min(len(xs), len(ys))
    xs, ys = xs[:n], ys[:n]
    attrs = {"a": arr("d", xs)}
    blob = b64_array(ys)
    for fn, oracle in (("psum", lambda p, q: p + q), ("pmax", max), ("pmin", min)):
        out = apply_update(f"a = {fn}(a, blob('{blob}'))", attrs, {})
        expected = [oracle(p, q) for p, q in zip(xs, ys, strict=True)]
        got = values_of(out["a"])
        assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", float(v)) for v in expected]


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_comparisons_match_python(a: int, b: int) -> None:
    item = {"a": a, "b": b}
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert eval_condition(f"a {op} b", item, {}) == eval(f"{a} {op} {b}")
