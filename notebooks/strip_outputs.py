"""Strip outputs and execution counts from notebooks, so that git keeps only their source.

Usage (from the repository root):

    python notebooks/strip_outputs.py                 # every notebooks/*.ipynb, in place
    python notebooks/strip_outputs.py A.ipynb B.ipynb # these, in place
    python notebooks/strip_outputs.py --stdin         # stdin -> stdout (a git clean filter)

As a git filter, once per clone (``.gitattributes`` names it for ``notebooks/*.ipynb``):

    git config filter.strip-notebook.clean ".venv/bin/python notebooks/strip_outputs.py --stdin"
    git config filter.strip-notebook.smudge cat

``tests/test_notebooks.py`` fails on a notebook with outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs, execution counts and per-cell execution metadata (in place)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    return nb


def main(argv: list[str]) -> int:
    if argv == ["--stdin"]:
        nbformat.write(strip(nbformat.read(sys.stdin, as_version=4)), sys.stdout)
        return 0
    paths = [Path(a) for a in argv] or sorted(Path(__file__).resolve().parent.glob("*.ipynb"))
    for path in paths:
        nbformat.write(strip(nbformat.read(path, as_version=4)), path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
