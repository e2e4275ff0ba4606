"""Static check (spec AGGREGATIONS.md §9.2): the frames fold code uses no order-changing reduction.

Scanned: the frames engine's own modules and the numba source it generates for representative aggregator
shapes (the code that folds tiles and writes features). Pairwise/blocked/compensated reductions, dot
products, pandas/Arrow aggregations, fastmath and parallel compilation are all banned there.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import storey.frames
from storey import FieldAggregator, FixedWindows, SlidingWindows
from storey.aggregations.state import AggregatorPlan
from storey.frames import _codegen as cg

FOLD_MODULES = ["_codegen.py", "_compiled.py", "_reference.py", "_group.py", "_emissions.py", "asof.py"]
BANNED_CALLS = {
    "sum", "nansum", "mean", "nanmean", "var", "nanvar", "std", "nanstd", "dot", "vdot", "einsum", "fsum",
    "reduceat", "average", "matmul", "inner", "prange", "variance", "stddev", "rolling", "expanding", "ewm",
}  # fmt: skip
BANNED_TEXT = [
    r"fastmath\s*=\s*True",
    r"parallel\s*=\s*True",
    r"\bstatistics\b",
    r"add\.reduce\b",
    r"\bprange\b",
]


def _violations(source: str) -> list[str]:
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in BANNED_CALLS:
                out.append(f"call {name}() at line {node.lineno}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            out.append(f"@ at line {node.lineno}")
    for pattern in BANNED_TEXT:
        for m in re.finditer(pattern, source):
            out.append(f"{pattern!r} at offset {m.start()}")
    return out


@pytest.mark.parametrize("name", FOLD_MODULES)
def test_frames_modules_use_no_banned_reduction(name):
    source = (Path(storey.frames.__file__).parent / name).read_text()
    assert _violations(source) == []


SHAPES = [
    FieldAggregator("a", "x", ["count", "sum", "sqr", "min", "max", "first", "last", "avg", "stdvar", "stddev"],
                    SlidingWindows(["1h", "2h"], "10m")),
    FieldAggregator("b", "x", ["count", "sum", "max"], FixedWindows(["1h"]), max_value=2.5),
    FieldAggregator("c", "x", ["count"], SlidingWindows(["1h", "1d"], "10m"), max_value=3),
]  # fmt: skip


@pytest.mark.parametrize("agg", SHAPES, ids=lambda a: a.name)
def test_generated_fold_code_uses_no_banned_reduction(agg):
    shape = cg.AggShape(AggregatorPlan(agg))
    sources = [shape.module_source(), cg.step_source([shape], ["storey_frames_agg_x"])]
    for source in sources:
        assert _violations(source) == []
        assert "fastmath=False" not in source  # the parity settings live in one place (`_codegen.njit`)


def test_the_detector_finds_banned_code():
    bad = "import numpy as np\ndef f(a, b):\n    return np.sum(a) + math.fsum(b) + (a @ b)\n"
    assert len(_violations(bad)) == 3
    assert _violations("numba.njit(fastmath=True)(f)")
    assert _violations("x = np.add.reduce(a)")


def test_compile_settings_are_the_parity_settings():
    import inspect

    source = inspect.getsource(cg.njit)
    assert "fastmath=False" in source and "parallel=False" in source
