"""V3IO update, condition and filter expressions for the emulator.

Grammar (keywords and function names are case-insensitive; see the Iguazio expression reference):

- update expression: statements separated by ``;`` (a trailing ``;`` and empty statements are allowed):
  ``[SET] target = expr``, ``REMOVE name`` or ``delete(name)``. A target is ``name``, ``name[i]`` or
  the slice ``name[i..j]`` (both ends included). Statements run in order and see earlier results; the
  whole expression is applied atomically or not at all.
- condition / filter expression: one boolean expression; an empty one is true.
- expressions: literals (``42``, ``2.5``, ``1e3``, ``inf``, ``nan``, ``'str'``, ``"str"``, ``true``,
  ``false``, and timestamps ``secs:nsecs``), attribute names (`` `quoted` `` for reserved words), ``( )``,
  indexing and slices, unary ``- + ~ not``, ``* / %``, ``+ -``, ``<< >>``, ``&``, ``^``, ``|``,
  comparisons ``== != < <= > >=`` and ``IN (a, b, ...)``, ``and``, ``or``.
- functions: ``if_else(c, a, b)``, ``if_not_exists(attr, default)``, ``exists(attr)``,
  ``init_array(n, 'int'|'double'[, default])``, ``min``/``max`` (two values, or one array/slice),
  ``pmin``/``pmax``/``psum(array, array)`` (element-wise), ``blob('<base64>')``, ``length(s|array)``,
  ``starts``/``ends``/``contains(s1, s2)``.

Semantics (documented by Iguazio unless marked *assumed*):

- A reference to an attribute the item does not have makes a comparison false (so ``not`` of it is
  true). In an update, assigning a value that depends on a missing attribute fails the request.
- Comparing values of different types is false (both ``==`` and ``!=``); booleans count as 1/0 in
  arithmetic but not in comparisons with numbers.
- ``min``/``max`` of mixed int/double return a double.
- *Assumed*: int arithmetic wraps at 64 bits, ``/`` and ``%`` of two ints truncate toward zero (C), double
  division by zero gives ±inf/nan; string ``+`` concatenates (documented for ``length``); strings have no
  escape sequences.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable
from typing import Any

from storey.testing._v3io_model import TS, KvArray

__all__ = ["ExprError", "apply_update", "eval_condition", "parse_condition", "parse_update"]


class ExprError(Exception):
    """A malformed expression, or one that cannot be evaluated against the item."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_I64 = 2**63

# ------------------------------------------------------------------------------------------ tokenizer
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<ts>\d+:\d+)
  | (?P<num>(?:\d+\.(?!\.)\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<qname>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<>|<=|>=|<<|>>|\.\.|[-+*/%<>=()\[\],;&|^~!])
    """,
    re.VERBOSE,
)

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "set", "remove", "inf", "nan"}


class _Tok:
    __slots__ = ("kind", "pos", "value")

    def __init__(self, kind: str, value: Any, pos: int) -> None:
        self.kind = kind
        self.value = value
        self.pos = pos

    def __repr__(self) -> str:
        return f"{self.kind}:{self.value!r}"


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            msg = f"unexpected character {text[pos]!r} at position {pos}"
            raise ExprError(msg)
        kind = m.lastgroup
        raw = m.group()
        if kind == "ts":
            secs, nsecs = raw.split(":")
            toks.append(_Tok("lit", TS(int(secs), int(nsecs)), pos))
        elif kind == "num":
            toks.append(_Tok("lit", _number(raw), pos))
        elif kind == "str":
            toks.append(_Tok("lit", raw[1:-1], pos))
        elif kind == "qname":
            toks.append(_Tok("name", raw[1:-1], pos))
        elif kind == "name":
            low = raw.lower()
            toks.append(_Tok("kw", low, pos) if low in _KEYWORDS else _Tok("name", raw, pos))
        elif kind == "op":
            toks.append(_Tok("op", "!=" if raw == "<>" else raw, pos))
        pos = m.end()
    toks.append(_Tok("end", None, len(text)))
    return toks


def _number(raw: str) -> int | float:
    if any(c in raw for c in ".eE"):
        return float(raw)
    value = int(raw)
    if value >= _I64:
        msg = f"integer literal {raw} does not fit in 64 bits"
        raise ExprError(msg)
    return value


# --------------------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    # helpers
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any = None) -> bool:
        tok = self.toks[self.i]
        return tok.kind == kind and (value is None or tok.value == value)

    def accept(self, kind: str, value: Any = None) -> bool:
        if self.at(kind, value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> _Tok:
        if not self.at(kind, value):
            tok = self.peek()
            want = value if value is not None else kind
            got = "the end" if tok.kind == "end" else repr(tok.value)
            msg = f"expected {want!r} at position {tok.pos}, got {got}"
            raise ExprError(msg)
        return self.next()

    # statements
    def update(self) -> list[tuple]:
        stmts: list[tuple] = []
        while not self.at("end"):
            if self.accept("op", ";"):
                continue
            stmts.append(self.statement())
            if not self.at("end"):
                self.expect("op", ";")
        return stmts

    def statement(self) -> tuple:
        if self.accept("kw", "remove"):
            return ("remove", self.expect("name").value)
        if self.at("name") and self.peek().value.lower() == "delete" and self.toks[self.i + 1].value == "(":
            self.i += 2
            name = self.expect("name").value
            self.expect("op", ")")
            return ("remove", name)
        self.accept("kw", "set")
        target = self.target()
        self.expect("op", "=")
        return ("set", target, self.expr())

    def target(self) -> tuple:
        name = self.expect("name").value
        if not self.accept("op", "["):
            return ("attr", name)
        lo = self.expr()
        if self.accept("op", ".."):
            hi = self.expr()
            self.expect("op", "]")
            return ("slice", ("attr", name), lo, hi)
        self.expect("op", "]")
        return ("index", ("attr", name), lo)

    def condition(self) -> tuple | None:
        if self.at("end"):
            return None
        node = self.expr()
        self.expect("end")
        return node

    # expressions, lowest precedence first
    def expr(self) -> tuple:
        return self.or_()

    def or_(self) -> tuple:
        node = self.and_()
        while self.accept("kw", "or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.not_()
        while self.accept("kw", "and"):
            node = ("and", node, self.not_())
        return node

    def not_(self) -> tuple:
        if self.accept("kw", "not") or self.accept("op", "!"):
            return ("not", self.not_())
        return self.comparison()

    def comparison(self) -> tuple:
        node = self.bitor()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
                self.next()
                node = ("cmp", tok.value, node, self.bitor())
            elif tok.kind == "kw" and tok.value == "in":
                self.next()
                self.expect("op", "(")
                items = [self.expr()]
                while self.accept("op", ","):
                    items.append(self.expr())
                self.expect("op", ")")
                node = ("in", node, items)
            else:
                return node

    def _binary(self, ops: tuple[str, ...], operand: Callable[[], tuple]) -> tuple:
        node = operand()
        while self.peek().kind == "op" and self.peek().value in ops:
            op = self.next().value
            node = ("bin", op, node, operand())
        return node

    def bitor(self) -> tuple:
        return self._binary(("|",), self.bitxor)

    def bitxor(self) -> tuple:
        return self._binary(("^",), self.bitand)

    def bitand(self) -> tuple:
        return self._binary(("&",), self.shift)

    def shift(self) -> tuple:
        return self._binary(("<<", ">>"), self.additive)

    def additive(self) -> tuple:
        return self._binary(("+", "-"), self.multiplicative)

    def multiplicative(self) -> tuple:
        return self._binary(("*", "/", "%"), self.unary)

    def unary(self) -> tuple:
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("-", "+", "~"):
            self.next()
            return ("unary", tok.value, self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.primary()
        while self.accept("op", "["):
            lo = self.expr()
            if self.accept("op", ".."):
                hi = self.expr()
                self.expect("op", "]")
                node = ("slice", node, lo, hi)
            else:
                self.expect("op", "]")
                node = ("index", node, lo)
        return node

    def primary(self) -> tuple:
        tok = self.next()
        if tok.kind == "lit":
            return ("lit", tok.value)
        if tok.kind == "kw":
            literal = {"true": True, "false": False, "inf": math.inf, "nan": math.nan}
            if tok.value in literal:
                return ("lit", literal[tok.value])
        if tok.kind == "op" and tok.value == "(":
            node = self.expr()
            self.expect("op", ")")
            return node
        if tok.kind == "name":
            if self.accept("op", "("):
                args: list[tuple] = []
                if not self.accept("op", ")"):
                    args.append(self.expr())
                    while self.accept("op", ","):
                        args.append(self.expr())
                    self.expect("op", ")")
                return ("call", tok.value.lower(), args)
            return ("attr", tok.value)
        got = "the end" if tok.kind == "end" else repr(tok.value)
        msg = f"unexpected {got} at position {tok.pos}"
        raise ExprError(msg)


@functools.lru_cache(maxsize=512)
def parse_update(text: str) -> tuple[tuple, ...]:
    """Parse an update expression into statements."""
    return tuple(_Parser(text).update())


@functools.lru_cache(maxsize=512)
def parse_condition(text: str) -> tuple | None:
    """Parse a condition/filter expression (``None`` for an empty one, which is true)."""
    return _Parser(text).condition()


# ------------------------------------------------------------------------------------------ evaluator
def _wrap(v: int) -> int:
    return ((v + _I64) % (2 * _I64)) - _I64


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _arith_operand(v: Any, op: str) -> int | float:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return v
    msg = f"operator {op!r} needs numbers, got {type(v).__name__}"
    raise ExprError(msg)


def _int_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _float_div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _binop(op: str, a: Any, b: Any) -> Any:
    if a is MISSING or b is MISSING:
        return MISSING
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    x, y = _arith_operand(a, op), _arith_operand(b, op)
    both_int = isinstance(x, int) and isinstance(y, int)
    if op in ("&", "|", "^", "<<", ">>"):
        if not both_int:
            msg = f"operator {op!r} needs integers"
            raise ExprError(msg)
        if op == "<<":
            return _wrap(x << (y % 64))
        if op == ">>":
            return x >> (y % 64)
        return _wrap({"&": x & y, "|": x | y, "^": x ^ y}[op])
    if op == "/":
        if both_int:
            if y == 0:
                msg = "integer division by zero"
                raise ExprError(msg)
            return _wrap(_int_div(x, y))
        return _float_div(float(x), float(y))
    if op == "%":
        if both_int:
            if y == 0:
                msg = "integer modulo by zero"
                raise ExprError(msg)
            return _wrap(x - y * _int_div(x, y))
        return math.fmod(x, y) if y != 0 else math.nan
    result = {"+": x + y, "-": x - y, "*": x * y}[op] if both_int else _float_op(op, float(x), float(y))
    return _wrap(result) if both_int else result


def _float_op(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    try:
        return x * y
    except OverflowError:  # pragma: no cover - float multiplication does not raise in CPython
        return math.inf


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if _is_num(a) and _is_num(b):
        return True
    for kind in (str, TS, bytes):
        if isinstance(a, kind) and isinstance(b, kind):
            return True
    return False


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING or not _comparable(a, b):
        return False
    if isinstance(a, KvArray):  # pragma: no cover - arrays are compared as blobs
        a, b = a.values, b.values
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _truth(v: Any) -> bool:
    if v is MISSING:
        return False
    if isinstance(v, bool):
        return v
    if _is_num(v):
        return v != 0
    msg = f"expected a boolean, got {type(v).__name__}"
    raise ExprError(msg)


def _as_array(v: Any, what: str) -> KvArray:
    if isinstance(v, KvArray):
        return v
    if isinstance(v, bytes | bytearray):
        arr = KvArray.decode(bytes(v))
        if arr is not None:
            return arr
    msg = f"{what} needs an array, got {type(v).__name__}"
    raise ExprError(msg)


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        msg = f"{what} must be an integer, got {v!r}"
        raise ExprError(msg)
    return int(v)


def _minmax(pick_max: bool, a: Any, b: Any) -> Any:
    if a is MISSING or b is MISSING:
        return MISSING
    if isinstance(a, str) and isinstance(b, str):
        return max(a, b) if pick_max else min(a, b)
    x, y = _arith_operand(a, "max" if pick_max else "min"), _arith_operand(b, "max" if pick_max else "min")
    if math.isnan(x) or math.isnan(y):
        return math.nan
    first = (x >= y) if pick_max else (x <= y)
    winner, loser = (a, b) if first else (b, a)
    # Numeric promotion: a double among the operands makes the result a double (booleans keep their type).
    if isinstance(winner, int) and not isinstance(winner, bool) and isinstance(loser, float):
        return float(winner)
    return winner


class _Scope:
    """The item an expression is evaluated against: user attributes plus system attributes."""

    def __init__(self, attrs: dict[str, Any], system: dict[str, Any]) -> None:
        self.attrs = attrs
        self.system = system
        self.missing: list[str] = []

    def lookup(self, name: str) -> Any:
        if name in self.attrs:
            return self.attrs[name]
        if name in self.system:
            return self.system[name]
        self.missing.append(name)
        return MISSING

    def exists(self, name: str) -> bool:
        return name in self.attrs or name in self.system


def _eval(node: tuple, scope: _Scope) -> Any:
    return _EVAL[node[0]](node, scope)


def _ev_lit(node: tuple, scope: _Scope) -> Any:
    return node[1]


def _ev_attr(node: tuple, scope: _Scope) -> Any:
    return scope.lookup(node[1])


def _ev_index(node: tuple, scope: _Scope) -> Any:
    base = _eval(node[1], scope)
    idx = _eval(node[2], scope)
    if base is MISSING or idx is MISSING:
        return MISSING
    arr = _as_array(base, "indexing")
    i = _as_int(idx, "an array index")
    if not 0 <= i < len(arr):
        msg = f"array index {i} is out of range (length {len(arr)})"
        raise ExprError(msg)
    return arr.values[i]


def _slice_bounds(arr: KvArray, lo: Any, hi: Any) -> tuple[int, int]:
    i, j = _as_int(lo, "a slice start"), _as_int(hi, "a slice end")
    if not 0 <= i <= j < len(arr):
        msg = f"array slice [{i}..{j}] is out of range (length {len(arr)})"
        raise ExprError(msg)
    return i, j


def _ev_slice(node: tuple, scope: _Scope) -> Any:
    base = _eval(node[1], scope)
    lo, hi = _eval(node[2], scope), _eval(node[3], scope)
    if base is MISSING or lo is MISSING or hi is MISSING:
        return MISSING
    arr = _as_array(base, "slicing")
    i, j = _slice_bounds(arr, lo, hi)
    return KvArray(arr.typecode, arr.values[i : j + 1])


def _ev_unary(node: tuple, scope: _Scope) -> Any:
    v = _eval(node[2], scope)
    if v is MISSING:
        return MISSING
    op = node[1]
    x = _arith_operand(v, op)
    if op == "-":
        return _wrap(-x) if isinstance(x, int) else -x
    if op == "+":
        return x
    if not isinstance(x, int):
        msg = "operator '~' needs an integer"
        raise ExprError(msg)
    return ~x


def _ev_bin(node: tuple, scope: _Scope) -> Any:
    return _binop(node[1], _eval(node[2], scope), _eval(node[3], scope))


def _ev_cmp(node: tuple, scope: _Scope) -> Any:
    return _compare(node[1], _eval(node[2], scope), _eval(node[3], scope))


def _ev_in(node: tuple, scope: _Scope) -> Any:
    v = _eval(node[1], scope)
    return any(_compare("==", v, _eval(item, scope)) for item in node[2])


def _ev_and(node: tuple, scope: _Scope) -> Any:
    return _truth(_eval(node[1], scope)) and _truth(_eval(node[2], scope))


def _ev_or(node: tuple, scope: _Scope) -> Any:
    return _truth(_eval(node[1], scope)) or _truth(_eval(node[2], scope))


def _ev_not(node: tuple, scope: _Scope) -> Any:
    return not _truth(_eval(node[1], scope))


def _ev_call(node: tuple, scope: _Scope) -> Any:
    name, args = node[1], node[2]
    fn = _FUNCTIONS.get(name)
    if fn is None:
        msg = f"unknown function {name!r}"
        raise ExprError(msg)
    return fn(args, scope)


def _nargs(args: list, lo: int, hi: int, name: str) -> None:
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        msg = f"{name}() takes {want} arguments, got {len(args)}"
        raise ExprError(msg)


def _attr_name(node: tuple, fname: str) -> str:
    if node[0] != "attr":
        msg = f"{fname}() needs an attribute name"
        raise ExprError(msg)
    return node[1]


def _fn_if_else(args: list, scope: _Scope) -> Any:
    _nargs(args, 3, 3, "if_else")
    return _eval(args[1] if _truth(_eval(args[0], scope)) else args[2], scope)


def _fn_if_not_exists(args: list, scope: _Scope) -> Any:
    _nargs(args, 2, 2, "if_not_exists")
    if args[0][0] == "attr":
        name = args[0][1]
        return scope.lookup(name) if scope.exists(name) else _eval(args[1], scope)
    value = _eval(args[0], scope)
    return _eval(args[1], scope) if value is MISSING else value


def _fn_exists(args: list, scope: _Scope) -> Any:
    _nargs(args, 1, 1, "exists")
    return scope.exists(_attr_name(args[0], "exists"))


def _fn_init_array(args: list, scope: _Scope) -> Any:
    _nargs(args, 2, 3, "init_array")
    n = _as_int(_eval(args[0], scope), "init_array() size")
    kind = _eval(args[1], scope)
    if kind not in ("int", "double") or n < 0:
        msg = f"init_array() needs a size >= 0 and 'int' or 'double', got {n!r}, {kind!r}"
        raise ExprError(msg)
    default = _eval(args[2], scope) if len(args) == 3 else 0
    if default is MISSING:
        return MISSING
    arr = KvArray("l" if kind == "int" else "d", [])
    try:
        arr.values = [arr.cast(default)] * n
    except (TypeError, ValueError) as exc:
        msg_0 = f"init_array() default: {exc}"
        raise ExprError(msg_0) from exc
    return arr


def _fn_min_max(pick_max: bool) -> Callable[[list, _Scope], Any]:
    name = "max" if pick_max else "min"

    def fn(args: list, scope: _Scope) -> Any:
        _nargs(args, 1, 2, name)
        if len(args) == 1:
            v = _eval(args[0], scope)
            if v is MISSING:
                return MISSING
            arr = _as_array(v, f"{name}() of one argument")
            if not arr.values:
                msg = f"{name}() of an empty array"
                raise ExprError(msg)
            return max(arr.values) if pick_max else min(arr.values)
        return _minmax(pick_max, _eval(args[0], scope), _eval(args[1], scope))

    return fn


def _fn_parallel(op: str) -> Callable[[list, _Scope], Any]:
    def combine(x: Any, y: Any) -> Any:
        if op == "psum":
            return _binop("+", x, y)
        return _minmax(op == "pmax", x, y)

    def fn(args: list, scope: _Scope) -> Any:
        _nargs(args, 2, 2, op)
        a, b = _eval(args[0], scope), _eval(args[1], scope)
        if a is MISSING or b is MISSING:
            return MISSING
        x, y = _as_array(a, f"{op}()"), _as_array(b, f"{op}()")
        if len(x) != len(y):
            msg = f"{op}() needs arrays of equal length, got {len(x)} and {len(y)}"
            raise ExprError(msg)
        typecode = "d" if "d" in (x.typecode, y.typecode) else "l"
        return KvArray(typecode, [combine(p, q) for p, q in zip(x.values, y.values, strict=True)])

    return fn


def _fn_blob(args: list, scope: _Scope) -> Any:
    _nargs(args, 1, 1, "blob")
    text = _eval(args[0], scope)
    if not isinstance(text, str):
        msg = "blob() needs a base64 string"
        raise ExprError(msg)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        msg_0 = f"blob(): invalid base64: {exc}"
        raise ExprError(msg_0) from exc


def _fn_length(args: list, scope: _Scope) -> Any:
    _nargs(args, 1, 1, "length")
    v = _eval(args[0], scope)
    if v is MISSING:
        return MISSING
    if isinstance(v, str):
        return len(v)
    return len(_as_array(v, "length()"))


def _fn_string(test: Callable[[str, str], bool], name: str) -> Callable[[list, _Scope], Any]:
    def fn(args: list, scope: _Scope) -> Any:
        _nargs(args, 2, 2, name)
        a, b = _eval(args[0], scope), _eval(args[1], scope)
        return isinstance(a, str) and isinstance(b, str) and test(a, b)

    return fn


_FUNCTIONS: dict[str, Callable[[list, _Scope], Any]] = {
    "if_else": _fn_if_else,
    "if_not_exists": _fn_if_not_exists,
    "exists": _fn_exists,
    "init_array": _fn_init_array,
    "min": _fn_min_max(False),
    "max": _fn_min_max(True),
    "pmin": _fn_parallel("pmin"),
    "pmax": _fn_parallel("pmax"),
    "psum": _fn_parallel("psum"),
    "blob": _fn_blob,
    "length": _fn_length,
    "starts": _fn_string(str.startswith, "starts"),
    "ends": _fn_string(str.endswith, "ends"),
    "contains": _fn_string(lambda a, b: b in a, "contains"),
}

_EVAL: dict[str, Callable[[tuple, _Scope], Any]] = {
    "lit": _ev_lit,
    "attr": _ev_attr,
    "index": _ev_index,
    "slice": _ev_slice,
    "unary": _ev_unary,
    "bin": _ev_bin,
    "cmp": _ev_cmp,
    "in": _ev_in,
    "and": _ev_and,
    "or": _ev_or,
    "not": _ev_not,
    "call": _ev_call,
}


# ------------------------------------------------------------------------------------------- entries
def eval_condition(text: str | None, attrs: dict[str, Any], system: dict[str, Any]) -> bool:
    """Evaluate a condition or filter expression against an item (empty means true)."""
    if not text or not text.strip():
        return True
    node = parse_condition(text)
    if node is None:
        return True
    return _truth(_eval(node, _Scope(attrs, system)))


def _storable(value: Any, scope: _Scope, target: str) -> Any:
    if value is MISSING:
        missing = ", ".join(dict.fromkeys(scope.missing)) or "?"
        msg = f"cannot set {target}: attribute {missing} not found"
        raise ExprError(msg)
    if isinstance(value, KvArray):
        return value.encode()
    if isinstance(value, bool | int | float | str | bytes | TS):
        return value
    msg = f"cannot set {target} to a {type(value).__name__}"  # pragma: no cover - all values are covered
    raise ExprError(msg)


def apply_update(text: str, attrs: dict[str, Any], system: dict[str, Any]) -> dict[str, Any]:
    """Run an update expression on a copy of ``attrs`` and return the new attributes.

    Raises
    ------
    ExprError
        For a malformed expression or one that fails on this item; nothing is changed then.
    """
    new = dict(attrs)
    scope = _Scope(new, system)
    for stmt in parse_update(text):
        scope.missing.clear()
        if stmt[0] == "remove":
            _check_user_name(stmt[1])
            new.pop(stmt[1], None)
            continue
        _, target, expr = stmt
        value = _eval(expr, scope)
        _assign(target, value, scope)
    return new


def _check_user_name(name: str) -> None:
    if name.startswith("__"):
        msg = f"system attribute {name!r} cannot be changed"
        raise ExprError(msg)


def _assign(target: tuple, value: Any, scope: _Scope) -> None:
    kind = target[0]
    name = target[1] if kind == "attr" else target[1][1]
    _check_user_name(name)
    if kind == "attr":
        scope.attrs[name] = _storable(value, scope, name)
        return
    if name not in scope.attrs:
        msg = f"cannot set an element of {name!r}: attribute not found"
        raise ExprError(msg)
    arr = _as_array(scope.attrs[name], f"setting an element of {name!r}")
    if kind == "index":
        i = _as_int(_eval(target[2], scope), "an array index")
        if not 0 <= i < len(arr):
            msg = f"array index {i} is out of range (length {len(arr)})"
            raise ExprError(msg)
        element = _storable(value, scope, f"{name}[{i}]")
        if not isinstance(element, int | float):
            msg = f"array elements are numbers, got {type(element).__name__}"
            raise ExprError(msg)
        arr.values[i] = arr.cast(element)
    else:
        i, j = _slice_bounds(arr, _eval(target[2], scope), _eval(target[3], scope))
        if value is MISSING:
            _storable(value, scope, f"{name}[{i}..{j}]")
        src = _as_array(value, f"assigning to {name}[{i}..{j}]")
        if len(src) != j - i + 1:
            msg = f"cannot assign {len(src)} elements to the slice {name}[{i}..{j}]"
            raise ExprError(msg)
        arr.values[i : j + 1] = [arr.cast(v) for v in src.values]
    scope.attrs[name] = arr.encode()
