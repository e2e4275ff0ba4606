"""Source generation for the compiled frames engine (numba), from the kernels' own statement templates.

The generated module holds, per aggregator ``i``:

``add_i``
    the §5.2 tile update of one accepted, non-skipped value: find or insert the tile (per-key tiles live in
    a segment of a shared pool, ascending, with retention at append as `KeyState` does), then the kernels'
    ``update_code`` templates exactly as `storey.aggregations._fused` splices them (same order, same caps);
``eval_i``
    the §5.3 canonical fold as of τ: per window, the left fold of the non-empty closed tiles oldest → newest
    (``merge_code`` templates), merged with the tile of τ last, then each aggregation's finalisation. The
    closed-part fold is cached per key and window and *extended* only while its oldest tile is unchanged,
    which performs exactly the uncached fold's merges;
``has_i``
    whether the largest window as of τ holds data (period/window policies);

and one ``run`` function: the arrival-order event loop with the emit-policy scheduler of
`storey.aggregations.emitter` (step clock, firing pass before the event, the event's own emission, the
termination flush), resumable when an output buffer or a tile pool is full.

Window lengths, periods and caps are runtime parameters, so one compiled module serves every aggregator
of the same *shape* (kernels, aggregations, number of windows, window type, cap kind). Compiled with
`storey.aggregations.kernels.compiled.njit`: no fastmath, no parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storey.aggregations._fused import _merge_block, _update_block
from storey.aggregations.kernels import get_aggregation, get_kernel
from storey.aggregations.kernels._codegen import indent, rename
from storey.aggregations.state import AggregatorPlan

__all__ = ["AggShape", "njit", "step_source"]


# per-key header columns
H_, M_, BASE_, CAP_, START_, LEN_, EPOCH_ = range(7)
N_HD = 7
# cached window folds (ci array): valid, first and last tile folded, their positions in the pool and the key's
# epoch when cached (positions stay valid while no tile row moves), then the accumulator's int fields
CI_VALID, CI_FIRST, CI_LAST, CI_PFIRST, CI_PLAST, CI_EPOCH = range(6)
CI_ACC = 6
# int parameters per aggregator
IP_P, IP_N1, IP_NRET, IP_NMAX, IP_SEG0, IP_CCAPI, IP_FIXED = range(7)
IP_NW = 7  # window lengths in tiles follow
# float parameters
FP_CAP, FP_CCAPF = range(2)

# run() status codes
DONE, NEED_OUT, NEED_POOL, INVALID_VALUE = range(4)
# counters (ctr array)
C_OUT, C_POS, C_EVENTS, C_LATE, C_SKIPPED, C_STATUS, C_ARG = range(7)
N_CTR = 8
# emitter ints (em array)
E_C, E_NEXT, E_HAS_NEXT, E_SEEN, E_SEQ, E_HEAP = range(6)
N_EM = 6
# per-key emitter columns (ek array)
K_COUNT, K_EPISODE, K_LATEST_T, K_LATEST_REF = range(4)


def live_merge(block: str, fields: Sequence[str], reads: set[str]) -> tuple[str, tuple[str, ...]]:
    """The statements of a merge `block` (``a_<f>``, ``b_<f>`` -> ``<f>``) that the fields in `reads` depend
    on, and the accumulator fields they carry (in `fields` order). A field is carried when it is read, or
    when a kept statement reads its ``a_``/``b_`` operand; each kept statement is unchanged (same
    expressions, same order), so the carried fields get exactly the bits of the full merge."""
    import ast

    from storey.aggregations.kernels._codegen import names_in

    stmts = ast.parse(block).body
    carried = {f for f in fields if f in reads}
    while True:
        live = set(carried)
        kept = []
        for st in reversed(stmts):
            stored = {n.id for n in ast.walk(st) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            if stored & live or not isinstance(st, ast.Assign):
                kept.append(st)
                live |= names_in(ast.unparse(st)) - (stored if isinstance(st, ast.Assign) else set())
        more = carried | {f for f in fields if f"a_{f}" in live or f"b_{f}" in live}
        if more == carried:
            break
        carried = more
    code = "\n".join(ast.unparse(st) for st in reversed(kept))
    return code, tuple(f for f in fields if f in carried)


def _literal(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "NAN"
        if value in (float("inf"), float("-inf")):
            return "INF" if value > 0 else "-INF"
        return repr(value)
    return repr(value)


class AggShape:
    """The compile-time shape of one aggregator and its layout in the generated code: its kernels,
    aggregations, number of windows and whether ``count`` is capped (with an int or a float).

    Everything else (window type, period, window lengths, `N`, caps) is passed at run time, so one compiled
    module serves many aggregators.
    """

    def __init__(self, plan: AggregatorPlan) -> None:
        self.plan = plan
        self.kernel_names = tuple(plan.kernels)
        self.kernels = [(i, get_kernel(k)) for i, k in enumerate(plan.kernels)]
        self.aggregations = tuple(plan.aggregations)
        self.n_windows = len(plan.windows.windows)
        self.fixed = plan.window_type == "fixed"
        self.row_fields = tuple(plan.row_fields)
        dtypes = {f: dt for _, k in self.kernels for f, dt in k.fields}
        self.i_fields = [f for f in self.row_fields if dtypes[f] == "i8"]
        self.f_fields = [f for f in self.row_fields if dtypes[f] == "f8"]
        emitted = {"count"} | {k for a in self.aggregations for k in get_aggregation(a).kernels}
        self.acc_kernels = [(i, k) for i, k in self.kernels if k.name in emitted]
        # the window folds carry only the fields some emitted result reads (e.g. not `m2` for `avg`): the
        # merges of the others are never read, and the tiles (the state) still hold every field
        reads = {"n"} | {f for a in self.aggregations for f in get_aggregation(a).reads}
        self.fold_merge, self.acc_fields = live_merge(
            _merge_block(self.acc_kernels), tuple(plan.fused.acc_fields), reads
        )
        self.capped = plan.cap is not None
        # an emitted count always goes through the capped sum Σ min(cap, n) (§5.3): without `max_value` the
        # int cap is 2**62, so the sum is exactly Σ n (one compiled shape for both); a float cap makes the
        # count a float (another shape)
        self.capped_count = "count" in self.aggregations
        self.float_count = self.capped_count and isinstance(plan.max_value, float)
        self.acc_slots = self.acc_fields + (("_cc",) if self.capped_count else ())
        # a count-only accumulator is exact integers: its cached window sum may also drop old tiles by
        # subtraction (the same integers as the left fold; never done for float fields)
        self.int_only = self.acc_fields == ("n",) and not self.float_count
        self.ai = [f for f in self.acc_fields if dtypes[f] == "i8"]
        self.af = [f for f in self.acc_fields if dtypes[f] == "f8"]
        if self.capped_count:
            (self.af if self.float_count else self.ai).append("_cc")
        self.empty = dict(zip(self.row_fields, plan.fused.empty_row, strict=True))
        # output columns: (aggregation index, window) -> ('i' | 'f', column)
        self.int_out: list[tuple[int, int]] = []
        self.float_out: list[tuple[int, int]] = []
        for j, a in enumerate(self.aggregations):
            is_int = a == "count" and not self.float_count
            for w in range(self.n_windows):
                (self.int_out if is_int else self.float_out).append((j, w))

    @property
    def key(self) -> tuple[Any, ...]:
        return (
            self.kernel_names,
            self.aggregations,
            self.n_windows,
            self.capped_count,
            self.float_count,
        )

    def feature_rows(self, oi: Any, of: Any, n: int) -> list[Any]:
        """The first `n` values of each feature, in feature order (aggregation-major, then window), from the
        generated code's int and float output rows."""
        out = []
        for ja in range(len(self.aggregations)):
            for w in range(self.n_windows):
                if (ja, w) in self.int_out:
                    out.append(oi[self.int_out.index((ja, w)), :n])
                else:
                    out.append(of[self.float_out.index((ja, w)), :n])
        return out

    @property
    def fusable(self) -> bool:
        return all(k.fusable for _, k in self.kernels)

    # -- snippets -----------------------------------------------------------------------------------------
    def load(self, prefix: str, row: str, fields: Sequence[str]) -> str:
        out = []
        for f in fields:
            if f in self.i_fields:
                out.append(f"{prefix}{f} = wi[{row}, {self.i_fields.index(f)}]")
            else:
                out.append(f"{prefix}{f} = wf[{row}, {self.f_fields.index(f)}]")
        return "\n".join(out)

    def store(self, row: str) -> str:
        out = []
        for f in self.row_fields:
            if f in self.i_fields:
                out.append(f"wi[{row}, {self.i_fields.index(f)}] = {f}")
            else:
                out.append(f"wf[{row}, {self.f_fields.index(f)}] = {f}")
        return "\n".join(out)

    def init_row(self, row: str) -> str:
        out = []
        for f in self.row_fields:
            v = _literal(self.empty[f])
            if f in self.i_fields:
                out.append(f"wi[{row}, {self.i_fields.index(f)}] = {v}")
            else:
                out.append(f"wf[{row}, {self.f_fields.index(f)}] = {v}")
        return "\n".join(out)

    def load_cache(self, w: int) -> str:
        out = []
        for f in self.acc_slots:
            if f in self.ai:
                out.append(f"a_{f} = ci[kid, {w}, {CI_ACC + self.ai.index(f)}]")
            else:
                out.append(f"a_{f} = cf[kid, {w}, {self.af.index(f)}]")
        return "\n".join(out)

    def store_cache(self, w: int) -> str:
        out = []
        for f in self.acc_slots:
            if f in self.ai:
                out.append(f"ci[kid, {w}, {CI_ACC + self.ai.index(f)}] = a_{f}")
            else:
                out.append(f"cf[kid, {w}, {self.af.index(f)}] = a_{f}")
        return "\n".join(out)

    # -- canonical bodies ---------------------------------------------------------------------------------
    # Names: the state arrays (hd, pk, wi, wf, ci, cf), parameters (ip, fp), inputs (kid, k, t, val, i, j)
    # and outputs (oi, of); every other name is local. `localize` renames them for one call site.
    def add_body(self) -> str:
        """Add the value of row ``i`` at time ``t`` to tile ``k`` of key ``kid`` (§5.2 step 3)."""
        # caps are always applied: without `max_value` the cap is +inf and ``x > inf`` is never true, so the
        # capped update is then exactly the uncapped one (one compiled shape for both)
        update = _update_block(self.kernels, True)
        mid = bsearch("q", "pk", "base + st", "base + st + ln", "k", left=True)
        return f"""
CAP = fp[{FP_CAP}]
base = hd[kid, {BASE_}]
cap = hd[kid, {CAP_}]
st = hd[kid, {START_}]
ln = hd[kid, {LEN_}]
p = -1
if ln > 0:
    p = base + st + ln - 1
    if pk[p] != k:
        if pk[p] < k:
            p = -1
        else:
            p = -2
if p == -1:
    # a new newest tile: retention first (tiles below M - NRET can never be read again)
    bound = hd[kid, {M_}] - ip[{IP_NRET}]
    while ln > 0 and pk[base + st] < bound:
        st += 1
        ln -= 1
    if ln == 0:
        st = 0
    if base < 0 or st + ln == cap:
        base, cap, st = room(pk, wi, wf, tops, a, base, cap, st, ln, ip[{IP_SEG0}])
        hd[kid, {EPOCH_}] += 1
    p = base + st + ln
    ln += 1
    pk[p] = k
{indent(self.init_row("p"), 1)}
elif p == -2:
{indent(mid, 1)}
    if pk[q] == k:
        p = q
    elif q == base + st and st > 0:
        st -= 1
        ln += 1
        p = q - 1
        pk[p] = k
{indent(self.init_row("p"), 2)}
    else:
        if st + ln == cap:
            off = q - (base + st)
            base, cap, st = room(pk, wi, wf, tops, a, base, cap, st, ln, ip[{IP_SEG0}])
            q = base + st + off
        move_rows(pk, wi, wf, q, base + st + ln, q + 1)
        hd[kid, {EPOCH_}] += 1
        p = q
        ln += 1
        pk[p] = k
{indent(self.init_row("p"), 2)}
hd[kid, {BASE_}] = base
hd[kid, {CAP_}] = cap
hd[kid, {START_}] = st
hd[kid, {LEN_}] = ln
{self.load("", "p", self.row_fields)}
{update}
{self.store("p")}
for w in range({self.n_windows}):
    if ci[kid, w, 0] == 1 and ci[kid, w, 1] <= k and k <= ci[kid, w, 2]:
        ci[kid, w, 0] = 0
"""

    def eval_body(self) -> str:
        """Features of key ``kid`` as of a time in tile ``k`` into output row ``j`` (§5.3); ``present``."""
        merge = self.fold_merge
        rebind = "\n".join(f"a_{f} = {f}" for f in self.acc_fields)
        contrib = "(CCAP if {n} > CCAP else {n})"
        cc = self.capped_count
        lines = []
        if cc:
            lines.append(f"CCAP = fp[{FP_CCAPF}]" if self.float_count else f"CCAP = ip[{IP_CCAPI}]")
            lines.append(f"CC0 = {'0.0' if self.float_count else '0'}")
        for f in self.acc_slots:  # every name is bound on every path (numba)
            init = "CC0" if f == "_cc" else _literal(self.empty[f])
            lines += [f"{f} = {init}", f"a_{f} = {init}", f"b_{f} = {init}"]
        lines += [
            f"s0 = hd[kid, {BASE_}] + hd[kid, {START_}]",
            f"e0 = s0 + hd[kid, {LEN_}]",
            locate("jc", "s0", "e0", "k"),
            "has_cur = jc < e0 and pk[jc] == k",
            "jw = jc",
            f"epoch = hd[kid, {EPOCH_}]",
        ]
        for w in range(self.n_windows):
            nw = f"ip[{IP_NW + w}]"
            lo = f"((k // {nw}) * {nw} if ip[{IP_FIXED}] else k - {nw} + 1)"
            fold = [
                "    for jj in range(start, jc):",
                indent(self.load("b_", "jj", self.acc_fields), 2),
                indent(merge, 2),
                indent(f"_cc = a__cc + {contrib.format(n='b_n')}" if cc else "", 2),
                indent(rebind, 2),
                indent("a__cc = _cc" if cc else "", 2),
                store_positions(w, 1),
                indent(self.store_cache(w), 1),
            ]
            if self.int_only:
                lines.append(self._int_window(w, lo, merge, contrib))
                continue
            block = [
                f"lo = {lo}",
                window_start(w, lo),
                "jw = j0",
                "has_acc = j0 < jc",
                "if has_acc:",
                "    first = pk[j0]",
                "    last = pk[jc - 1]",
                f"    if ci[kid, {w}, 0] == 1 and ci[kid, {w}, 1] == first and ci[kid, {w}, 2] <= last:",
                # the cached left fold starts at the same oldest tile: continue it with the newer tiles
                indent(self.load_cache(w), 2),
                f"        if ci[kid, {w}, 2] != last:",
                f"            if ci[kid, {w}, {CI_EPOCH}] == epoch:",
                f"                start = ci[kid, {w}, {CI_PLAST}] + 1",
                "            else:",
                "                start = jc",
                f"                while start > j0 and pk[start - 1] > ci[kid, {w}, 2]:",
                "                    start -= 1",
                indent("\n".join(fold), 2),
                "    else:",
                indent(self.load("a_", "j0", self.acc_fields), 2),
                indent(f"a__cc = CC0 + {contrib.format(n='a_n')}" if cc else "", 2),
                "        start = j0 + 1",
                indent("\n".join(fold), 1),
                # the tile of τ last; an absent operand is the empty summary (taken as the other operand)
                "    if has_cur:",
                indent(self.load("b_", "jc", self.acc_fields), 2),
                indent(merge, 2),
                indent(f"_cc = a__cc + {contrib.format(n='b_n')}" if cc else "", 2),
                "    else:",
                indent("\n".join(f"{f} = a_{f}" for f in self.acc_slots), 2),
                "elif has_cur:",
                indent(self.load("", "jc", self.acc_fields), 1),
                indent(f"_cc = CC0 + {contrib.format(n='n')}" if cc else "", 1),
                "else:",
                "    n = 0",
                indent("_cc = CC0" if cc else "", 1),
            ]
            lines.append("\n".join(b for b in block if b.strip()))
            lines.append(self._outputs(w))
        body = "\n".join(lines)
        return (
            f"present = False\nif k >= hd[kid, {M_}] - ip[{IP_N1}]:\n    present = True\n{indent(body, 1)}\n"
        )

    def _outputs(self, w: int) -> str:
        out = []
        for col, (ja, ww) in enumerate(self.int_out):
            if ww == w:
                out.append(f"oi[{col}, j] = {self._final(ja)}")
        for col, (ja, ww) in enumerate(self.float_out):
            if ww == w:
                out.append(f"of[{col}, j] = {self._final(ja)}")
        return "\n".join(out)

    def _int_window(self, w: int, lo: str, merge: str, contrib: str) -> str:
        """One window of a count-only accumulator: the cached sum is moved to the new range by adding
        the tiles that entered it and subtracting the tiles that left it (exact int64 arithmetic)."""
        cc = self.capped_count
        add = [self.load("b_", "jj", ["n"]), merge]
        if cc:
            add.append(f"_cc = a__cc + {contrib.format(n='b_n')}")
            add.append("a__cc = _cc")
        add.append("a_n = n")
        sub = [self.load("b_", "jj", ["n"]), "a_n = a_n - b_n"]
        if cc:
            sub.append(f"a__cc = a__cc - {contrib.format(n='b_n')}")
        add_s = indent("\n".join(add), 3)
        sub_s = indent("\n".join(sub), 3)
        block = f"""
lo = {lo}
{window_start(w, "lo")}
jw = j0
has_acc = j0 < jc
if has_acc:
    first = pk[j0]
    last = pk[jc - 1]
    c_first = ci[kid, {w}, 1]
    c_last = ci[kid, {w}, 2]
    if ci[kid, {w}, 0] == 1 and first <= c_last and c_last <= last and c_first >= pk[s0]:
{indent(self.load_cache(w), 2)}
        if ci[kid, {w}, {CI_EPOCH}] == epoch:
            pf = ci[kid, {w}, {CI_PFIRST}]
            pl = ci[kid, {w}, {CI_PLAST}] + 1
        else:
            pf = j0
            while pf > s0 and pk[pf - 1] >= c_first:
                pf -= 1
            while pf < jc and pk[pf] < c_first:
                pf += 1
            pl = jc
            while pl > pf and pk[pl - 1] > c_last:
                pl -= 1
        for jj in range(pf, j0):
{sub_s}
        for jj in range(j0, pf):
{add_s}
        for jj in range(pl, jc):
{add_s}
    else:
        a_n = 0
{"        a__cc = CC0" if cc else ""}
        for jj in range(j0, jc):
{add_s}
{store_positions(w, 1)}
{indent(self.store_cache(w), 1)}
    if has_cur:
{indent(self.load("b_", "jc", ["n"]), 2)}
{indent(merge, 2)}
{indent(f"_cc = a__cc + {contrib.format(n='b_n')}" if cc else "", 2)}
    else:
        n = a_n
{indent("_cc = a__cc" if cc else "", 2)}
elif has_cur:
{indent(self.load("", "jc", ["n"]), 1)}
{indent(f"_cc = CC0 + {contrib.format(n='n')}" if cc else "", 1)}
else:
    n = 0
{indent("_cc = CC0" if cc else "", 1)}
{self._outputs(w)}
"""
        return "\n".join(line for line in block.splitlines() if line.strip())

    def _final(self, ja: int) -> str:
        name = self.aggregations[ja]
        agg = get_aggregation(name)
        if name == "count" and self.capped_count:
            return "CC0 if n == 0 else _cc"
        return f"{_literal(agg.empty)} if n == 0 else ({agg.expr})"

    def has_body(self) -> str:
        """Whether the largest window as of a time in tile ``k`` holds data; ``found``."""
        lo = f"((k // ip[{IP_NMAX}]) * ip[{IP_NMAX}] if ip[{IP_FIXED}] else k - ip[{IP_NMAX}] + 1)"
        search = bsearch("jj", "pk", "s0", "e0", lo, left=True)
        return f"""
found = False
if k >= hd[kid, {M_}] - ip[{IP_N1}]:
    s0 = hd[kid, {BASE_}] + hd[kid, {START_}]
    e0 = s0 + hd[kid, {LEN_}]
{indent(search, 1)}
    found = jj < e0 and pk[jj] <= k
"""

    def prefetch_ahead(self) -> str:
        """Prefetch hints for the state of the keys a few rows ahead in the grouped loop (a batch visits each
        key for a few rows, and its state is then rarely in cache): the key's header and cached folds 16 rows
        ahead; 8 rows ahead (its header is then cached), its oldest and newest tiles, and on its first row
        the tiles from the largest window's cached start on (which its folds read)."""
        w = self.n_windows - 1
        floats = bool(self.f_fields)  # a count-only shape has no float columns (nor cached float folds)
        cf_lines = (
            "\n    c2 = k2 * cf.shape[1] * cf.shape[2]\n    for x in range(0, cf.shape[1] * cf.shape[2], 8):"
            "\n        prefetch(cf, c2 + x)"
            if self.af
            else ""
        )
        wf_new = (
            "\n            prefetch(wf, (e2 - 1) * wf.shape[1])"
            "\n            prefetch(wf, e2 * wf.shape[1])"  # the next row: where a new tile goes
        )
        wf_first = (
            "\n                for x in range(f2 * wf.shape[1], e2 * wf.shape[1], 8):"
            "\n                    prefetch(wf, x)"
        )
        return f"""if pos + 16 < n:
    k2 = kid_arr[pos + 16]
    prefetch(hd, k2 * {N_HD})
    c2 = k2 * ci.shape[1] * ci.shape[2]
    for x in range(0, ci.shape[1] * ci.shape[2], 8):
        prefetch(ci, c2 + x){cf_lines}
if pos + 8 < n:
    k2 = kid_arr[pos + 8]
    b2 = hd[k2, {BASE_}]
    if b2 >= 0:
        s2 = b2 + hd[k2, {START_}]
        e2 = s2 + hd[k2, {LEN_}]
        if e2 > s2:
            prefetch(pk, s2)
            prefetch(pk, e2 - 1)
            prefetch(wi, (e2 - 1) * wi.shape[1]){wf_new if floats else ""}
            if ci[k2, {w}, {CI_VALID}] == 1 and kid_arr[pos + 7] != k2:
                # a key's first row: the tiles from the largest window's cached start to the newest
                f2 = max(ci[k2, {w}, {CI_PFIRST}], s2)
                for x in range(f2, e2, 8):
                    prefetch(pk, x)
                for x in range(f2 * wi.shape[1], e2 * wi.shape[1], 8):
                    prefetch(wi, x){wf_first if floats else ""}"""

    # -- the per-aggregator module ------------------------------------------------------------------------
    def module_source(self) -> str:
        """Functions for this shape: ``add``, ``evaluate``, ``has`` (called per event by the arrival-order
        loop) and ``grouped`` (the whole key-grouped loop of one aggregator, with add and evaluate inlined,
        for policies without timers; its rows are gathered in key-grouped order)."""
        add_fn = (
            f"def add(hd, pk, wi, wf, ci, tops, a, kid, k, v, t, ip, fp):\n{indent(self.add_body(), 1)}\n"
        )
        eval_fn = (
            "def evaluate(hd, pk, wi, wf, ci, cf, kid, k, oi, of, j, ip, fp):\n"
            f"{indent(self.eval_body(), 1)}\n    return present\n"
        )
        has_fn = f"def has(hd, pk, kid, k, ip):\n{indent(self.has_body(), 1)}\n    return found\n"
        shared = {x: x for x in ("hd", "pk", "wi", "wf", "ci", "cf", "ip", "fp", "oi", "of", "kid", "t", "i")}
        shared.update({"j": "i", "tops": "tops", "a": "a", "k": "kt", "v": "v"})
        add_inline = localize(self.add_body(), "add", shared)
        eval_inline = localize(self.eval_body(), "ev", shared)
        grouped = f"""
def grouped(n, kid_arr, tt, tk, val, sta, flt, hd, pk, wi, wf, ci, cf, ip, fp, oi, of, pr, tops, a, maxseg,
            emitted, all_emitted, late, ctr):
    # one aggregator over a batch's rows gathered in key-grouped order (arrival order within a key; keys are
    # independent without timers: every input and output array is in that order, read and written
    # sequentially); the features of row i go to output row i
    pos = ctr[{C_POS}]
    skipped = 0
    ctr[{C_STATUS}] = {DONE}
    while pos < n:
        if tops[a, 0] + maxseg > pk.shape[0]:
            ctr[{C_STATUS}] = {NEED_POOL}
            break
        i = pos
{indent(self.prefetch_ahead(), 2)}
        kid = kid_arr[i]
        t = tt[i]
        kt = tk[i]
        if t > hd[kid, {H_}]:
            hd[kid, {H_}] = t
            hd[kid, {M_}] = kt
        if kt < hd[kid, {M_}] - ip[{IP_N1}]:
            late[i] = True
        elif flt[i]:
            s = sta[i]
            if s == 0:
                v = val[i]
{indent(add_inline, 4)}
            elif s == 1:
                skipped += 1
            else:
                ctr[{C_STATUS}] = {INVALID_VALUE}
                break
        if all_emitted or emitted[i]:
{indent(eval_inline, 3)}
            pr[i] = _ev_present
        pos += 1
    ctr[{C_POS}] = pos
    ctr[{C_SKIPPED}] += skipped
"""
        parts = (_COMMON, add_fn, eval_fn, has_fn, grouped, self.asof_source())
        body = "\n\n".join(x.strip("\n") for x in parts)
        return _module(body, f"aggregator shape {self.key!r}")

    def asof_source(self) -> str:
        """``asof``: point-in-time features (§8.5) of labels sorted by ``(key, q)`` from events sorted by
        ``(key, tile)`` with input order within a tile, one key at a time in state slot 0; events whose
        `used` is false (filtered out or skipped) are passed over.

        Per label, the key's whole tiles before ``tile(q)`` are added (once: later labels reuse them), then
        the events of ``tile(q)`` with time ``≤ q`` (``< q`` unless `inclusive`), in input order, as a partial
        newest tile; the label is the canonical evaluation as of ``tile(q)`` and the partial tile is dropped
        again (it is rebuilt, complete, when a later label needs it).
        """
        shared = {x: x for x in ("hd", "pk", "wi", "wf", "ci", "cf", "ip", "fp", "oi", "of", "kid", "t", "j")}
        shared.update({"tops": "tops", "a": "a", "k": "kt", "v": "v"})
        add_inline = indent(localize(self.add_body(), "add", shared), 4)
        eval_inline = indent(localize(self.eval_body(), "ev", {**shared, "k": "kq"}), 2)
        return f"""
def asof(kids, times, vals, used, P, lk, lq, ltk, lrow, inclusive, h0, m0, hd, pk, wi, wf, ci, cf, ip, fp, oi,
         of, tops, a, maxseg, ctr):
    ne = len(kids)
    e = 0
    cur = -1
    kid = 0
    ctr[{C_STATUS}] = {DONE}
    for x in range(len(lk)):
        lab = lk[x]
        q = lq[x]
        kq = ltk[x]
        j = lrow[x]
        if lab != cur:
            cur = lab
            hd[0, {H_}] = h0
            hd[0, {M_}] = m0
            hd[0, {START_}] = 0
            hd[0, {LEN_}] = 0
            for w in range({self.n_windows}):
                ci[0, w, {CI_VALID}] = 0
            while e < ne and kids[e] < lab:
                e += 1
        partial = False
        y = e
        while y < ne:
            i = y
            if kids[i] != lab:
                break
            t = times[i]
            kt = t // P
            if kt > kq:
                break
            whole = kt < kq
            if used[i] and (whole or t < q or (inclusive and t == q)):
                if tops[a, 0] + maxseg > pk.shape[0]:
                    ctr[{C_STATUS}] = {NEED_POOL}
                    return
                if t > hd[0, {H_}]:
                    hd[0, {H_}] = t
                    hd[0, {M_}] = kt
                v = vals[i]
{add_inline}
                if not whole:
                    partial = True
            y += 1
            if whole:
                e = y
{eval_inline}
        if partial:
            hd[0, {LEN_}] -= 1
"""


def _module(body: str, what: str) -> str:
    body = "@njit\n" + body.replace("\ndef ", "\n@njit\ndef ")
    body = body.replace("\n\n@njit\ndef ", "\n\n\n@njit\ndef ")
    header = (
        f'"""Generated by storey.frames._codegen ({what}): do not edit."""\n\n'
        "import numpy as np\n\n"
        "from storey.aggregations.kernels._codegen import safe_sqrt\n"
        "from storey.frames._codegen import njit, prefetch\n\n"
        "INF = float('inf')\nNAN = float('nan')\n"
        "sqrt = njit(safe_sqrt)\n\n\n"
    )
    return header + body


def njit(fn: Any) -> Any:
    """``numba.njit`` with the parity settings (no fastmath, no parallel), without the GIL (the engine may
    run independent aggregators on threads), cached on disk for functions defined in a real file."""
    import os

    from storey.aggregations.kernels import compiled

    numba = compiled.require("numba")
    code = getattr(fn, "__code__", None)
    cache = code is not None and os.path.isfile(code.co_filename) and compiled._CACHE_OK
    return numba.njit(fastmath=False, parallel=False, nogil=True, cache=cache)(fn)


def __getattr__(name: str) -> Any:
    if name == "prefetch":  # imported by the generated modules (numba is imported only then)
        from storey.aggregations.kernels import compiled

        return compiled.prefetch
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


_GLOBALS = frozenset(
    {"float", "int", "range", "len", "bool", "abs", "min", "max", "sqrt", "NAN", "INF", "np", "math"}
    | {"room", "move_rows", "True", "False", "None"}
)


def localize(code: str, prefix: str, shared: dict[str, str]) -> str:
    """Rename a canonical body for one call site: shared names as given, other locals ``_<prefix>_<name>``."""
    return rename(code, lambda name: shared.get(name, None if name in _GLOBALS else f"_{prefix}_{name}"))


def store_positions(w: int, level: int) -> str:
    """Cache the folded range ``[j0, jc)`` of window `w`: its tiles, positions and the key's epoch."""
    values = ((CI_VALID, "1"), (CI_FIRST, "first"), (CI_LAST, "last"), (CI_PFIRST, "j0"))
    values += ((CI_PLAST, "jc - 1"), (CI_EPOCH, "epoch"))
    return indent("\n".join(f"ci[kid, {w}, {c}] = {v}" for c, v in values), level)


def window_start(w: int, lo: str) -> str:
    """``j0``: the first position with a tile ``>= lo``. From the cached position when no tile row of the
    key moved since (a few steps as the window slides), else scanning from the previous window's start."""
    return f"""if ci[kid, {w}, {CI_VALID}] == 1 and ci[kid, {w}, {CI_EPOCH}] == epoch:
    j0 = min(max(ci[kid, {w}, {CI_PFIRST}], s0), jc)
    while j0 < jc and pk[j0] < {lo}:
        j0 += 1
    while j0 > s0 and pk[j0 - 1] >= {lo}:
        j0 -= 1
else:
{indent(seek("j0", "jw", lo), 1)}"""


def locate(out: str, s0: str, e0: str, k: str) -> str:
    """``out`` = first position in ``[s0, e0)`` with ``pk[pos] >= k``; O(1) when ``k`` is at or after the
    newest tile (in-order events), else a binary search."""
    return (
        f"if {e0} > {s0} and pk[{e0} - 1] < {k}:\n    {out} = {e0}\n"
        f"elif {e0} > {s0} and pk[{e0} - 1] == {k}:\n    {out} = {e0} - 1\nelse:\n"
        + indent(bsearch(out, "pk", s0, e0, k, left=True), 1)
    )


def seek(out: str, start: str, lo: str) -> str:
    """``out`` = first position in ``[s0, jc)`` with ``pk[pos] >= lo``, scanning from `start` (the previous
    window's start, a few tiles away), with a binary search after 32 steps."""
    return f"""{out} = {start}
{out}_steps = 0
while {out} > s0 and pk[{out} - 1] >= {lo} and {out}_steps < 32:
    {out} -= 1
    {out}_steps += 1
if {out} > s0 and pk[{out} - 1] >= {lo}:
{indent(bsearch(out + "_b", "pk", "s0", out, lo, left=True), 1)}
    {out} = {out}_b
while {out} < jc and pk[{out}] < {lo}:
    {out} += 1
"""


def bsearch(out: str, arr: str, lo: str, hi: str, x: str, *, left: bool) -> str:
    """Inline binary search: ``out`` = first position in ``[lo, hi)`` with ``arr[pos] >= x`` (``left``) or
    ``> x`` (not ``left``); ``arr`` ascending."""
    test = f"{arr}[{out}_mid] < {x}" if left else f"not ({x} < {arr}[{out}_mid])"
    return (
        f"{out} = {lo}\n{out}_hi = {hi}\nwhile {out} < {out}_hi:\n    {out}_mid = ({out} + {out}_hi) >> 1\n"
        f"    if {test}:\n        {out} = {out}_mid + 1\n    else:\n        {out}_hi = {out}_mid\n"
    )


N_SIZE_CLASSES = 48
"""Columns of the pool allocator's ``tops`` array per aggregator: the pool's end, then one free-list head
per segment size class (``SEG0 << c`` tiles; ``-1`` when empty)."""

_COMMON = """
def move_rows(pk, wi, wf, start, stop, dest):
    # move rows [start, stop) to dest (overlap-safe)
    if dest > start:
        for x in range(stop - 1, start - 1, -1):
            y = x - start + dest
            pk[y] = pk[x]
            for c in range(wi.shape[1]):
                wi[y, c] = wi[x, c]
            for c in range(wf.shape[1]):
                wf[y, c] = wf[x, c]
    else:
        for x in range(start, stop):
            y = x - start + dest
            pk[y] = pk[x]
            for c in range(wi.shape[1]):
                wi[y, c] = wi[x, c]
            for c in range(wf.shape[1]):
                wf[y, c] = wf[x, c]


def alloc(pk, tops, a, size, c):
    # a block of `size` tiles (size class c) from the class's free list, else from the end of the pool
    head = tops[a, 1 + c]
    if head >= 0:
        tops[a, 1 + c] = pk[head]
        return head
    nb = tops[a, 0]
    tops[a, 0] += size
    return nb


def room(pk, wi, wf, tops, a, base, cap, st, ln, seg0):
    # make room for one more tile at the end of a key's segment: allocate, compact, or move to a block
    # twice as large (the old block goes to its size class's free list: pk[block] links the list)
    if base < 0:
        return alloc(pk, tops, a, seg0, 0), seg0, 0
    if st > 0:
        move_rows(pk, wi, wf, base + st, base + st + ln, base)
        return base, cap, 0
    c = 0
    x = seg0
    while x < cap:
        x <<= 1
        c += 1
    nb = alloc(pk, tops, a, 2 * cap, c + 1)
    move_rows(pk, wi, wf, base, base + ln, nb)
    pk[base] = tops[a, 1 + c]
    tops[a, 1 + c] = base
    return nb, 2 * cap, 0


def heap_less(h, x, y):
    return h[x, 0] < h[y, 0] or (h[x, 0] == h[y, 0] and h[x, 1] < h[y, 1])


def heap_push(h, size, due, seq, key, ep):
    x = size
    h[x, 0] = due
    h[x, 1] = seq
    h[x, 2] = key
    h[x, 3] = ep
    while x > 0:
        parent = (x - 1) >> 1
        if heap_less(h, x, parent):
            for c in range(4):
                tmp = h[x, c]
                h[x, c] = h[parent, c]
                h[parent, c] = tmp
            x = parent
        else:
            break
    return size + 1


def heap_pop(h, size):
    # removes the smallest entry (copied to row `size - 1`); returns the new size
    last = size - 1
    for c in range(4):
        tmp = h[0, c]
        h[0, c] = h[last, c]
        h[last, c] = tmp
    x = 0
    while True:
        left = 2 * x + 1
        if left >= last:
            break
        child = left
        if left + 1 < last and heap_less(h, left + 1, left):
            child = left + 1
        if heap_less(h, child, x):
            for c in range(4):
                tmp = h[x, c]
                h[x, c] = h[child, c]
                h[child, c] = tmp
            x = child
        else:
            break
    return last
"""


def _run_source(shapes: Sequence[AggShape]) -> str:
    A = range(len(shapes))
    agg_args = ", ".join(
        f"tk{a}, val{a}, sta{a}, flt{a}, hd{a}, pk{a}, wi{a}, wf{a}, ci{a}, cf{a}, ip{a}, fp{a}, "
        f"oi{a}, of{a}, pr{a}"
        for a in A
    )

    def evaluate_all(kid: str, tau: str, own: bool, indent_level: int) -> str:
        out = []
        for a in A:
            k = f"tk{a}[i]" if own else f"{tau} // ip{a}[{IP_P}]"
            out.append(
                f"pr{a}[j] = eval{a}(hd{a}, pk{a}, wi{a}, wf{a}, ci{a}, cf{a}, {kid}, {k}, oi{a}, of{a}, j, "
                f"ip{a}, fp{a})"
            )
        return indent("\n".join(out), indent_level)

    def has_any(kid: str, tau: str) -> str:
        return " or ".join(f"has{a}(hd{a}, pk{a}, {kid}, {tau} // ip{a}[{IP_P}], ip{a})" for a in A)

    pool_checks = "\n".join(
        f"""        if tops[{a}, 0] + maxseg[{a}] > pk{a}.shape[0]:
            ctr[{C_STATUS}] = {NEED_POOL}
            ctr[{C_ARG}] = {a}
            break"""
        for a in A
    )
    apply_aggs = []
    for a in A:
        apply_aggs.append(f"""
            kt = tk{a}[i]
            if t > hd{a}[kid, {H_}]:
                hd{a}[kid, {H_}] = t
                hd{a}[kid, {M_}] = kt
            if kt < hd{a}[kid, {M_}] - ip{a}[{IP_N1}]:
                late = True
            elif flt{a}[i]:
                s = sta{a}[i]
                if s == 0:
                    add{a}(hd{a}, pk{a}, wi{a}, wf{a}, ci{a}, tops, {a}, kid, kt, val{a}[i], t, ip{a}, fp{a})
                elif s == 1:
                    skipped += 1
                else:
                    ctr[{C_STATUS}] = {INVALID_VALUE}
                    ctr[{C_ARG}] = {a}
                    break""")
    return f"""
def run(base_row, n, kid_arr, tt, {agg_args}, tops, maxseg, policy, em, ek, heap, o_src, o_kid, o_time, ctr,
        final):
    cap_out = o_src.shape[0]
    j = ctr[{C_OUT}]
    i = ctr[{C_POS}]
    kind = policy[0]
    max_events = policy[1]
    timeout = policy[2]
    step = policy[3]
    delay = policy[4]
    timed = (kind == 1 and timeout >= 0) or kind == 2 or kind == 3
    events = 0
    late_events = 0
    skipped = 0
    ctr[{C_STATUS}] = {DONE}
    while i < n:
{pool_checks}
        kid = kid_arr[i]
        t = tt[i]
        if timed:
            if t > em[{E_C}]:
                em[{E_C}] = t
            if kind == 3:
                if em[{E_HAS_NEXT}] == 0:
                    em[{E_NEXT}] = (t // step + 1) * step
                    em[{E_HAS_NEXT}] = 1
                else:
                    ok = True
                    while em[{E_NEXT}] <= em[{E_C}] - delay:
                        if j + em[{E_SEEN}] > cap_out:
                            ok = False
                            break
                        b = em[{E_NEXT}]
                        tau = b - 1
                        for kk in range(em[{E_SEEN}]):
                            if {has_any("kk", "tau")}:
                                o_src[j] = -1
                                o_kid[j] = kk
                                o_time[j] = b
{evaluate_all("kk", "tau", False, 8)}
                                j += 1
                        em[{E_NEXT}] = b + step
                    if not ok:
                        ctr[{C_STATUS}] = {NEED_OUT}
                        break
            else:
                ok = True
                while em[{E_HEAP}] > 0 and heap[0, 0] <= em[{E_C}]:
                    if j >= cap_out:
                        ok = False
                        break
                    em[{E_HEAP}] = heap_pop(heap, em[{E_HEAP}])
                    e = em[{E_HEAP}]
                    kk = heap[e, 2]
                    if ek[kk, {K_EPISODE}] != heap[e, 3]:
                        continue
                    ek[kk, {K_EPISODE}] = 0
                    if kind == 1:
                        ek[kk, {K_COUNT}] = 0
                    tl = ek[kk, {K_LATEST_T}]
                    o_src[j] = ek[kk, {K_LATEST_REF}]
                    o_kid[j] = kk
                    o_time[j] = tl
{evaluate_all("kk", "tl", False, 5)}
                    j += 1
                if not ok:
                    ctr[{C_STATUS}] = {NEED_OUT}
                    break
        if j >= cap_out:
            ctr[{C_STATUS}] = {NEED_OUT}
            break
        if kid == em[{E_SEEN}]:
            em[{E_SEEN}] = kid + 1
        events += 1
        late = False
        while True:{"".join(apply_aggs)}
            break
        if ctr[{C_STATUS}] != {DONE}:
            events -= 1
            break
        if late:
            late_events += 1
        ref = base_row + i
        emit = kind == 0
        if kind == 1:
            ek[kid, {K_LATEST_T}] = t
            ek[kid, {K_LATEST_REF}] = ref
            c = ek[kid, {K_COUNT}] + 1
            if c >= max_events:
                ek[kid, {K_COUNT}] = 0
                ek[kid, {K_EPISODE}] = 0
                emit = True
            else:
                ek[kid, {K_COUNT}] = c
                if c == 1:
                    # episode ids (and heap tie-breaks) are the global row + 1: increasing in creation order
                    seq = ref + 1
                    ek[kid, {K_EPISODE}] = seq
                    if timeout >= 0:
                        em[{E_HEAP}] = heap_push(heap, em[{E_HEAP}], t + timeout, seq, kid, seq)
        elif kind == 2:
            ek[kid, {K_LATEST_T}] = t
            ek[kid, {K_LATEST_REF}] = ref
            if ek[kid, {K_EPISODE}] == 0:
                seq = ref + 1
                ek[kid, {K_EPISODE}] = seq
                em[{E_HEAP}] = heap_push(heap, em[{E_HEAP}], t + timeout, seq, kid, seq)
        if emit:
            o_src[j] = ref
            o_kid[j] = kid
            o_time[j] = t
{evaluate_all("kid", "t", True, 3)}
            j += 1
        i += 1
    ctr[{C_OUT}] = j
    ctr[{C_POS}] = i
    ctr[{C_EVENTS}] += events
    ctr[{C_LATE}] += late_events
    ctr[{C_SKIPPED}] += skipped
    if final and ctr[{C_STATUS}] == {DONE} and i >= n:
        flush(kind, step, {agg_args}, em, ek, heap, o_src, o_kid, o_time, ctr)


def flush(kind, step, {agg_args}, em, ek, heap, o_src, o_kid, o_time, ctr):
    # the termination flush (§6.5), resumable when the output buffer fills up
    cap_out = o_src.shape[0]
    j = ctr[{C_OUT}]
    if kind == 3:
        if em[{E_HAS_NEXT}] == 1:
            last = (em[{E_C}] // step + 1) * step
            while em[{E_NEXT}] <= last:
                if j + em[{E_SEEN}] > cap_out:
                    ctr[{C_STATUS}] = {NEED_OUT}
                    break
                b = em[{E_NEXT}]
                tau = b - 1
                for kk in range(em[{E_SEEN}]):
                    if {has_any("kk", "tau")}:
                        o_src[j] = -1
                        o_kid[j] = kk
                        o_time[j] = b
{evaluate_all("kk", "tau", False, 6)}
                        j += 1
                em[{E_NEXT}] = b + step
    elif kind == 1:
        live = np.flatnonzero(ek[:, {K_EPISODE}] != 0)
        order = np.argsort(ek[live, {K_EPISODE}])
        for x in order:
            kk = live[x]
            if ek[kk, {K_COUNT}] > 0:
                if j >= cap_out:
                    ctr[{C_STATUS}] = {NEED_OUT}
                    break
                tl = ek[kk, {K_LATEST_T}]
                o_src[j] = ek[kk, {K_LATEST_REF}]
                o_kid[j] = kk
                o_time[j] = tl
{evaluate_all("kk", "tl", False, 4)}
                j += 1
            ek[kk, {K_COUNT}] = 0
            ek[kk, {K_EPISODE}] = 0
        if ctr[{C_STATUS}] == {DONE}:
            em[{E_HEAP}] = 0
    elif kind == 2:
        while em[{E_HEAP}] > 0:
            if j >= cap_out:
                ctr[{C_STATUS}] = {NEED_OUT}
                break
            em[{E_HEAP}] = heap_pop(heap, em[{E_HEAP}])
            e = em[{E_HEAP}]
            kk = heap[e, 2]
            if ek[kk, {K_EPISODE}] != heap[e, 3]:
                continue
            ek[kk, {K_EPISODE}] = 0
            tl = ek[kk, {K_LATEST_T}]
            o_src[j] = ek[kk, {K_LATEST_REF}]
            o_kid[j] = kk
            o_time[j] = tl
{evaluate_all("kk", "tl", False, 3)}
            j += 1
    ctr[{C_OUT}] = j
"""


def step_source(shapes: Sequence[AggShape], modules: Sequence[str]) -> str:
    """The per-step module: the arrival-order event loop with the emit-policy scheduler, and the termination
    flush, calling each aggregator's ``add``/``evaluate``/``has`` from its shape module (`modules`)."""
    imports = "".join(
        f"from {m} import add as add{a}, evaluate as eval{a}, has as has{a}  # noqa: F401\n"
        for a, m in enumerate(modules)
    )
    body = "\n\n".join(x.strip("\n") for x in (_COMMON, _run_source(shapes)))
    return _module(body, "step loop").replace("INF = float", imports + "\nINF = float", 1)
