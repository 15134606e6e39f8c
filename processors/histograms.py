"""Files of a processing run: ``histograms.json`` (uhi JSON) and ``summary.json``.

Every file is written atomically (a temporary file in the same directory, then a rename), so a run that
fails, is interrupted or is killed leaves the earlier file whole. ``summary.json`` records the identity of the
inputs (each file's path, size and ROOT UUID, the processor's configuration, the project version) and its
digest, which each histogram of ``histograms.json`` carries as metadata (``inputs_digest``), so that results
can be tied to their inputs and the two files to each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import hist
import hist.serialization
import uhi.io.json

from processors.errors import ProcessingError

HISTOGRAMS_FILE = "histograms.json"
SUMMARY_FILE = "summary.json"
#: Where a partial run writes when the output directory holds a complete result (:func:`save_outputs`).
PARTIAL_HISTOGRAMS_FILE = "histograms.partial.json"
PARTIAL_SUMMARY_FILE = "summary.partial.json"


class OutputPaths(NamedTuple):
    """Where :func:`save_outputs` wrote; ``kept``: the complete earlier summary left in place (else None)."""

    histograms: Path
    summary: Path
    kept: Path | None = None


def write_atomically(files: dict[Path, str]) -> None:
    """Write each text to its path through a temporary file in the same directory, then rename them all, one
    right after the other: a reader, or a run killed meanwhile, sees an old file or a new one, never a part."""
    temporary: dict[Path, str] = {}
    try:
        for path, text in files.items():
            descriptor, temporary[path] = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(descriptor, "w") as stream:
                stream.write(text)
        for path, partial in temporary.items():
            os.replace(partial, path)
    finally:
        for partial in temporary.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)


def _histograms_text(histograms: dict[str, hist.Hist], metadata: dict[str, str] | None = None) -> str:
    payload = {}
    for name, histogram in histograms.items():
        if metadata:
            histogram = histogram.copy()
            for key, value in metadata.items():
                setattr(histogram, key, value)
        payload[name] = hist.serialization.to_uhi(histogram)
    return json.dumps(payload, default=uhi.io.json.default)


def write_histograms(path: str | Path, histograms: dict[str, hist.Hist], *, metadata: dict[str, str] | None = None) -> Path:
    """Write histograms as uhi JSON (a dict of name to serialized histogram), atomically.

    Args:
        path: the file.
        histograms: name to histogram.
        metadata: string entries added to each histogram's metadata (the histograms themselves are unchanged).
    """
    path = Path(path)
    write_atomically({path: _histograms_text(histograms, metadata)})
    return path


def inputs_digest(identity: dict[str, Any] | None) -> str | None:
    """SHA-256 of the canonical JSON of a result's ``identity`` (None without one)."""
    if identity is None:
        return None
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


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


def summarize(result: Any, *, lumi_fb: float | None, lumi_source: str | None = None) -> dict[str, Any]:
    """Plain summary of a :class:`~processors.engine.ProcessingResult`.

    Args:
        result: the engine's result.
        lumi_fb: luminosity of the processed share of the files (already scaled by the fraction).
        lumi_source: where the luminosity was taken from, in words.

    Returns:
        The content of ``summary.json``; ``complete`` is True when no chunk failed.
    """
    mass = result.histograms["mass"].project("mass")
    cutflow = result.histograms["cutflow"].project("cut")
    identity = getattr(result, "identity", None)
    other = getattr(result, "other_checkpoints", None)
    simulation = {"simulation": _simulation_summary(result.histograms)} if "mc_mass" in result.histograms else {}
    return {
        "complete": not result.failed_chunks,
        "files": list(result.files),
        "inputs": identity,
        "inputs_digest": inputs_digest(identity),
        "events_in_files": result.events_in_files,
        "events_processed": result.events_processed,
        "entries_total": result.entries_total,
        "fraction": result.fraction,
        "lumi_fb": lumi_fb,
        "lumi_source": lumi_source,
        "chunks": result.chunks,
        "resumed_chunks": result.resumed_chunks,
        "other_checkpoints": other._asdict() if other is not None else None,
        "tasks": result.tasks,
        "failed_chunks": [failure._asdict() for failure in result.failed_chunks],
        "cutflow": {cut: int(count) for cut, count in zip(cutflow.axes[0], cutflow.values())},
        "mass": {"edges": mass.axes[0].edges.tolist(), "counts": mass.values().tolist()},
        **simulation,
        "wall_time_s": round(result.wall_time, 3),
    }


def _simulation_summary(histograms: dict[str, Any]) -> dict[str, Any]:
    """Per simulated sample: the weighted cutflow (nominal) and the yield in the mass range with its statistical
    error, per variation (of a :class:`~processors.simulation.SimulationProcessor`'s histograms)."""
    masses, cutflow = histograms["mc_mass"], histograms["mc_cutflow"]
    summary = {}
    for dataset in masses.axes["dataset"]:
        flow = cutflow[dataset, :] if dataset in cutflow.axes["dataset"] else None
        summary[dataset] = {
            "cutflow": {} if flow is None else dict(zip(flow.axes[0], flow.values().tolist())),
            "yield": {syst: float(masses[dataset, syst, :].values().sum()) for syst in masses.axes["syst"]},
            "yield_error": {
                syst: float(masses[dataset, syst, :].variances().sum() ** 0.5) for syst in masses.axes["syst"]
            },
        }
    return summary


def holds_complete_result(out_dir: str | Path) -> bool:
    """True if ``out_dir/summary.json`` is the summary of a run in which no chunk failed."""
    try:
        summary = json.loads((Path(out_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("failed_chunks") == [] and "mass" in summary


def save_outputs(
    out_dir: str | Path, result: Any, *, lumi_fb: float | None, lumi_source: str | None = None,
    keep_complete: bool = False,
) -> OutputPaths:
    """Write ``histograms.json`` and ``summary.json`` of ``result`` into ``out_dir``, each atomically.

    The rule: a complete result (no failed chunk) replaces what is there. A partial one (some chunks failed,
    perhaps all) replaces a partial one, but with ``keep_complete`` never a complete one: it is written to
    ``histograms.partial.json`` and ``summary.partial.json`` beside it instead, and the complete result stays
    byte for byte. Both files are written to temporary files first and renamed one after the other; their
    ``inputs_digest`` ties them together.

    Args:
        out_dir: the output directory (created).
        result: the engine's result.
        lumi_fb, lumi_source: as for :func:`summarize`.
        keep_complete: never replace a complete earlier result with a partial one.

    Returns:
        The paths written, and the complete summary kept in place, if any.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(result, lumi_fb=lumi_fb, lumi_source=lumi_source)
    kept = None
    names = (HISTOGRAMS_FILE, SUMMARY_FILE)
    if keep_complete and not summary["complete"] and holds_complete_result(out_dir):
        kept, names = out_dir / SUMMARY_FILE, (PARTIAL_HISTOGRAMS_FILE, PARTIAL_SUMMARY_FILE)
    metadata = {"inputs_digest": summary["inputs_digest"], "opendata_stats_version": (summary["inputs"] or {}).get("version")}
    # Every histogram of the result: the data's mass and cutflow, and a simulation's weighted ones.
    histograms = _histograms_text({k: v for k, v in result.histograms.items() if isinstance(v, hist.Hist)},
                                  {key: value for key, value in metadata.items() if value is not None})
    paths = out_dir / names[0], out_dir / names[1]
    write_atomically({paths[0]: histograms, paths[1]: json.dumps(summary, indent=2) + "\n"})
    return OutputPaths(*paths, kept)
