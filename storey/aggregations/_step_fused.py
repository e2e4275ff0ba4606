"""The fused per-event path of `AggregateByKey` with `EmitEveryEvent`: one numba call for all aggregators.

`AggregateByKey._apply` walks the aggregators one by one (observe, filter, read, ``add_evaluate``) and makes
one compiled call per aggregator, then builds the output dict feature by feature. When every aggregator of
the step runs on `CompiledKeyState` from one generated module (and there are at most
`storey.aggregations._compiled_state.MAX_FUSED`), `fused_apply` generates, per step, a Python function doing
the *same* steps unrolled with the plan constants inlined, and one call of the module's ``step<n>`` function
(`storey.aggregations._compiled_state._steps_source`) for every aggregator's ``add``/``evaluate``. The
results land in two reusable arrays (ints, floats) that become the output dict in one display.

Same bits and same semantics as `_apply`: the same acceptance (``H`` and ``M`` advance in Python, exactly
as `KeyState.observe`), the same reads, filters, conversions, skips, metrics and errors, the same compiled
``add``/``evaluate`` on the same buffers; aggregators are independent, so one call after all reads equals a
call after each read. Keys whose states are not of the plans' classes (states installed by another engine,
e.g. `storey.frames` or a previous run) keep `_apply`: `AggregateByKey` marks the others by holding their
states in a tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from storey.aggregations._compiled_state import (
    MAX_FUSED,
    SP_FO,
    SP_IO,
    SP_KINDS,
    SP_NF,
    SP_NRET,
    SP_OUT,
    SP_P,
    CompiledKeyState,
)
from storey.aggregations.kernels._codegen import compile_function, indent

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
        f"if t > s{i}.H:",
        f"    s{i}.H = t",
        f"    s{i}.M = k{q}",
        f"M{i} = s{i}.M",
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
    features = []
    ii = fi = 0
    for p in plans:
        for name, is_int in zip(p.feature_names, p.state_class._KINDS, strict=True):
            features.append(f"{name!r}: {'xi' if is_int else 'xf'}[{ii if is_int else fi}]")
            ii += is_int
            fi += not is_int
    element = "copy(event)" if step._full_event else "body"
    plain = step._augmentation_fn is None and not step._enrich_with and not step._aliases
    if plain:
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
    features = {{{", ".join(features)}}}
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
    """The fused ``do`` and ``apply`` of one started step, and the state classes they run."""

    __slots__ = ("_layouts", "apply", "do", "source", "state_classes")

    def __init__(
        self, do: Callable[..., Any], apply: Callable[..., Any], source: str, classes: tuple
    ) -> None:
        self.do = do
        self.apply = apply
        self.source = source
        self.state_classes = classes
        self._layouts: dict[tuple[int, type], bool] = {}

    def accepts(self, states: Sequence[Any]) -> bool:
        """Whether the fused path can run a key's `states` (one per aggregator, in plan order)."""
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
    filename = f"<storey fused step {step.name}>"
    apply = compile_function(source, "apply", ns, filename)
    return Fused(ns["do"], apply, source, classes)
