"""The numba-compiled per-key state (`CompiledKeyState`): the §5 state machine over one int64 buffer per key.

`storey.aggregations.state.PyKeyState` keeps a key's tiles as Python tuples and folds them with the fused
CPython functions; that costs ~40 Python-level merges per event and aggregator on sparse keys, whose
largest window loses its oldest tile at almost every event (a left fold must then restart from the new
oldest tile, §5.3). `CompiledKeyState` keeps the same tiles in one ``int64`` buffer per key (float fields
as their IEEE bits through a ``float64`` view) and runs ``add`` (§5.2) and ``evaluate`` (§5.3, every window
and finalisation in one call) in numba.

One generated module serves every plan made of its kernels and aggregations: the row layout, the kernels a
plan maintains and emits, window lengths and types, caps and the aggregations to finalise are run-time
parameters (``ip``), so hypothesis-drawn plans do not each compile a module. Its arithmetic is the kernels'
own statement templates, spliced as `storey.aggregations._fused` splices them (each behind the run-time
flag of its kernel), compiled with `storey.aggregations.kernels.compiled.njit` (no fastmath, no parallel).
The fold is the canonical one: oldest → newest, the tile of τ last, the closed part cached per window and
extended only while its oldest tile is unchanged; so the results are bit-identical to `PyKeyState`'s.
Plans whose only emitted kernel is ``count`` (no cap or an int cap) instead move each window's cached
count by the tiles that leave and enter it, as `PyKeyState` does: integers, exact in any order.

The module also holds ``step1`` … ``step<MAX_FUSED>`` (`_steps_source`): ``add``/``evaluate`` of every
aggregator of an `AggregateByKey` step in one call (`storey.aggregations._step_fused`), and ``step_rows``, a
batch of rows of a step. A *step module* (`StepModule`, `_Module.step_source`) is ``step_rows`` for one step
with its parameters folded in as constants; `step_modules_mode` says when it is built.

Buffer layout (8-byte words; ``W = 1 + len(plan.row_fields)``, ``NW`` windows, ``NA`` aggregations)::

    [0] start, [1] end              live tile rows are [start, end) (rows below start were pruned)
    [2] H, [3] M                    the high-water time and its tile (`KeyState.H`/`M`, here properties)
    [CB + w * CS ...]               cache of window w: W words shaped like a row (the folded fields at
                                    their row offsets), then ok, lo, hi, first, last, has, cc
    [OUT + a * NW + w]              the last evaluation's result of aggregation a over window w
    [HDR + j * W ...]               tile row j: tile index, then the row fields in ``row_fields`` order
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from ctypes import addressof, c_char
from typing import Any, ClassVar

import numpy as np

from storey.aggregations.blob import encode_rows, field_list
from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.aggregations.kernels._codegen import compile_function, fold_constants, indent
from storey.aggregations.kernels.base import Aggregation, Kernel, rename_temporaries
from storey.aggregations.kernels.compiled import cache_dir, load_named_module
from storey.aggregations.state import NO_TIME, KeyState
from storey.table import MarkBoard

__all__ = [
    "AddressBook",
    "CompiledKeyState",
    "StepModule",
    "compiled_state_class",
    "step_modules_mode",
    "supports",
]

# -- run-time parameters (ip: int64; float parameters as bits) ------------------------------------------
IP_N1, IP_NRET, IP_NMAX, IP_KIND, IP_W, IP_NW, IP_CS, IP_CB, IP_OUT, IP_HDR, IP_NAGG = range(11)
IP_CAPPED, IP_CCMODE, IP_CCAPI, IP_CAPF, IP_CCAPF = range(11, 16)
IP_DELTA = 16  # 1: the only emitted kernel is count with an int or no cap (window counts move by deltas)
IP_FLAGS = 17  # then per module kernel: maintained (row) flag; then emitted (acc) flag; then field offsets
# per-key buffer
B_START, B_END, B_H, B_M, B_CB = 0, 1, 2, 3, 4
# cache entry extras, after the W row-shaped words
C_OK, C_LO, C_HI, C_FIRST, C_LAST, C_HAS, C_CC = range(7)
N_CEXTRA = 7
INIT_TILES = 8
"""Tile rows a new key's buffer holds before it first grows."""
GROW_4X_BELOW = 64
"""Buffers of fewer tile rows grow 4x, larger ones 2x."""


def _literal(value: Any) -> str:
    if isinstance(value, float) and value != value:
        return "NAN"
    if isinstance(value, float) and math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(value)


def _result_is_int(agg: Aggregation) -> bool | None:
    """Whether `agg` emits an int (True) or a float (False); ``None`` when that is not fixed."""
    fields = {"n": 2}
    for name in agg.kernels:
        for f, dt in get_kernel(name).fields:
            fields[f] = 1 if dt == "i8" else 1.5
    try:
        got = agg.finalize(fields)
    except Exception:
        return None
    kinds = {type(got), type(agg.empty)}
    if kinds == {int}:
        return True
    if kinds == {float}:
        return False
    return None


_HELPERS = f"""
def add_evaluate(b, k, v, t, bound, ip):
    \"\"\"`add` then `evaluate` as of tile `k` in one call; 1 (nothing done) when the buffer must grow.\"\"\"
    if add(b, k, v, t, bound, ip):
        return 1
    evaluate(b, k, ip)
    return 0


def has_data(b, lo, hi, ip):
    \"\"\"Whether a tile of [lo, hi] holds data.\"\"\"
    W = ip[{IP_W}]
    HDR = ip[{IP_HDR}]
    end = b[{B_END}]
    j = bl(b, HDR, W, b[{B_START}], end, lo)
    return j < end and b[HDR + j * W] <= hi

"""

_BISECT = """
def bl(b, HDR, W, lo, hi, x):
    \"\"\"bisect_left over the tile indices of rows [lo, hi).\"\"\"
    while lo < hi:
        mid = (lo + hi) // 2
        if b[HDR + mid * W] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def br(b, HDR, W, lo, hi, x):
    \"\"\"bisect_right over the tile indices of rows [lo, hi).\"\"\"
    while lo < hi:
        mid = (lo + hi) // 2
        if x < b[HDR + mid * W]:
            hi = mid
        else:
            lo = mid + 1
    return lo
"""


def _module_text(origin: str, constants: str, body: str) -> str:
    """A generated module: the imports and constants every one needs, `constants`, then `body` (functions,
    each compiled with ``njit``; ``step_rows`` with ``njit_nogil``)."""
    body = "\n".join(line.rstrip() for line in body.splitlines() if line.strip()) + "\n"
    body = ("\n" + body).replace("\ndef ", "\n\n\n@njit\ndef ")
    body = body.replace("@njit\ndef step_rows(", "@njit_nogil\ndef step_rows(")
    return (
        f'"""Generated by {origin}: do not edit."""\n\n'
        "import math  # noqa: F401 - templates may use it\n\n"
        "import numpy as np\n\n"
        "from storey.aggregations.kernels._codegen import safe_sqrt\n"
        "from numba import carray\n\n"
        "from storey.aggregations.kernels.compiled import int64_pointer, njit, njit_nogil, prefetch\n\n"
        f"AHEAD = {PREFETCH_AHEAD}\nPREFETCH_WORDS = {PREFETCH_WORDS}\n"
        "INF = float('inf')\nNAN = float('nan')\nsqrt = njit(safe_sqrt)\n" + constants + body
    )


class _Module:
    """The generated source over some kernels and aggregations, and the layout facts plans need."""

    def __init__(self, kernels: Sequence[Kernel], aggregations: Sequence[Aggregation]) -> None:
        self.kernels = list(kernels)
        self.kernel_index = {k.name: i for i, k in enumerate(self.kernels)}
        self.aggregations = list(aggregations)
        self.agg_index = {a.name: i for i, a in enumerate(self.aggregations)}
        self.agg_int = [bool(_result_is_int(a)) for a in self.aggregations]
        self.fields = [(f, dt, i) for i, k in enumerate(self.kernels) for f, dt in k.fields]
        self.field_index = {f: j for j, (f, _, _) in enumerate(self.fields)}
        nk = len(self.kernels)
        self.ip_acc = IP_FLAGS + nk
        self.ip_off = IP_FLAGS + 2 * nk
        self.ip_win = self.ip_off + len(self.fields)
        self.source = self._source()
        self.functions: Any = None

    # -- snippets ---------------------------------------------------------------------------------------
    def _guarded(self, kernel: int, flag: str, body: str) -> str:
        if self.kernels[kernel].name == "count":
            return body
        return f"if {flag}{kernel}:\n{indent(body, 1)}"

    def _load(self, prefix: str, base: str, flag: str) -> str:
        """Load every field of the flagged kernels from the row-shaped words at `base`."""
        out = []
        for i, k in enumerate(self.kernels):
            body = "\n".join(
                f"{prefix}{f} = {'b' if dt == 'i8' else 'f'}[{base} + o_{f}]" for f, dt in k.fields
            )
            out.append(self._guarded(i, flag, body))
        return "\n".join(out)

    def _store(self, prefix: str, base: str, flag: str) -> str:
        out = []
        for i, k in enumerate(self.kernels):
            body = "\n".join(
                f"{'b' if dt == 'i8' else 'f'}[{base} + o_{f}] = {prefix}{f}" for f, dt in k.fields
            )
            out.append(self._guarded(i, flag, body))
        return "\n".join(out)

    def _copy(self, dst: str, src: str) -> str:
        return "\n".join(f"{dst}{f} = {src}{f}" for f, _, _ in self.fields)

    def _empty(self) -> str:
        return "\n".join(
            f"{f} = {_literal(v)}" for k in self.kernels for (f, _), v in zip(k.fields, k.empty, strict=True)
        )

    def _merge(self) -> str:
        """Every flagged acc kernel's merge template (``a_*`` precedes ``b_*``, both non-empty)."""
        return "\n".join(
            self._guarded(i, "au", rename_temporaries(k.merge_code or "", f"_k{i}"))
            for i, k in enumerate(self.kernels)
        )

    def _update(self) -> str:
        """Every flagged row kernel's update template, ``count`` last, each followed by its caps (the order of
        `storey.aggregations._fused._update_block`)."""
        order = [i for i, k in enumerate(self.kernels) if "n" not in k.field_names]
        order += [i for i, k in enumerate(self.kernels) if "n" in k.field_names]
        out = []
        for i in order:
            k = self.kernels[i]
            body = rename_temporaries(k.update_code or "", f"_k{i}")
            if k.cap_fields:
                caps = "\n".join(f"if {f} > cap:\n    {f} = cap" for f in k.cap_fields)
                body += f"\nif capped:\n{indent(caps, 1)}"
            out.append(self._guarded(i, "ru", body))
        return "\n".join(out)

    @staticmethod
    def _cc(target: str, start_i: str, start_f: str, n: str) -> str:
        """``target = start + (CCAP if n > CCAP else n)`` for the int and the float capped count (the
        ``contrib`` of `storey.aggregations._fused`)."""
        return (
            f"if ccmode == 1:\n    {target}i = {start_i} + (ccapi if {n} > ccapi else {n})\n"
            f"elif ccmode == 2:\n    {target}f = {start_f} + (ccapf if {n} > ccapf else {n})"
        )

    def _prologue(self, flags: Sequence[str]) -> str:
        """Read the layout parameters, kernel flags and field offsets; initialise every local."""
        lines = [
            "f = b.view(np.float64)",
            "ipf = ip.view(np.float64)",
            f"W = ip[{IP_W}]",
            f"HDR = ip[{IP_HDR}]",
            f"NW = ip[{IP_NW}]",
            f"CS = ip[{IP_CS}]",
            f"CB = ip[{IP_CB}]",
            f"capped = ip[{IP_CAPPED}] != 0",
            f"cap = ipf[{IP_CAPF}]",
            f"ccmode = ip[{IP_CCMODE}]",
            f"ccapi = ip[{IP_CCAPI}]",
            f"ccapf = ipf[{IP_CCAPF}]",
        ]
        for i, k in enumerate(self.kernels):
            if k.name == "count":
                continue
            if "ru" in flags:
                lines.append(f"ru{i} = ip[{IP_FLAGS + i}] != 0")
            if "au" in flags:
                lines.append(f"au{i} = ip[{self.ip_acc + i}] != 0")
        for j, (f, _, _) in enumerate(self.fields):
            lines.append(f"o_{f} = ip[{self.ip_off + j}]")
        for prefix in ("", "a_", "b_"):
            for f, dt, _ in self.fields:
                lines.append(f"{prefix}{f} = {'0' if dt == 'i8' else '0.0'}")
        lines += ["cci = 0", "ccf = 0.0", "a_cci = 0", "a_ccf = 0.0"]
        return "\n".join(lines)

    # -- functions --------------------------------------------------------------------------------------
    def _add_source(self) -> str:
        init_row = "\n".join(
            self._guarded(
                i,
                "ru",
                "\n".join(
                    f"{'b' if dt == 'i8' else 'f'}[r + o_{f}] = {_literal(v)}"
                    for (f, dt), v in zip(k.fields, k.empty, strict=True)
                ),
            )
            for i, k in enumerate(self.kernels)
        )
        return f"""
def add(b, k, v, t, bound, ip):
    \"\"\"Add value `v` at time `t` to tile `k` (§5.2 step 3); 1 when the buffer must grow first.\"\"\"
{indent(self._prologue(["ru"]), 1)}
    start = b[{B_START}]
    end = b[{B_END}]
    if end > start and b[HDR + (end - 1) * W] == k:
        j = end - 1
    else:
        if end == start or b[HDR + (end - 1) * W] < k:
            j = end
        else:
            j = bl(b, HDR, W, start, end, k)
        if j == end or b[HDR + j * W] != k:
            room = (b.shape[0] - HDR) // W
            if end == room:
                live = end - start
                if start == 0 or 2 * live > room:
                    return 1
                for x in range(live * W):
                    b[HDR + x] = b[HDR + start * W + x]
                j -= start
                end = live
                start = 0
            append = j == end
            if not append:
                for x in range((end - j) * W - 1, -1, -1):
                    b[HDR + (j + 1) * W + x] = b[HDR + j * W + x]
            r = HDR + j * W
            b[r] = k
{indent(init_row, 3)}
            end += 1
            if append and b[HDR + start * W] < bound:  # retention (§5.2 step 4), as PyKeyState prunes
                start = bl(b, HDR, W, start, end, bound)
                if ip[{IP_DELTA}] != 0:  # running counts that include dropped tiles cannot move any more
                    for w in range(NW):
                        x = CB + w * CS + W
                        if b[x + {C_LO}] < bound:
                            b[x + {C_OK}] = 0
            b[{B_START}] = start
            b[{B_END}] = end
    r = HDR + j * W
{indent(self._load("", "r", "ru"), 1)}
{indent(self._update(), 1)}
{indent(self._store("", "r", "ru"), 1)}
    for w in range(NW):
        x = CB + w * CS + W
        if b[x + {C_OK}] != 0 and b[x + {C_LO}] <= k and k <= b[x + {C_HI}]:
            b[x + {C_OK}] = 0
    return 0
"""

    def _finalize_source(self) -> str:
        """Write each aggregation's result over window ``w`` (fields and ``cci``/``ccf`` are final)."""
        branches = []
        for a, agg in enumerate(self.aggregations):
            region = "b" if self.agg_int[a] else "f"
            plain = f"{region}[o] = {_literal(agg.empty)} if n == 0 else ({agg.expr})"
            if agg.name == "count":
                body = (
                    "if ccmode == 1:\n    b[o] = 0 if n == 0 else cci\n"
                    "elif ccmode == 2:\n    f[o] = 0.0 if n == 0 else ccf\n"
                    f"else:\n    {plain}"
                )
            else:
                body = plain
            branches.append(f"{'if' if a == 0 else 'elif'} aid == {a}:\n{indent(body, 1)}")
        return (
            "for x in range(NAGG):\n"
            f"    aid = ip[AB + x]\n"
            "    o = OUT + x * NW + w\n"
            f"{indent(chr(10).join(branches), 1)}"
        )

    def _evaluate_source(self) -> str:
        cc_store = f"if ccmode == 1:\n    b[x + {C_CC}] = a_cci\nelif ccmode == 2:\n    f[x + {C_CC}] = a_ccf"
        cc_load = f"a_cci = b[x + {C_CC}]\na_ccf = f[x + {C_CC}]"
        rebind = self._copy("a_", "") + "\na_cci = cci\na_ccf = ccf"
        return f"""
def evaluate(b, k, ip):
    \"\"\"Evaluate every window as of tile `k` (§5.3) into the buffer's result words.\"\"\"
{indent(self._prologue(["au"]), 1)}
    kind = ip[{IP_KIND}]
    delta = ip[{IP_DELTA}] != 0
    OUT = ip[{IP_OUT}]
    NAGG = ip[{IP_NAGG}]
    AB = {self.ip_win} + NW
    start = b[{B_START}]
    end = b[{B_END}]
    jc = bl(b, HDR, W, start, end, k)
    has_cur = kind != 2 and jc < end and b[HDR + jc * W] == k
    for w in range(NW):
        nw = ip[{self.ip_win} + w]
        if kind == 0:
            lo = k - nw + 1
            hi = k - 1
        elif kind == 1:
            lo = (k // nw) * nw
            hi = k - 1
        else:
            hi = (k // nw) * nw - 1
            lo = hi - nw + 1
        c = CB + w * CS
        x = c + W
        if not (b[x + {C_OK}] != 0 and b[x + {C_LO}] == lo and b[x + {C_HI}] == hi):
            if delta:
                # integer counts are exact in any order: move the cached count with the window (drop the
                # tiles that left, add those that entered), or count the range afresh
                olo = b[x + {C_LO}]
                ohi = b[x + {C_HI}]
                if b[x + {C_OK}] != 0 and olo <= lo and lo <= ohi + 1 and ohi <= hi:
                    dn = b[c + o_n]
                    dc = b[x + {C_CC}]
                    jj = bl(b, HDR, W, start, end, olo)
                    while jj < end and b[HDR + jj * W] < lo:
                        tn = b[HDR + jj * W + o_n]
                        dn -= tn
                        dc -= ccapi if tn > ccapi else tn
                        jj += 1
                    jj = br(b, HDR, W, start, end, ohi)
                else:
                    dn = 0
                    dc = 0
                    jj = bl(b, HDR, W, start, end, lo)
                while jj < end and b[HDR + jj * W] <= hi:
                    tn = b[HDR + jj * W + o_n]
                    dn += tn
                    dc += ccapi if tn > ccapi else tn
                    jj += 1
                b[c + o_n] = dn
                b[x + {C_CC}] = dc
                b[x + {C_HAS}] = 1
            else:
                j0 = bl(b, HDR, W, start, end, lo)
                j1 = br(b, HDR, W, j0, end, hi)
                if j0 >= j1:
                    b[x + {C_HAS}] = 0
                else:
                    first = b[HDR + j0 * W]
                    last = b[HDR + (j1 - 1) * W]
                    cached = b[x + {C_OK}] != 0 and b[x + {C_HAS}] != 0
                    if cached and b[x + {C_FIRST}] == first and b[x + {C_LAST}] <= last:
                        # continue the cached left fold with the newer tiles
{indent(self._load("a_", "c", "au"), 6)}
{indent(cc_load, 6)}
                        js = br(b, HDR, W, j0, j1, b[x + {C_LAST}])
                    else:
                        # fold afresh from the oldest tile of the range
                        r = HDR + j0 * W
{indent(self._load("a_", "r", "au"), 6)}
{indent(self._cc("a_cc", "0", "0.0", "a_n"), 6)}
                        js = j0 + 1
                    for jj in range(js, j1):
                        r = HDR + jj * W
{indent(self._load("b_", "r", "au"), 6)}
{indent(self._merge(), 6)}
{indent(self._cc("cc", "a_cci", "a_ccf", "b_n"), 6)}
{indent(rebind, 6)}
{indent(self._store("a_", "c", "au"), 5)}
{indent(cc_store, 5)}
                    b[x + {C_HAS}] = 1
                    b[x + {C_FIRST}] = first
                    b[x + {C_LAST}] = last
            b[x + {C_OK}] = 1
            b[x + {C_LO}] = lo
            b[x + {C_HI}] = hi
        # the closed part, then the tile of tau (an absent operand is the empty summary)
        if b[x + {C_HAS}] != 0:
{indent(self._load("a_", "c", "au"), 3)}
{indent(cc_load, 3)}
            if has_cur:
                r = HDR + jc * W
{indent(self._load("b_", "r", "au"), 4)}
{indent(self._merge(), 4)}
{indent(self._cc("cc", "a_cci", "a_ccf", "b_n"), 4)}
            else:
{indent(self._copy("", "a_"), 4)}
                cci = a_cci
                ccf = a_ccf
        elif has_cur:
            r = HDR + jc * W
{indent(self._load("", "r", "au"), 3)}
{indent(self._cc("cc", "0", "0.0", "n"), 3)}
        else:
{indent(self._empty(), 3)}
            cci = 0
            ccf = 0.0
{indent(self._finalize_source(), 2)}
"""

    def _source(self) -> str:
        body = "\n".join([self._add_source(), self._evaluate_source(), _HELPERS, _BISECT, _steps_source()])
        kernels = ", ".join(k.name for k in self.kernels)
        aggs = ", ".join(a.name for a in self.aggregations)
        return _module_text(
            f"storey.aggregations._compiled_state (kernels: {kernels}; aggregations: {aggs})", "", body
        )

    def step_source(self, ctx: np.ndarray) -> str:
        """A module of the step whose parameters are `ctx` (a fused step's, `_step_fused.fused_apply`): its
        ``step_rows`` has the generic one's signature and results, with every parameter of every aggregator
        a constant.

        Each aggregator ``i`` gets ``add_<i>``, ``evaluate_<i>`` and ``step_into_<i>``: the generic functions'
        source with ``ip`` bound to ``IP<i>``, a constant tuple of ``ctx[i]`` (``IPF<i>``: its float64 view),
        then `fold_constants`: the layout, kernel flags and caps become literals, and the branches of the
        kernels and modes the plan does not use are gone. ``step_rows`` runs the aggregators' blocks one
        after the other (`_rows_source`). Same statements in the same order: the same bits.
        """
        n = ctx.shape[0] - 1
        s = int(ctx[0, -1])
        parts = []
        tables = []
        for i in range(n):
            row = ctx[i]
            tables.append(
                f"IP{i} = {tuple(int(v) for v in row)}\n"
                f"IPF{i} = ({', '.join(_literal(float(v)) for v in row.view(np.float64))},)"
            )
            text = "\n".join([self._add_source(), self._evaluate_source(), _STEP_INTO])
            for old, new in (
                ("def add(b, k, v, t, bound, ip):", f"def add_{i}(b, k, v, t, bound):\n    ip = IP{i}"),
                ("def evaluate(b, k, ip):", f"def evaluate_{i}(b, k):\n    ip = IP{i}"),
                ("ipf = ip.view(np.float64)", f"ipf = IPF{i}"),
                (
                    "def step_into(b, ctx, i, t, M, m, v, out, of):",
                    f"def step_into_{i}(b, t, M, m, v, out, of):",
                ),
                ("    ip = ctx[i]\n    s = ctx[0, ctx.shape[1] - 1]", f"    ip = IP{i}\n    s = {s}"),
                ("if add(b, k, v, t, M - ip[s + ", f"if add_{i}(b, k, v, t, M - ip[s + "),
                (
                    "], ip):\n            return 1\n    evaluate(b, k, ip)",
                    f"]):\n            return 1\n    evaluate_{i}(b, k)",
                ),
            ):
                if old not in text:
                    msg = f"step module: the generic source no longer has {old!r}"
                    raise AssertionError(msg)
                text = text.replace(old, new)
            known = {"ip": tuple(row.tolist()), "ipf": tuple(row.view(np.float64).tolist())}
            parts.append(fold_constants(text, known))
        body = "\n".join([*parts, _BISECT, _rows_source(ctx)])
        return _module_text(
            "storey.aggregations._compiled_state (a step module)", "\n".join(tables) + "\n", body
        )

    def load(self) -> Any:
        if self.functions is None:
            from storey.aggregations.kernels.compiled import load_generated_module

            self.functions = load_generated_module(self.source, "storey_state")
        return self.functions


MAX_FUSED = 6
"""`AggregateByKey` steps with up to this many compiled aggregators make one numba call per event."""
PREFETCH_AHEAD = 4
"""`step_rows` starts loading the buffers of the row this many rows ahead …"""
PREFETCH_WORDS = 256
"""… their first words (header, window caches, results), at most this many."""
# a fused step's ``ctx``: row i holds aggregator i's ``ip``, then from column ``ctx[0, -1]`` on: P, NRET, OUT,
# features, first output word of its ints, of its floats, then per feature 1 when it is an int; the last row
# holds the results (ints, then floats as their bits)
SP_P, SP_NRET, SP_OUT, SP_NF, SP_IO, SP_FO, SP_KINDS = range(7)


_STEP_INTO = f"""
def step_into(b, ctx, i, t, M, m, v, out, of):
    \"\"\"`step_one` with the results copied to `out` (ints) and `of` (its float64 view).\"\"\"
    ip = ctx[i]
    s = ctx[0, ctx.shape[1] - 1]
    k = t // ip[s + {SP_P}]
    if m == 2:
        if add(b, k, v, t, M - ip[s + {SP_NRET}], ip):
            return 1
    evaluate(b, k, ip)
    o = ip[s + {SP_OUT}]
    io = ip[s + {SP_IO}]
    fo = ip[s + {SP_FO}]
    f = b.view(np.float64)
    for j in range(ip[s + {SP_NF}]):
        if ip[s + {SP_KINDS} + j] != 0:
            out[io] = b[o + j]
            io += 1
        else:
            of[fo] = f[o + j]
            fo += 1
    return 0
"""


def _rows_source(ctx: np.ndarray | None) -> str:
    """``step_rows``: the generic one (`ctx` ``None``: a loop over the aggregators, parameters read from
    ``ctx``), or a step module's (`Module.step_source`: each aggregator's block written out with its
    parameters as literals, calling its ``step_into_<i>``). The blocks are one template."""
    specialized = ctx is not None
    n = ctx.shape[0] - 1 if ctx is not None else 0

    def block(i: str, p: dict[str, Any]) -> tuple[str, str, str]:
        """Prefetch of the headers, prefetch of the tiles, and the event's work, of aggregator `i`."""
        bits = {
            "a": f"2 * {i}" if not specialized else str(2 * int(i)),
            "z": f"2 * {i} + 1" if not specialized else str(2 * int(i) + 1),
            "shift": f"2 * {i}" if not specialized else str(2 * int(i)),
            "bit": f"1 << {i}" if not specialized else str(1 << int(i)),
            "again": f"2 << (2 * {i})" if not specialized else str(2 << (2 * int(i))),
        }
        buffer = f"b = carray(int64_pointer(A[x, {bits['a']}]), (A[x, {bits['z']}],))"
        headers = f"{buffer}\nfor w in range(0, min({p['HDR']}, PREFETCH_WORDS), 8):\n    prefetch(b, w)"
        tiles = (
            f"{buffer}\nlo = {p['HDR']} + b[{B_START}] * {p['W']}\n"
            f"hi = min({p['HDR']} + b[{B_END}] * {p['W']}, lo + PREFETCH_WORDS)\n"
            "for w in range(lo, hi, 8):\n    prefetch(b, w)"
        )
        call = (
            f"step_into_{i}(b, t, M, c, V[e, {i}], out, of)"
            if specialized
            else (f"step_into(b, ctx, {i}, t, M, c, V[e, {i}], out, of)")
        )
        work = f"""c = (codes >> ({bits["shift"]})) & 3
if c != 0:
    {buffer}
    k = t // {p["P"]}
    if t > b[{B_H}]:
        b[{B_H}] = t
        b[{B_M}] = k
    M = b[{B_M}]
    if k < M - {p["N1"]}:
        late = True
    else:
        ACC[e] |= {bits["bit"]}
        if c == 3:
            CNT[0] += 1
            c = 1
        if {call}:
            grow |= {bits["bit"]}
            again |= {bits["again"]}"""
        return headers, tiles, work

    if ctx is None:
        generic = {
            "HDR": f"ctx[i, {IP_HDR}]",
            "W": f"ctx[i, {IP_W}]",
            "P": f"ctx[i, s + {SP_P}]",
            "N1": f"ctx[i, {IP_N1}]",
        }
        headers, tiles, work = (f"for i in range(na):\n{indent(part, 1)}" for part in block("i", generic))
    else:
        s = int(ctx[0, -1])
        parts = [
            block(
                str(i),
                {
                    "HDR": int(ctx[i, IP_HDR]),
                    "W": int(ctx[i, IP_W]),
                    "P": int(ctx[i, s + SP_P]),
                    "N1": int(ctx[i, IP_N1]),
                },
            )
            for i in range(n)
        ]
        headers, tiles, work = ("\n".join(column) for column in zip(*parts, strict=True))
    return f"""
def step_rows(T, C, X, V, A, ctx, O, order, G, P, ACC, CNT, L):
    \"\"\"`step<n>` over the rows `order` of a batch (`storey.aggregations._step_fused`), acceptance included.

    Row ``e`` is the time ``T[e]``, per aggregator ``i`` a code ``(C[e] >> 2i) & 3`` (0 nothing, 1 evaluate:
    filtered out, 2 add ``V[e, i]``, 3 evaluate and count a skipped value) and the key ``X[e]``, whose
    buffers' addresses and lengths are ``A[X[e]]``. Each aggregator first advances its ``H``/``M`` and drops
    the event when it is too late (§5.2 steps 1–2, as `KeyState.observe`); the accepted ones set their bit
    in ``ACC[e]``. ``CNT`` counts skipped values and rows too late for some aggregator. Results go to
    ``O[e]`` (the layout of the last row of `ctx`). A row whose buffers must grow first is done for its other
    aggregators (its codes keep the ones to redo), its key's grow mask is set in `G`, and it and every later
    row of that key wait: they are written to `P`, in order. ``L[X[e]]`` is set to each row done, so that
    once no row waits it names the last row of each key. Returns how many rows wait (0: all done).
    \"\"\"
    na = V.shape[1]
    rows = order.shape[0]
    s = ctx[0, ctx.shape[1] - 1]
    waiting = 0
    for q in range(rows):
        # the buffers of rows ahead are likely cold (many keys): load the headers of the row 2 * AHEAD rows
        # ahead, then the live tiles of the row AHEAD rows ahead (its header has arrived meanwhile)
        if q + 2 * AHEAD < rows:
            x = X[order[q + 2 * AHEAD]]
{indent(headers, 3)}
        if q + AHEAD < rows:
            x = X[order[q + AHEAD]]
{indent(tiles, 3)}
        e = order[q]
        x = X[e]
        if G[x] != 0:
            P[waiting] = e
            waiting += 1
            continue
        t = T[e]
        codes = C[e]
        out = O[e]
        of = out.view(np.float64)
        grow = 0
        again = 0
        late = False
{indent(work, 2)}
        if late:
            CNT[1] += 1
        if grow != 0:
            G[x] = grow
            C[e] = again
            P[waiting] = e
            waiting += 1
        else:
            L[x] = e
    return waiting
"""


def _steps_source() -> str:
    """``step1`` … ``step<MAX_FUSED>``: one event of a step's aggregators (`storey.aggregations._step_fused`),
    and ``step_rows``, a batch of rows of a step.

    Aggregator ``i`` has the state buffer ``b<i>``, the parameters ``ctx[i]``, ``M<i>`` (its ``tile(H)``,
    already advanced to the event) and the mode ``(modes >> 2i) & 3``: 0 nothing (too late), 1 evaluate as
    of ``t``, 2 add ``v<i>`` then evaluate. Results go to the words of the last row of ``ctx`` that
    ``ctx[i]`` names. Returns the bit mask of the aggregators whose buffer must grow first (nothing done
    for them).
    """
    out = [
        """
def step_one(b, ctx, i, t, M, m, v):
    \"\"\"One aggregator of a fused step: `add` (mode 2) then `evaluate`, results copied to the last row of
    `ctx`.\"\"\"
    out = ctx[ctx.shape[0] - 1]
    return step_into(b, ctx, i, t, M, m, v, out, out.view(np.float64))
""",
        _STEP_INTO,
        _rows_source(None),
    ]
    for n in range(1, MAX_FUSED + 1):
        each = range(n)
        args = ", ".join(
            [
                *(f"b{i}" for i in each),
                "ctx",
                "t",
                *(f"M{i}" for i in each),
                "modes",
                *(f"v{i}" for i in each),
            ]
        )
        lines = [f"def step{n}({args}):", "    grow = 0"]
        for i in each:
            lines += [
                f"    m = (modes >> {2 * i}) & 3",
                f"    if m != 0 and step_one(b{i}, ctx, {i}, t, M{i}, m, v{i}):",
                f"        grow |= {1 << i}",
            ]
        lines.append("    return grow")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


STEP_MODULES_AFTER = 100_000
"""In the ``auto`` mode of `step_modules_mode`, a step's module is compiled (in the background) once the step
has taken this many events and no earlier process left it compiled."""


def step_modules_mode() -> str:
    """How fused steps get their step module (`StepModule`), from ``$STOREY_STEP_MODULES``:

    ``auto`` (default)
        Load it at the step's start if an earlier process compiled it (numba's disk cache; ~0.04 s), else
        compile it on a background thread once the step has taken `STEP_MODULES_AFTER` events (a few
        seconds of one core, once per plan and machine) and switch to it when it is ready. Short flows,
        such as tests and notebook cells, never compile one.
    ``eager``
        Compile (or load) it when the step starts.
    ``off``
        Never: the generic module only.

    Both modules give the same bits, so the mode changes speed only.
    """
    mode = os.environ.get("STOREY_STEP_MODULES", "auto")
    if mode not in ("auto", "eager", "off"):
        msg = f"STOREY_STEP_MODULES must be auto, eager or off, got {mode!r}"
        raise ValueError(msg)
    return mode


_DIGEST: list[bytes] = []


def _generator_digest() -> bytes:
    """A hash of the code that writes step modules (this module and the folding), so that a module cached by
    another version of it is not reused."""
    if not _DIGEST:
        from storey.aggregations.kernels import _codegen

        digest = hashlib.sha256()
        for path in (__file__, _codegen.__file__):
            with open(path, "rb") as handle:
                digest.update(handle.read())
        _DIGEST.append(digest.digest())
    return _DIGEST[0]


class StepModule:
    """The compiled module of one fused step's parameters (`_Module.step_source`), on disk by a hash of the
    code that writes it, the generic module's source and the parameters."""

    def __init__(self, module: _Module, ctx: np.ndarray) -> None:
        key = _generator_digest() + module.source.encode() + repr(ctx.shape).encode() + ctx.tobytes()
        self.name = f"storey_step_{hashlib.sha256(key).hexdigest()[:20]}"
        self._module = module
        self._ctx = ctx.copy()

    def compiled_before(self) -> bool:
        """Whether a process compiled it already (its numba cache is on disk)."""
        folder = cache_dir()
        return folder is not None and (folder / f"{self.name}.compiled").exists()

    def load(self, signatures: Sequence[Any] = ()) -> Any:
        """Its ``step_rows``, compiled (or loaded from numba's cache) for `signatures` (a dispatcher's), else
        for the lane's argument types."""
        rows = load_named_module(self.name, lambda: self._module.step_source(self._ctx)).step_rows
        for signature in signatures:
            rows.compile(signature)
        if not signatures:
            _warm(rows, self._ctx.shape[0] - 1, self._ctx.shape[1])
        folder = cache_dir()
        if folder is not None:
            (folder / f"{self.name}.compiled").touch()
        return rows

    def compile_in_child(self) -> bool:
        """Compile it in a child process at low priority (numba caches it on disk; the child shares no GIL
        with the flow), so that `load` then only loads it. ``False`` without a cache directory."""
        folder = cache_dir()
        if folder is None:
            return False
        load_named_module(self.name, lambda: self._module.step_source(self._ctx))  # writes the file
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        n, width = self._ctx.shape[0] - 1, self._ctx.shape[1]
        code = "import sys; from storey.aggregations._compiled_state import warm_step_module; "
        code += "warm_step_module(*sys.argv[1:])"
        child = subprocess.Popen(
            [sys.executable, "-c", code, self.name, str(n), str(width)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if hasattr(os, "setpriority"):  # POSIX: behind the flow's own threads
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, child.pid, 10)
        output, _ = child.communicate()
        if child.returncode:
            msg = f"compiling step module {self.name} failed:\n{output.decode(errors='replace')}"
            raise RuntimeError(msg)
        return True


def _warm(rows: Any, n: int, width: int) -> None:
    """Compile `rows` (a ``step_rows``) for the argument types the batch lane passes, on empty arrays."""
    ints = np.zeros(0, np.int64)
    rows(
        ints, ints, ints, np.zeros((0, n), np.float64), np.zeros((1, 2 * n), np.int64),
        np.zeros((n + 1, width), np.int64), np.zeros((0, width), np.int64), ints, np.zeros(1, np.int64), ints,
        ints, np.zeros(2, np.int64), np.zeros(1, np.int64),
    )  # fmt: skip


def warm_step_module(name: str, n: str, width: str) -> None:
    """The child process of `StepModule.compile_in_child`: compile the written module `name` (numba caches
    it)."""
    from storey.aggregations.kernels.compiled import load_named_module

    def missing() -> str:
        msg = f"step module {name!r} was not written"
        raise FileNotFoundError(msg)

    _warm(load_named_module(name, missing).step_rows, int(n), int(width))


_MODULES: dict[tuple[tuple[str, ...], tuple[str, ...]], _Module] = {}
_BUILTIN_AGGREGATIONS = ("count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev")


def _module_for(kernel_names: Sequence[str], aggregation_names: Sequence[str]) -> _Module:
    """The module over the built-in kernels and aggregations plus the plan's own (memoised)."""
    from storey.aggregations.kernels._registry import BUILTIN_KERNEL_ORDER
    from storey.aggregations.kernels._registry import kernel_names as registered

    wanted = set(BUILTIN_KERNEL_ORDER) | set(kernel_names)
    kernels = tuple(k for k in registered() if k in wanted)
    aggs = tuple(_BUILTIN_AGGREGATIONS) + tuple(
        a for a in aggregation_names if a not in _BUILTIN_AGGREGATIONS
    )
    key = (kernels, aggs)
    module = _MODULES.get(key)
    if module is None:
        module = _MODULES[key] = _Module([get_kernel(k) for k in kernels], [get_aggregation(a) for a in aggs])
    return module


def supports(plan: Any) -> str | None:
    """``None`` when `plan` can use `CompiledKeyState`, else the reason it cannot."""
    for name in plan.kernels:
        if not get_kernel(name).fusable:
            return f"kernel {name!r} has no statement templates"
    for name in plan.aggregations:
        if _result_is_int(get_aggregation(name)) is None:
            return f"aggregation {name!r} has no fixed int or float result type"
    mv = plan.max_value
    if isinstance(mv, int) and not isinstance(mv, bool) and not -(2**63) <= mv < 2**63:
        return f"max_value {mv} does not fit in int64"
    return None


class AddressBook:
    """The address and length of every buffer of the keys a batched fused step runs (``arr[row, 2i]`` and
    ``arr[row, 2i + 1]`` for aggregator ``i`` of the key at ``row``), kept current by the states themselves
    (a growing buffer writes its new address). ``rows`` maps a key to its row, ``keys`` and ``states`` a row
    to the key and its states; rows of the `MarkBoard` ``board`` are the same."""

    __slots__ = ("arr", "board", "grow", "keys", "last", "rows", "states")

    def __init__(self, width: int, board: MarkBoard | None = None) -> None:
        self.arr = np.zeros((256, width), np.int64)
        self.grow = np.zeros(256, np.int64)  # per row: the aggregators whose buffers must grow (step_rows)
        self.last = np.zeros(256, np.int64)  # per row: the key's last row in a batch (step_rows)
        self.rows: dict[Any, int] = {}
        self.keys: list[Any] = []
        self.states: list[tuple[CompiledKeyState, ...]] = []
        self.board = board  # the keys' last-event marks, by the same rows

    def add(self, key: Any, states: tuple[CompiledKeyState, ...]) -> None:
        """Give `key` a row for its `states` (which then keep it current)."""
        row = len(self.states)
        if row == len(self.arr):
            arr = np.zeros((2 * row, self.arr.shape[1]), np.int64)
            arr[:row] = self.arr
            self.arr = arr
            grow = np.zeros(2 * row, np.int64)
            grow[:row] = self.grow
            self.grow = grow
            self.last = np.zeros(2 * row, np.int64)  # read only where a batch just wrote it
        self.states.append(states)
        self.keys.append(key)
        self.rows[key] = row
        if self.board is not None:
            self.board.add_row()
        for i, st in enumerate(states):
            st._book = self
            st._row = (row, 2 * i)
            self.arr[row, 2 * i] = st._a
            self.arr[row, 2 * i + 1] = st._z


class CompiledKeyState(KeyState):
    """`KeyState` over one numpy buffer per key, run by numba (see the module docstring).

    ``_b`` is the int64 buffer; ``_o``/``_oi`` are float64/int64 views of its result words (only those the
    plan's features need); ``_a``/``_z`` its address and length. All are replaced when the buffer grows.
    """

    __slots__ = ("_a", "_b", "_book", "_o", "_oi", "_row", "_z")

    _IP: ClassVar[np.ndarray]
    _HDR: ClassVar[int]
    _W: ClassVar[int]
    _CACHES: ClassVar[tuple[int, int]]  # [first, stop) words of the window caches
    _OUT: ClassVar[tuple[int, int, bool, bool]]  # result words [first, stop), float view?, int view?
    _FIELDS: ClassVar[tuple[tuple[int, bool], ...]]  # per row field: (column in a row, is int)
    _KINDS: ClassVar[tuple[bool, ...]]  # per feature: whether it is an int
    _MODULE: ClassVar[_Module]  # the generated module the numba functions come from
    _ENC_FIELDS: ClassVar[bytes]  # the blob's field list (§7.2)

    def __init__(self, H: int = NO_TIME, tiles: int = INIT_TILES) -> None:
        self._book: AddressBook | None = None
        b = np.zeros(self._HDR + tiles * self._W, np.int64)
        b[B_H : B_M + 1] = (H, H // self._P)
        self._set(b)

    # H and M live in the buffer, where the batched fused path (``step_rows``) advances them
    @property  # type: ignore[override]
    def H(self) -> int:
        return int(self._b[B_H])

    @H.setter
    def H(self, value: int) -> None:
        self._b[B_H] = value

    @property  # type: ignore[override]
    def M(self) -> int:
        return int(self._b[B_M])

    @M.setter
    def M(self, value: int) -> None:
        self._b[B_M] = value

    def _set(self, b: np.ndarray) -> None:
        self._b = b
        self._a = addressof(c_char.from_buffer(b))  # address and length, for the batched fused path
        self._z = len(b)
        book = self._book
        if book is not None:
            book.arr[self._row[0], self._row[1]] = self._a
            book.arr[self._row[0], self._row[1] + 1] = self._z
        lo, hi, floats, ints = self._OUT
        if floats:
            self._o = b[lo:hi].view(np.float64)
        if ints:
            self._oi = b[lo:hi]

    @classmethod
    def from_tiles(cls, H: int, keys: Sequence[int], rows: Sequence[Sequence[Any]]) -> CompiledKeyState:
        n_tiles = len(keys)
        st = cls(H, max(n_tiles, INIT_TILES))
        if n_tiles:
            st._b[B_END] = n_tiles
            block_i, block_f = st._block(0, n_tiles)
            block_i[:, 0] = keys
            for j, (col, is_int) in enumerate(cls._FIELDS):
                (block_i if is_int else block_f)[:, col] = [r[j] for r in rows]
        return st

    def _block(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, end) as (int64, float64) 2-D views."""
        block = self._b[self._HDR + start * self._W : self._HDR + end * self._W].reshape(-1, self._W)
        return block, block.view(np.float64)

    def _grow(self) -> None:
        old = self._b
        room = (len(old) - self._HDR) // self._W
        # small buffers quadruple (fewer regrowths while a key's history fills), large ones double
        b = np.zeros(self._HDR + (4 if room < GROW_4X_BELOW else 2) * room * self._W, np.int64)
        b[: len(old)] = old
        self._set(b)

    # -- inspection (new lists) -------------------------------------------------------------------------

    def _live(self, lo: int | None = None) -> tuple[list[int], list[tuple[Any, ...]]]:
        b = self._b
        block_i, block_f = self._block(int(b[B_START]), int(b[B_END]))
        keys = block_i[:, 0]
        first = 0 if lo is None else int(np.searchsorted(keys, lo, side="left"))
        columns = [(block_i if is_int else block_f)[first:, col].tolist() for col, is_int in self._FIELDS]
        return keys[first:].tolist(), list(zip(*columns, strict=True))

    @property
    def keys(self) -> list[int]:  # type: ignore[override]
        b = self._b
        start, end = int(b[B_START]), int(b[B_END])
        return b[self._HDR + start * self._W : self._HDR + end * self._W : self._W].tolist()

    @property
    def rows(self) -> list[tuple[Any, ...]]:  # type: ignore[override]
        return self._live()[1]

    def retained(self) -> tuple[list[int], list[tuple[Any, ...]]]:
        return self._live(self.M - self._NRET)

    def encode(self) -> bytes:
        """The blob of `KeyState.encode`, straight from the buffer's retained rows (`blob.encode_rows`)."""
        b = self._b
        start, end, H, M = b[:4].tolist()
        W = self._W
        lo = self._HDR + start * W
        hi = self._HDR + end * W
        first = int(b[lo:hi:W].searchsorted(M - self._NRET))
        return encode_rows(H, self._P, self._ENC_FIELDS, b[lo + first * W : hi].reshape(-1, W))

    def copy(self) -> CompiledKeyState:
        st = type(self).__new__(type(self))
        st._book = None
        b = self._b.copy()  # H and M included
        lo, hi = self._CACHES
        b[lo:hi] = 0  # caches start empty
        st._set(b)
        return st


def _methods_source(names: Sequence[str], kinds: Sequence[bool], count_only: bool) -> str:
    """The per-plan Python methods: argument checks, one numba call, results to Python objects.

    `kinds[i]` tells whether feature ``names[i]`` is an int (read through ``_oi``) or a float (``_o``).
    """
    reads = []
    if not all(kinds):
        reads.append("x = self._o.tolist()")
    if any(kinds):
        reads.append("y = self._oi.tolist()")
    picks = [f"{'y' if is_int else 'x'}[{j}]" for j, is_int in enumerate(kinds)]
    emit = "\n".join(reads + [f"out[{name!r}] = {pick}" for name, pick in zip(names, picks, strict=True)])
    to_float = "value = 0.0" if count_only else "if type(value) is not float:\n    value = float(value)"
    return f"""
def add(self, value, t):
{indent(to_float, 1)}
    k = t // P
    if nb_add(self._b, k, value, t, self.M - NRET, ip):
        self._grow()
        nb_add(self._b, k, value, t, self.M - NRET, ip)


def add_evaluate(self, value, t, out):
    k = t // P
    if k < self.M - N1:
        self.add(value, t)
        return False
{indent(to_float, 1)}
    if nb_add_evaluate(self._b, k, value, t, self.M - NRET, ip):
        self._grow()
        nb_add_evaluate(self._b, k, value, t, self.M - NRET, ip)
{indent(emit, 1)}
    return True


def evaluate(self, tau, out):
    k = tau // P
    if k < self.M - N1:
        return False
    nb_evaluate(self._b, k, ip)
{indent(emit, 1)}
    return True


def values(self, tau):
    k = tau // P
    if k < self.M - N1:
        return None
    nb_evaluate(self._b, k, ip)
{indent(chr(10).join(reads), 1)}
    return ({", ".join(picks)},)


def has_data(self, tau):
    k = tau // P
    if k < self.M - N1:
        return False
    lo, hi = self._data_range(k)
    return nb_has_data(self._b, lo, hi, ip)
"""


def compiled_state_class(plan: Any, attrs: dict[str, Any]) -> type[CompiledKeyState]:
    """The per-plan subclass of `CompiledKeyState` (`attrs`: the plan constants every state class gets).

    Its hot methods are generated per plan (constants and feature names inlined); the numba functions are
    compiled (or loaded from the on-disk cache) here, so a failure shows at plan construction.
    """
    module = _module_for(plan.kernels, plan.aggregations)
    fns = module.load()
    nw = len(plan.windows.windows)
    n_agg = len(plan.aggregations)
    W = 1 + len(plan.row_fields)
    CS = W + N_CEXTRA
    CB = B_CB
    OUT = CB + nw * CS
    HDR = OUT + n_agg * nw
    capped_count = "count" in plan.aggregations and plan.max_value is not None
    float_count = capped_count and isinstance(plan.max_value, float)
    ip = np.zeros(module.ip_win + nw + n_agg, np.int64)
    ipf = ip.view(np.float64)
    ip[IP_N1] = attrs["_N1"]
    ip[IP_NRET] = attrs["_NRET"]
    ip[IP_NMAX] = attrs["_NMAX"]
    ip[IP_KIND] = attrs["_KIND"]
    for slot, value in ((IP_W, W), (IP_NW, nw), (IP_CS, CS), (IP_CB, CB), (IP_OUT, OUT), (IP_HDR, HDR)):
        ip[slot] = value
    ip[IP_NAGG] = n_agg
    ip[IP_CAPPED] = plan.cap is not None
    ipf[IP_CAPF] = 0.0 if plan.cap is None else plan.cap
    ip[IP_CCMODE] = 0 if not capped_count else (2 if float_count else 1)
    if capped_count:
        if float_count:
            ipf[IP_CCAPF] = plan.max_value
        else:
            ip[IP_CCAPI] = plan.max_value
    acc_kernels = {k for k in module.kernel_index if k in plan.kernels} & (
        {"count"} | {k for a in plan.aggregations for k in get_aggregation(a).kernels}
    )
    column = {f: 1 + j for j, f in enumerate(plan.row_fields)}  # blob order: `encode` transposes rows
    for name, i in module.kernel_index.items():
        ip[IP_FLAGS + i] = name in plan.kernels
        ip[module.ip_acc + i] = name in acc_kernels
    for f, j in module.field_index.items():
        ip[module.ip_off + j] = column.get(f, -1)
    ip[IP_DELTA] = acc_kernels == {"count"} and not float_count
    ip[module.ip_win : module.ip_win + nw] = plan.windows.tiles_per_window
    ip[module.ip_win + nw :] = [module.agg_index[a] for a in plan.aggregations]
    ip.setflags(write=False)

    # feature order is aggregation-major, as the result words are
    ints = [
        module.agg_int[module.agg_index[a]] and not (a == "count" and float_count) for a in plan.aggregations
    ]
    names = [f"{plan.name}_{a}_{w}" for a in plan.aggregations for w in plan.windows.windows]
    kinds = [is_int for is_int in ints for _ in range(nw)]
    ns: dict[str, Any] = {
        "P": attrs["_P"],
        "N1": attrs["_N1"],
        "NRET": attrs["_NRET"],
        "ip": ip,
        "nb_add": fns.add,
        "nb_add_evaluate": fns.add_evaluate,
        "nb_evaluate": fns.evaluate,
        "nb_has_data": fns.has_data,
    }
    source = _methods_source(names, kinds, tuple(plan.kernels) == ("count",))
    compile_function(source, "add", ns, f"<storey compiled state {plan.name}>")
    fields = tuple((column[f], module.fields[module.field_index[f]][1] == "i8") for f in plan.row_fields)
    body = dict(attrs)
    body.update({name: ns[name] for name in ("add", "add_evaluate", "evaluate", "values", "has_data")})
    body.update(
        {
            "__slots__": (),
            "_IP": ip,
            "_HDR": HDR,
            "_W": W,
            "_CACHES": (CB, OUT),
            "_OUT": (OUT, HDR, not all(kinds), any(kinds)),
            "_FIELDS": fields,
            # blob layout (§7.2): the row fields' names, then which buffer columns hold tiles and fields
            "_ENC_FIELDS": field_list(plan.row_fields),
            "_KINDS": tuple(kinds),
            "_MODULE": module,
            "methods_source": source,
        }
    )
    cls = type(f"CompiledKeyState_{plan.name}", (CompiledKeyState,), body)
    warm = cls(0)  # compile (or load) every function now
    warm.observe(0)
    warm.add_evaluate(1.0, 0, {})
    warm.update(1.0, 0)
    warm.evaluate(0, {})
    warm.has_data(0)
    return cls
