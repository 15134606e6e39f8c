"""BENCHMARKS.md from the benchmarks' JSON documents: each document's section replaced, every other section kept.

    python benchmarks/render.py [JSON ...] [--benchmarks BENCHMARKS.md] [--print]

Each document (what a ``bench_*.py`` script writes with ``--json FILE``) names its benchmark; its section (for
instance "## Processing" for ``bench_processing.py``'s) is rendered from it (``_lib.sections``: the command, the
machine, the baseline measured in the same run, the results table) and replaces the section of that heading, or
is added at the end. Sections no document renders stay exactly as they are. Without arguments, every
``benchmarks/results/*.json``. ``--print`` writes the rendered sections to stdout and leaves the file alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _lib.sections import render, replace_sections

HERE = Path(__file__).resolve().parent
#: Where the documents behind BENCHMARKS.md are kept.
RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="*", type=Path, help=f"JSON documents (default: {RESULTS}/*.json)")
    parser.add_argument("--benchmarks", type=Path, default=HERE.parent / "BENCHMARKS.md", help="the file to update")
    parser.add_argument("--print", action="store_true", help="print the sections instead of updating the file")
    args = parser.parse_args(argv)

    paths = args.documents or sorted(RESULTS.glob("*.json"))
    sections: dict[str, list[str]] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        try:
            heading, lines = render(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"error: {path}: {type(error).__name__}: {error}", file=sys.stderr)
            return 2
        if heading in sections:
            print(f"error: {path} and {sources[heading]} both render {heading!r}", file=sys.stderr)
            return 2
        sections[heading], sources[heading] = lines, path
    if args.print:
        for heading, lines in sections.items():
            print("\n".join([heading, "", *lines, ""]))
        return 0
    if not sections:
        print(f"no documents: {args.benchmarks} unchanged", file=sys.stderr)
        return 0
    text = args.benchmarks.read_text()
    updated = replace_sections(text, sections)
    if updated != text:
        args.benchmarks.write_text(updated)
    print(f"{args.benchmarks}: {', '.join(sections)} from {', '.join(str(p) for p in sources.values())}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
