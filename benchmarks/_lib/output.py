"""What every benchmark script shares on its command line and in its output: one JSON document per run.

The document (``benchmarks/render.py`` turns it into a BENCHMARKS.md section)::

    {"benchmark": "processing",            # which section it renders (_lib.sections.HEADINGS)
     "command": "python benchmarks/bench_processing.py --events 2000000 ...",
     "started": "2026-12-01 23:31 UTC", "finished": "...",
     "machine": {"cores": 2, "cpu": "...", "memory_gib": 23.5, "load_average": [1.58, 1.34, 1.32], "system": "..."},
     "load_average_after": [...],          # at "finished"
     "software": {"python": "3.12.3", "uproot": "...", ..., "commit": "...", "dirty": false},
     "settings": {...},                    # the options measured with
     ...}                                  # the script's measurements (its module docstring gives the schema)

``--json FILE`` writes it to FILE and prints the section it renders on stdout; without ``--json`` (or with
``--json -``) the document goes to stdout and the section to stderr. While a benchmark runs (from :func:`start` to
:func:`finish`), whatever else is printed (progress bars, libraries' notes) goes to stderr, so that stdout holds
the document alone. No script writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from . import machine
from .sections import render

#: stdout as it was when the benchmark started, kept for the document (see :func:`start`).
_STDOUT: list[Any] = []


def add_arguments(parser: argparse.ArgumentParser, *old_flags: str) -> None:
    """``--json FILE``; ``old_flags`` (``--no-write``, ``--write``: a script once wrote BENCHMARKS.md itself) are
    accepted and change nothing, so that older command lines still run."""
    parser.add_argument("--json", metavar="FILE", default="-",
                        help="write the JSON document to FILE (default: stdout; the rendered section goes to the other "
                             "stream)")
    for flag in old_flags:
        parser.add_argument(flag, action="store_true",
                            help="ignored (kept for older command lines): no script writes BENCHMARKS.md; "
                                 "benchmarks/render.py does")


def command(script: str, args: argparse.Namespace, *names: str) -> str:
    """The command that repeats a measurement: ``python benchmarks/SCRIPT`` with the options ``names`` of ``args``
    spelled out (lists comma-joined, flags when set, options that are None left out), defaults included, so that it
    measures the same after a default changes."""
    words = ["python", f"benchmarks/{script}"]
    for name in names:
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            text = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
            words += [flag, shlex.quote(text)]
    return " ".join(words)


def start(benchmark: str, command_line: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A run's document as it starts: what, how, when, where; the script adds its measurements. Until
    :func:`finish`, stdout is stderr."""
    if not _STDOUT:
        _STDOUT.append(sys.stdout)
        sys.stdout = sys.stderr
    return {"benchmark": benchmark, "command": command_line, "started": machine.now(), "machine": machine.describe(),
            "software": machine.software(), "settings": settings}


def finish(document: dict[str, Any], path: str | Path = "-") -> dict[str, Any]:
    """Stamp the end (time, load average) on ``document`` and write it to ``path`` ("-": stdout); print the section
    it renders on the other stream."""
    document["finished"] = machine.now()
    document["load_average_after"] = machine.load_average()
    text = json.dumps(document, indent=1, default=_plain) + "\n"
    if _STDOUT:
        sys.stdout = _STDOUT.pop()
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        stream = sys.stderr
    else:
        Path(path).write_text(text)
        stream = sys.stdout
    heading, lines = render(json.loads(text))  # what render.py will see
    stream.write("\n".join(["", heading, "", *lines]) + "\n")
    return document


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, tuples of them, paths: as JSON has them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
