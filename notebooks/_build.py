"""Build the notebooks from their cell lists (no outputs are committed; CI executes them with nbmake).

Run: ``.venv/bin/python notebooks/_build.py``. Each ``notebooks/src/*.py`` file holds cells separated by
lines ``# %%`` (code) or ``# %% [markdown]`` (markdown, each line prefixed with ``# ``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).parent


def cells_of(text: str) -> list[nbformat.NotebookNode]:
    cells = []
    kind, lines = None, []

    def close() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            close()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        else:
            lines.append(line)
    close()
    return cells


def main() -> None:
    for src in sorted((HERE / "src").glob("*.py")):
        nb = nbformat.v4.new_notebook()
        nb.cells = cells_of(src.read_text())
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, HERE / f"{src.stem}.ipynb")
        print("wrote", HERE / f"{src.stem}.ipynb")


if __name__ == "__main__":
    main()
