"""Files of a processing run: ``histograms.json`` (uhi JSON) and ``summary.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import hist
import hist.serialization
import uhi.io.json

from processors.errors import ProcessingError

HISTOGRAMS_FILE = "histograms.json"
SUMMARY_FILE = "summary.json"


class OutputPaths(NamedTuple):
    """Where :func:`save_outputs` wrote."""

    histograms: Path
    summary: Path


def write_histograms(path: str | Path, histograms: dict[str, hist.Hist]) -> Path:
    """Write histograms as uhi JSON (a dict of name to serialized histogram)."""
    path = Path(path)
    payload = {name: hist.serialization.to_uhi(h) for name, h in histograms.items()}
    path.write_text(json.dumps(payload, default=uhi.io.json.default))
    return path


def read_histograms(path: str | Path) -> dict[str, hist.Hist]:
    """Read a ``histograms.json``.

    Raises:
        ProcessingError: the file is missing or not uhi JSON.
    """
    path = Path(path)
    try:
        with path.open() as stream:
            payload = json.load(stream, object_hook=uhi.io.json.object_hook)
        return {name: hist.Hist(hist.serialization.from_uhi(data)) for name, data in payload.items()}
    except FileNotFoundError:
        raise ProcessingError(f"{path}: no such file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ProcessingError(f"{path}: not a histograms file ({err})") from None


def summarize(result: Any, *, lumi_fb: float | None) -> dict[str, Any]:
    """Plain summary of a :class:`~processors.engine.ProcessingResult`.

    Args:
        result: the engine's result.
        lumi_fb: luminosity of the processed share of the files (already scaled by the fraction).

    Returns:
        The content of ``summary.json``.
    """
    mass = result.histograms["mass"].project("mass")
    cutflow = result.histograms["cutflow"].project("cut")
    return {
        "files": list(result.files),
        "events_in_files": result.events_in_files,
        "events_processed": result.events_processed,
        "entries_total": result.entries_total,
        "fraction": result.fraction,
        "lumi_fb": lumi_fb,
        "chunks": result.chunks,
        "resumed_chunks": result.resumed_chunks,
        "tasks": result.tasks,
        "failed_chunks": [failure._asdict() for failure in result.failed_chunks],
        "cutflow": {cut: int(count) for cut, count in zip(cutflow.axes[0], cutflow.values())},
        "mass": {"edges": mass.axes[0].edges.tolist(), "counts": mass.values().tolist()},
        "wall_time_s": round(result.wall_time, 3),
    }


def save_outputs(out_dir: str | Path, result: Any, *, lumi_fb: float | None) -> OutputPaths:
    """Write ``histograms.json`` and ``summary.json`` of ``result`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    histograms = write_histograms(out_dir / HISTOGRAMS_FILE, {k: result.histograms[k] for k in ("mass", "cutflow")})
    summary = out_dir / SUMMARY_FILE
    summary.write_text(json.dumps(summarize(result, lumi_fb=lumi_fb), indent=2) + "\n")
    return OutputPaths(histograms, summary)
