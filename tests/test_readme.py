"""The README's first flow runs and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_streaming_example_prints_its_documented_output():
    text = README.read_text()
    block = re.search(r"## A streaming flow\s+```python\n(.*?)```", text, re.S).group(1)
    expected = re.search(r"print\(.*\)\s+#\s*(\{.*\})", block).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    assert out.getvalue().strip() == expected
