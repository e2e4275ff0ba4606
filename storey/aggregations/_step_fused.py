"""The fused per-event path of `AggregateByKey` with `EmitEveryEvent`: one numba call for all aggregators.

`AggregateByKey._apply` walks the aggregators one by one (observe, filter, read, ``add_evaluate``) and makes
one compiled call per aggregator, then builds the output dict feature by feature. When every aggregator of
the step runs on `CompiledKeyState` from one generated module (and there are at most
`storey.aggregations._compiled_state.MAX_FUSED`), `fused_apply` generates, per step, a Python function doing
the *same* steps unrolled with the plan constants inlined, and one call of the module's ``step<n>`` function
(`storey.aggregations._compiled_state._steps_source`) for every aggregator's ``add``/``evaluate``. The
results land in two reusable arrays (ints, floats) that become the output dict in one display.

Same bits and same semantics as `_apply`: the same acceptance (``H`` and ``M`` advance in Python, exactly
as `KeyState.observe`, on the words of the state buffer that hold them), the same reads, filters,
conversions, skips, metrics and errors, the same compiled ``add``/``evaluate`` on the same buffers;
aggregators are independent, so one call after all reads equals a call after each read. Keys whose states
are not of the plans' classes (states installed by another engine, e.g. `storey.frames` or a previous run)
keep `_apply`: `AggregateByKey` marks the others by holding their states in a tuple.

The batch lane (`batch_source`): a chunk of rows (`storey.flow.batch.EventBatch`, from a reader or from
`emit`) is read column by column — keys, times, values and `FieldEquals` filters with C-level maps and
numpy, each exactly as ``do`` converts one event's — and folded by one call of the module's ``step_rows``,
which walks the rows in order over the keys' buffers (by address; a buffer that must grow defers its key's
later rows to a second call) and decides acceptance itself: ``H`` and ``M`` live in the buffers. The results
become the output bodies column by column. A chunk that cannot be read this way (a missing field, a value
that does not convert) goes to the per-event path, which raises the step's error where it must. Since the
lane reads every row's values and filters, also of rows that turn out too late, it is taken only with
`FieldEquals` filters and field values (`batch_eligible`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from storey.aggregations._compiled_state import (
    B_H,
    B_M,
    MAX_FUSED,
    SP_FO,
    SP_IO,
    SP_KINDS,
    SP_NF,
    SP_NRET,
    SP_OUT,
    SP_P,
    STEP_MODULES_AFTER,
    AddressBook,
    CompiledKeyState,
    StepModule,
    step_modules_mode,
)
from storey.aggregations.field import FieldEquals
from storey.aggregations.kernels._codegen import compile_function, indent
from storey.table import MarkBoard

logger = logging.getLogger(__name__)

__all__ = ["Fused", "eligible", "fused_apply", "fused_source"]


def eligible(step: Any) -> bool:
    """Whether `step` (started) can take the fused path."""
    plans = step.plans
    if not step._every or not 0 < len(plans) <= MAX_FUSED:
        return False
    classes = [p.state_class for p in plans]
    if not all(issubclass(c, CompiledKeyState) for c in classes):
        return False
    return all(c._MODULE is classes[0]._MODULE for c in classes)


def _aggregator_source(i: int, q: int, reader: Any, has_filter: bool, count_only_plan: bool) -> str:
    """Observe, filter and read aggregator `i` (the loop body of `AggregateByKey._apply`, with
    `ValueReader.convert`'s float, int and None cases inlined); ``k<q>`` is ``t // P<i>``."""
    take = f"v{i} = x" if not count_only_plan else "pass"
    add = f"modes |= {2 << (2 * i)}"
    skip = f'metrics["skipped_values"] += 1\nmodes |= {1 << (2 * i)}'
    if reader.from_body:
        read = f"try:\n    x = body[F{i}]\nexcept (KeyError, TypeError):\n    x = R{i}.read(event, element)"
    else:
        read = f"x = R{i}.field(element)"
    value = "\n".join(
        [
            read,
            "tx = type(x)",
            "if tx is float and x == x:",
            indent(f"{add}\n{take}", 1),
            "elif tx is int:",
            indent(f"x = float(x)\n{add}\n{take}", 1),
            "elif x is None:",
            indent(skip, 1),
            *([f"elif tx is str:\n    {add}"] if reader.count_only else []),
            "else:",
            f"    x = R{i}.convert(x, event)",
            "    if x is SKIP:",
            indent(skip, 2),
            "    else:",
            indent(f"{add}\n{take}", 2),
        ]
    )
    lines = [
        # H and M are words of the state's buffer (`CompiledKeyState.H`/`M`, read here without the properties)
        f"b{i} = s{i}._b",
        f"if t > b{i}.item({B_H}):",
        f"    b{i}[{B_H}] = t",
        f"    b{i}[{B_M}] = k{q}",
        f"M{i} = b{i}.item({B_M})",
        f"v{i} = 0.0",
        f"if k{q} < M{i} - N{i}:",
        "    late = True",
    ]
    if has_filter:
        lines += [f"elif not FL{i}(element):", f"    modes |= {1 << (2 * i)}"]
    lines += ["else:", indent(value, 1)]
    return "\n".join(lines)


def _do_source(step: Any) -> str:
    """The head of ``do(event)``: `AggregateByKey._do` with the key and time reads inlined for field names
    (`fused_source` appends the body of ``apply``)."""
    key, time_field = step.key, step.time_field
    lines = ["def do(event):"]
    if isinstance(key, str) or isinstance(time_field, str):
        lines.append("    body = event.body")
    if key is None:
        lines.append("    key = event.key")
    elif isinstance(key, str):
        lines += [
            "    try:",
            "        key = body[KEY]",
            "    except Exception:",
            "        key = read_key(event)",
        ]
    else:
        lines.append("    key = read_key(event)")
    lines += ["    if type(key) is list:", "        key = tuple(key)"]
    if time_field is None:
        lines.append("    t = event.time_ns")
    elif isinstance(time_field, str):
        lines += [
            "    try:",
            "        value = body[TIME]",
            "        t = datetime_to_ns(value) if type(value) is datetime else read_time(event)",
            "    except Exception:",
            "        t = read_time(event)  # raises the step's error",
        ]
    else:
        lines.append("    t = read_time(event)")
    lines += [
        "    states = STATES.get(key)",
        "    if type(states) is not tuple:",
        "        if states is None:",
        "            return first(event, key, t)",
        "        return slow(event, key, t, states)",
    ]
    return "\n".join(lines)


def _plain(step: Any) -> bool:
    """Whether the output body is the default augmentation (no function, enrichment or aliases)."""
    return step._augmentation_fn is None and not step._enrich_with and not step._aliases


def _features_display(plans: Sequence[Any], columns: bool = False) -> str:
    """The dict display of an event's features, in plan order, from the result lists ``xi`` and ``xf`` (with
    `columns`, from ``vi<j>`` and ``vf<j>``: one row's values of the result columns ``i<j>``, ``f<j>``)."""
    features = []
    ii = fi = 0
    for p in plans:
        for name, is_int in zip(p.feature_names, p.state_class._KINDS, strict=True):
            j = ii if is_int else fi
            if columns:  # a row's values, unpacked from the column lists ``i<j>`` and ``f<j>``
                features.append(f"{name!r}: {'vi' if is_int else 'vf'}{j}")
            else:
                features.append(f"{name!r}: {'xi' if is_int else 'xf'}[{j}]")
            ii += is_int
            fi += not is_int
    return "{" + ", ".join(features) + "}"


def batch_eligible(step: Any) -> bool:
    """Whether a fused step also takes whole batches (`batch_source`): its key and time are the event's or
    body fields, its values body fields, its filters `FieldEquals` (pure: the batch lane reads every row's
    values and filters, also of rows that turn out too late), and its functions get bodies."""
    key, time_field = step.key, step.time_field
    return (
        (key is None or isinstance(key, str))
        and (time_field is None or isinstance(time_field, str))
        and not step._full_event
        and all(r.from_body for r in step._readers)
        and all(f is None or type(f) is FieldEquals for f in step._filters)
    )


_RUN_TEMPLATE = """
def run(batch, start):
    bodies = batch.bodies
    n = len(bodies)
    part = bodies[start:] if start else bodies
    try:
@KEYS@
        try:
            rows = list(map(ROWS_OF.get, keys))  # a key has a row in BOOK iff its states are a tuple
        except TypeError:  # an unhashable key: list keys are their tuples
            keys = [tuple(k) if type(k) is list else k for k in keys]
            rows = list(map(ROWS_OF.get, keys))
        try:
            X = np.array(rows, np.int64)
        except TypeError:  # None: a key without cached states (or whose states the fused path cannot run)
            m = rows.index(None)
            if m == 0:
                return start, None
            part = part[:m]
            keys = keys[:m]
            X = np.array(rows[:m], np.int64)
        m = len(part)
@TIMES@
@VALUES@
    except Exception:
        return -1, None
    KL = BOOK.states
    A = BOOK.arr
    O = out_rows(m)
    G = BOOK.grow
    P = np.empty(m, np.int64)
    ACC = np.zeros(m, np.int64)
    CNT = np.zeros(2, np.int64)
    L = BOOK.last
    every = np.arange(m, dtype=np.int64)
    waiting = ROWS(T, C, X, V, A, CTX, O, every, G, P, ACC, CNT, L)
    while waiting:
        regrow_keys(KL, G, X[P[:waiting]])
        waiting = ROWS(T, C, X, V, A, CTX, O, P[:waiting].copy(), G, P, ACC, CNT, L)
    skipped, late = CNT.tolist()
    metrics["events"] += m
    metrics["skipped_values"] += skipped
    if SPECIALIZE is not None and metrics["events"] >= SPECIALIZE_AT:
        SPECIALIZE()
    if late:
        metrics["late_events"] += late
    # one last-event mark per key (its last row here), written column-wise into the board
    last = np.flatnonzero(L[X] == every)
    xs = X[last]
    BOARD.times[xs] = T[last]
    SOURCE[()], BOARD.at[xs] = batch.row_refs(last + start)
    BOARD.sources[xs] = SOURCE  # ids are drawn when the table needs them
    stale = xs[~BOARD.fresh[xs]]
    if len(stale):
        mark_stale(stale, X)
    @COLUMNS@
@OUTPUTS@
    if late:
        for r in np.flatnonzero(ACC != ALL).tolist():
            body = part[r]
            features = partial(EXPAND[int(ACC[r])], @ROW_LISTS@)
@OUTPUT_AT@
    j = start + m
    rows = None if start == 0 and j == n else list(range(start, j))
    return j, batch.derive(outs, rows, keys)
"""


def _values_source(i: int, reader: Any, flt: Any, count_only_plan: bool) -> str:
    """Codes (1 filtered out, 2 add, 3 skipped value) and values of aggregator `i` for the rows ``part``,
    read as `ValueReader.convert` reads them: plain floats, ints and None column-wise, anything else one by
    one through ``R<i>.convert`` (which raises where the per-event path would; the run then gives up)."""
    lines = [f"vals = list(map(GET{i}, part))", "kinds = set(map(type, vals))"]
    if reader.count_only:
        lines += [
            "if kinds <= COUNTED:  # ints and strs: every value counts",
            "    skip = None",
            "elif kinds <= COUNTABLE:",
            "    skip = [v is None or v != v for v in vals]",
            "else:",
            f"    skip = [R{i}.convert(v, None) is SKIP for v in vals]",
            "v = None",
        ]
    else:
        lines += [
            "if kinds <= NUMERIC:",
            "    v = np.array(vals, np.float64)  # None -> NaN: skipped as well",
            "    skip = np.isnan(v)",
            "else:",
            f"    xs = [R{i}.convert(x, None) for x in vals]",
            "    skip = [x is SKIP for x in xs]",
            "    v = np.array([0.0 if x is SKIP else x for x in xs], np.float64)",
        ]
    code = "np.full(m, 2, np.int64) if skip is None else np.where(np.asarray(skip, bool), 3, 2)"
    if flt is not None:
        # the filter's field is often the aggregated one (its values were just read)
        column = "vals" if flt.field == reader.field else f"map(FGET{i}, part)"
        lines.append(f"ok = np.array(list(map(truth, map(eq, {column}, repeat(FVAL{i}, m)))), bool)")
        code = f"np.where(ok, {code}, 1)"
    lines.append(f"c = {code}")
    lines.append(f"C = c if C is None else C | (c << {2 * i})")
    if not count_only_plan:
        lines.append(f"if v is not None:\n    V[:, {i}] = v")
    return "\n".join(lines)


def _columns_source(n_int: int, n_float: int) -> str:
    """The results of a batch as one list per feature (``i<j>``, ``f<j>``): no per-row lists, which the
    garbage collector would track and promote while the batch is built."""
    lines = []
    if n_int:
        names = "".join(f"i{j}, " for j in range(n_int))
        lines.append(f"{names}= O[:, :NI].T.tolist()")
    if n_float:
        names = "".join(f"f{j}, " for j in range(n_float))
        lines.append(f"{names}= O.view(np.float64)[:, NI:].T.tolist()")
    return "\n    ".join(lines)


def batch_source(step: Any) -> str:
    """The generated ``run(batch, start)`` of the batch lane: rows ``start …`` of `batch`, up to the first one
    whose key has no states held in a tuple (a first key, or states from elsewhere), read column-wise and
    folded with one compiled call (``step_rows``, which also decides acceptance).

    The columns are read as ``do`` reads an event (same key and time conversions, filters, value conversions
    and skips); ``step_rows`` advances each state's ``H``/``M`` and drops too-late values in row order, as
    `KeyState.observe` does. Returns ``(stop, out)``: the first row not taken and the batch of outputs of rows
    ``start … stop - 1`` (``None`` when there are none), or ``(-1, None)`` when reading the rows raised (the
    caller gives them to the per-event path, which raises the step's error where it must).
    """
    plans = step.plans
    n = len(plans)
    kinds = [is_int for p in plans for is_int in p.state_class._KINDS]
    n_int = kinds.count(True)
    n_float = len(kinds) - n_int
    if step.key is None:
        keys = "keys = batch.keys()[start:] if start else batch.keys()"
    else:
        keys = "keys = list(map(GET_KEY, part))"
    if step.time_field is None:
        times = "T = np.array(batch.times_ns()[start : start + m], np.int64)"
    else:  # to_ns_array: `to_ns` of each value (one pass for aware UTC datetimes)
        times = "T = to_ns_array(list(map(GET_TIME, part)))"
    values = ["C = None", f"V = np.zeros((m, {n}), np.float64)"]
    for i, (p, r, f) in enumerate(zip(plans, step._readers, step._filters, strict=True)):
        values.append(_values_source(i, r, f, tuple(p.kernels) == ("count",)))
    if _plain(step):
        output = (
            "if type(body) is dict:\n"
            "    features.update(body)\n"
            "    out = features\n"
            "else:\n"
            "    out = augment(body, features, None, NAME)"
        )
    else:
        output = (
            "key = keys[r]\nt = int(T[r])\nstates = KL[X[r]]\n"
            "out = augment(body, step_features(key, t, states, features), AUGMENT, NAME)"
        )
    row_values = ", ".join([*(f"vi{j}" for j in range(n_int)), *(f"vf{j}" for j in range(n_float))])
    column_lists = ", ".join([*(f"i{j}" for j in range(n_int)), *(f"f{j}" for j in range(n_float))])
    features = _features_display(plans, columns=True)
    outputs = (
        "outs = []\n"
        "append = outs.append\n"
        f"for r, body, {row_values} in zip(range(m), part, {column_lists}):\n"
        f"    features = {features}\n"
        f"{indent(output, 1)}\n"
        "    append(out)"
    )
    if _plain(step):  # all bodies dicts (the usual case): a display each, the body's items after the features
        spread = features[:-1] + ", **body}"
        outputs = (
            "if set(map(type, part)) == DICT:\n"
            f"    outs = [{spread} for body, {row_values} in zip(part, {column_lists})]\n"
            f"else:\n{indent(outputs, 1)}"
        )
    row_ints = ", ".join(f"i{j}[r]" for j in range(n_int))
    row_floats = ", ".join(f"f{j}[r]" for j in range(n_float))
    return (
        _RUN_TEMPLATE.replace("@KEYS@", indent(keys, 2))
        .replace("@TIMES@", indent(times, 2))
        .replace("@VALUES@", indent("\n".join(values), 2))
        .replace("@COLUMNS@", _columns_source(n_int, n_float))
        .replace("@OUTPUTS@", indent(outputs, 1))
        .replace("@ROW_LISTS@", f"[{row_ints}], [{row_floats}]")
        .replace("@OUTPUT_AT@", indent(output + "\nouts[r] = out", 3))
    )


def fused_source(step: Any) -> str:
    """The generated source of the fused ``apply`` and ``do`` of `step` (for inspection and tests)."""
    plans = step.plans
    n = len(plans)
    periods = list(dict.fromkeys(p.period_ns for p in plans))
    body = [f"k{q} = t // {period}" for q, period in enumerate(periods)]
    body.append(f"{''.join(f's{i}, ' for i in range(n))}= states")
    for i, (p, r, f) in enumerate(zip(plans, step._readers, step._filters, strict=True)):
        q = periods.index(p.period_ns)
        body.append(_aggregator_source(i, q, r, f is not None, tuple(p.kernels) == ("count",)))
    bufs = ", ".join(f"s{i}._b" for i in range(n))
    ms = ", ".join(f"M{i}" for i in range(n))
    vs = ", ".join(f"v{i}" for i in range(n))
    element = "copy(event)" if step._full_event else "body"
    if _plain(step):
        output = (
            "if type(body) is dict:\n"
            "    features.update(body)\n"
            "    out = event.__copy__()\n"
            "    out.key = key\n"
            "    out.body = features\n"
            "    return forward(out)\n"
            "return forward(output(event, key, t, states, features))"
        )
    else:
        output = "return forward(output(event, key, t, states, features))"
    apply = f"""
metrics["events"] += 1
body = event.body
element = {element}
late = False
modes = 0
{chr(10).join(body)}
grow = FN({bufs}, CTX, t, {ms}, modes, {vs})
if grow:
    regrow(grow, states, t, ({ms},), modes, ({vs},))
if late:
    metrics["late_events"] += 1
if key is not None:
    mark(key, NAMES, event, t)
xi = OI.tolist()
xf = OF.tolist()
if late:
    features = partial(modes, xi, xf)
else:
    features = {_features_display(plans)}
{output}"""
    head = (
        "def apply(event, key, t, states):\n"
        "    if type(states) is not tuple:\n"
        "        return slow(event, key, t, states)"
    )
    return f"{head}\n{indent(apply, 1)}\n\n\n{_do_source(step)}\n{indent(apply, 1)}\n"


def _same_layout(a: type, b: type[CompiledKeyState]) -> bool:
    """Whether states of class `a` can run with the parameters of class `b` (e.g. `a` from an equal plan of a
    previous run of the step on the same table)."""
    if a is b:
        return True
    if not (isinstance(a, type) and issubclass(a, CompiledKeyState)):
        return False
    same = (a._MODULE, a._P, a._N1, a._NRET, a._KINDS, a._HDR, a._W, a._OUT, a._CACHES) == (
        b._MODULE, b._P, b._N1, b._NRET, b._KINDS, b._HDR, b._W, b._OUT, b._CACHES,
    )  # fmt: skip
    return same and np.array_equal(a._IP, b._IP)


class Fused:
    """The fused ``do`` and ``apply`` of one started step, its batch ``run`` (or ``None``), and the state
    classes they run."""

    __slots__ = ("_layouts", "apply", "book", "do", "run", "source", "state_classes")

    def __init__(
        self,
        do: Callable[..., Any],
        apply: Callable[..., Any],
        run: Callable[..., Any] | None,
        source: str,
        classes: tuple,
    ) -> None:
        self.do = do
        self.apply = apply
        self.run = run
        self.book: AddressBook | None = None  # of the batch lane: the keys whose states run fused
        self.source = source
        self.state_classes = classes
        self._layouts: dict[tuple[int, type], bool] = {}

    def accepts(self, states: Sequence[Any]) -> bool:
        """Whether the fused path can run a key's `states` (one per aggregator, in plan order)."""
        if tuple(map(type, states)) == self.state_classes:  # the states of this run's plans
            return True
        layouts = self._layouts
        for i, (st, cls) in enumerate(zip(states, self.state_classes, strict=True)):
            kind = type(st)
            ok = layouts.get((i, kind))
            if ok is None:
                ok = layouts[(i, kind)] = _same_layout(kind, cls)
            if not ok:
                return False
        return True


def fused_apply(step: Any) -> Fused | None:
    """The fused path of a started `AggregateByKey`, or ``None`` when the step is not `eligible`."""
    if not eligible(step):
        return None
    from copy import copy
    from datetime import datetime

    from storey._time import _datetime_to_ns
    from storey.aggregations.step import _SKIP

    plans = step.plans
    n = len(plans)
    classes = tuple(p.state_class for p in plans)
    fn = getattr(classes[0]._MODULE.load(), f"step{n}")
    kinds = [is_int for c in classes for is_int in c._KINDS]
    n_int = kinds.count(True)
    n_words = len(kinds)
    base = max(len(c._IP) for c in classes)
    width = max(base + SP_KINDS + max(len(c._KINDS) for c in classes) + 1, n_words)
    ctx = np.zeros((n + 1, width), np.int64)
    ctx[0, -1] = base  # where the step's parameters start in each row
    segments: list[list[tuple[str, bool, int]]] = []
    io = fo = 0
    for i, (p, c) in enumerate(zip(plans, classes, strict=True)):
        ctx[i, : len(c._IP)] = c._IP
        row = ctx[i, base:]
        row[SP_P] = p.period_ns
        row[SP_NRET] = c._NRET
        row[SP_OUT] = c._OUT[0]
        row[SP_NF] = len(c._KINDS)
        row[SP_IO] = io
        row[SP_FO] = n_int + fo
        row[SP_KINDS : SP_KINDS + len(c._KINDS)] = c._KINDS
        seg = []
        for name, is_int in zip(p.feature_names, c._KINDS, strict=True):
            seg.append((name, is_int, io if is_int else fo))
            io += is_int
            fo += not is_int
        segments.append(seg)
    oi = ctx[n, :n_int]
    of = ctx[n, n_int:n_words].view(np.float64)

    def partial(modes: int, xi: list[int], xf: list[float]) -> dict[str, Any]:
        """The features of the aggregators that accepted the event (the others' are absent)."""
        features: dict[str, Any] = {}
        for i, seg in enumerate(segments):
            if (modes >> (2 * i)) & 3:
                for name, is_int, j in seg:
                    features[name] = xi[j] if is_int else xf[j]
        return features

    def regrow(
        grow: int, states: tuple[CompiledKeyState, ...], t: int, ms: tuple, modes: int, vs: tuple
    ) -> None:
        """Grow the full buffers and redo their aggregators (`fn` did nothing for them; after one doubling
        a buffer has room for the new tile)."""
        again = 0
        for i, st in enumerate(states):
            if grow >> i & 1:
                st._grow()
                again |= modes & (3 << (2 * i))
        fn(*(st._b for st in states), ctx, t, *ms, again, *vs)

    out_buffer = [np.zeros((256, n_words), np.int64)]

    def out_rows(m: int) -> np.ndarray:
        """A reused (m, words) int64 array for the results of a batch of `m` rows."""
        buf = out_buffer[0]
        if len(buf) < m:
            buf = out_buffer[0] = np.zeros((max(m, 2 * len(buf)), n_words), np.int64)
        return buf[:m]

    def regrow_keys(states_of_keys: list, G: np.ndarray, waiting_keys: np.ndarray) -> None:
        """Grow the buffers `step_rows` flagged in `G` (per key, a bit per aggregator; such keys are among
        those of the waiting rows; the new addresses reach the `AddressBook` by themselves) and clear the
        flags (after one doubling a buffer has room for the new tile)."""
        for x in np.unique(waiting_keys).tolist():
            grow = int(G[x])
            if grow:
                G[x] = 0
                for i, st in enumerate(states_of_keys[x]):
                    if grow >> i & 1:
                        st._grow()

    ns: dict[str, Any] = {
        "slow": step._apply,
        "first": step._do_first,
        "forward": step._forward,
        "output": step._output,
        "mark": step.table.mark_states_dirty,
        "read_key": step._key,
        "read_time": step._time,
        "KEY": step.key,
        "TIME": step.time_field,
        "STATES": step._states,
        "datetime": datetime,
        "datetime_to_ns": _datetime_to_ns,
        "NAMES": tuple(step._names),
        "FN": fn,
        "CTX": ctx,
        "metrics": step.metrics,
        "OI": oi,
        "OF": of,
        "SKIP": _SKIP,
        "copy": copy,
        "partial": partial,
        "regrow": regrow,
    }
    for i, (p, c, r, f) in enumerate(zip(plans, classes, step._readers, step._filters, strict=True)):
        ns[f"P{i}"] = p.period_ns
        ns[f"N{i}"] = c._N1
        ns[f"R{i}"] = r
        ns[f"F{i}"] = r.field
        ns[f"FL{i}"] = f
    source = fused_source(step)
    if batch_eligible(step):
        from itertools import repeat
        from operator import eq, itemgetter, truth

        from storey._time import to_ns_array
        from storey.aggregations.step import augment

        module_of = classes[0]._MODULE
        module = module_of.load()
        book = AddressBook(2 * n, MarkBoard(step._names))
        board = book.board
        mark_board = step.table.mark_board

        def mark_stale(stale: np.ndarray, X: np.ndarray) -> None:
            """Mark the keys of the `stale` board rows dirty, in the order of their first rows in `X`."""
            rows, first = np.unique(X, return_index=True)
            order = stale[np.argsort(first[np.searchsorted(rows, stale)], kind="stable")].tolist()
            mark_board(board, [book.keys[x] for x in order], order)

        every = (1 << n) - 1
        specialize = None
        mode = step_modules_mode()
        step_module = StepModule(module_of, ctx) if mode != "off" else None
        if step_module is not None and (mode == "eager" or step_module.compiled_before()):
            rows = step_module.load()
        else:
            rows = module.step_rows
            if step_module is not None:

                def specialize() -> None:
                    """Have the step module compiled, from a thread of its own; the lane switches to it when
                    it is ready."""
                    ns["SPECIALIZE"] = None
                    signatures = list(module.step_rows.signatures)
                    name = f"storey step module {step.name}"
                    threading.Thread(
                        target=switch, args=(step_module, signatures), name=name, daemon=True
                    ).start()

                def switch(step_module: StepModule, signatures: list) -> None:
                    """Compile it in a child process (no GIL shared with the flow), then load it."""
                    try:
                        if step_module.compile_in_child():
                            ns["ROWS"] = step_module.load(signatures)
                    except Exception:  # the generic module goes on (same results, slower)
                        logger.exception("step %r: compiling its step module failed", step.name)

        ns.update(
            {
                "np": np,
                "to_ns_array": to_ns_array,
                "eq": eq,
                "truth": truth,
                "repeat": repeat,
                "out_rows": out_rows,
                "regrow_keys": regrow_keys,
                "ROWS": rows,
                "SPECIALIZE": specialize,
                "SPECIALIZE_AT": STEP_MODULES_AFTER,
                "BOOK": book,
                "ROWS_OF": book.rows,
                "BOARD": board,
                "SOURCE": np.empty((), object),  # holds a batch's rows metadata (scattered as one object)
                "mark_stale": mark_stale,
                "NI": n_int,
                "NUMERIC": {float, int, type(None)},
                "DICT": {dict},
                "COUNTABLE": {float, int, str, type(None)},
                "COUNTED": {int, str},
                "ALL": every,
                # accepted-aggregator bits -> the modes `partial` reads (non-zero: features present)
                "EXPAND": [sum(1 << (2 * i) for i in range(n) if bits >> i & 1) for bits in range(every + 1)],
                "augment": augment,
                "AUGMENT": step._augmentation_fn,
                "NAME": step.name,
                "step_features": step._features,
            }
        )
        if isinstance(step.key, str):
            ns["GET_KEY"] = itemgetter(step.key)
        if isinstance(step.time_field, str):
            ns["GET_TIME"] = itemgetter(step.time_field)
        for i, (r, f) in enumerate(zip(step._readers, step._filters, strict=True)):
            ns[f"GET{i}"] = itemgetter(r.field)
            if f is not None:
                ns[f"FGET{i}"] = itemgetter(f.field)
                ns[f"FVAL{i}"] = f.value
        source += batch_source(step)
    filename = f"<storey fused step {step.name}>"
    apply = compile_function(source, "apply", ns, filename)
    fused = Fused(ns["do"], apply, ns.get("run"), source, classes)
    fused.book = ns.get("BOOK")
    return fused
