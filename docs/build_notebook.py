"""Write ``docs/tutorial.ipynb`` from ``docs/tutorial.md``: the page is the source, the notebook is generated.

Each fenced ``python`` block becomes a code cell, the text between blocks a Markdown cell, in order; the notebook
is written unexecuted, with fixed cell ids, so the same page always gives the same file.

Usage::

    python docs/build_notebook.py            # (re)write docs/tutorial.ipynb
    python docs/build_notebook.py --check    # exit 1 if docs/tutorial.ipynb is not the page's notebook
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

DOCS = Path(__file__).resolve().parent
TUTORIAL = DOCS / "tutorial.md"
NOTEBOOK = DOCS / "tutorial.ipynb"

#: A fenced Python block of the page: its code is the group.
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```[ \t]*\n?", flags=re.S | re.M)

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def code_blocks(text: str) -> list[str]:
    """The code of each fenced ``python`` block of a Markdown page, in order."""
    return [match.group(1) for match in CODE_BLOCK.finditer(text)]


def notebook(text: str) -> nbformat.NotebookNode:
    """The notebook of a Markdown page: a code cell per fenced ``python`` block, a Markdown cell per text between.

    Args:
        text: the page.

    Returns:
        An unexecuted nbformat 4 notebook with cell ids ``cell-1``, ``cell-2``, ...
    """
    cells: list[nbformat.NotebookNode] = []
    position = 0
    for match in [*CODE_BLOCK.finditer(text), None]:
        prose = text[position:match.start() if match else len(text)].strip("\n")
        if prose.strip():
            cells.append(nbformat.v4.new_markdown_cell(prose))
        if match is not None:
            cells.append(nbformat.v4.new_code_cell(match.group(1).rstrip("\n")))
            position = match.end()
    for number, cell in enumerate(cells, start=1):
        cell["id"] = f"cell-{number}"
    book = nbformat.v4.new_notebook(cells=cells, metadata=KERNEL)
    nbformat.validate(book)
    return book


def render(text: str) -> str:
    """The notebook file's content for a Markdown page (what ``nbformat.write`` writes)."""
    return nbformat.writes(notebook(text)) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the notebook, or with ``--check`` say whether the written one is the page's; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {NOTEBOOK.name} differs from the page's")
    args = parser.parse_args(argv)
    wanted = render(TUTORIAL.read_text())
    if args.check:
        current = NOTEBOOK.read_text() if NOTEBOOK.is_file() else None
        if current != wanted:
            print(f"error: {NOTEBOOK} is not {TUTORIAL.name}'s notebook; run python docs/build_notebook.py",
                  file=sys.stderr)
            return 1
        return 0
    NOTEBOOK.write_text(wanted)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
