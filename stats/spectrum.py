"""The diphoton mass spectrum the statistics layer fits: counts per bin, bin edges and the luminosity."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from stats.errors import HistogramError

#: Files looked up, in this order, when ``load_spectrum`` is given a processing output directory.
SPECTRUM_FILES = ("histograms.json", "summary.json")


class Spectrum(NamedTuple):
    """A binned mass spectrum.

    Args:
        counts: events per bin (float array, one entry per bin).
        edges: bin edges in GeV, one more entry than ``counts``, strictly increasing.
        lumi_fb: integrated luminosity in fb^-1 where known.
    """

    counts: np.ndarray
    edges: np.ndarray
    lumi_fb: float | None = None

    @property
    def centers(self) -> np.ndarray:
        """Bin centres in GeV."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def validate_spectrum(counts: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray) -> Spectrum:
    """Check counts and edges and return them as float arrays.

    Args:
        counts: events per bin.
        edges: bin edges, one more than ``counts``.

    Raises:
        HistogramError: if the histogram is empty, has non-finite or negative counts, or its edges do not match.

    Returns:
        Spectrum: the validated arrays (no luminosity).
    """
    counts_arr = np.asarray(counts, dtype=float)
    edges_arr = np.asarray(edges, dtype=float)
    if counts_arr.ndim != 1 or counts_arr.size == 0:
        raise HistogramError(f"histogram has no bins (counts shape {counts_arr.shape})")
    if edges_arr.ndim != 1 or edges_arr.size != counts_arr.size + 1:
        raise HistogramError(f"edges do not match counts: {edges_arr.size} edges for {counts_arr.size} bins")
    if not np.all(np.isfinite(edges_arr)) or np.any(np.diff(edges_arr) <= 0):
        raise HistogramError("edges must be finite and strictly increasing")
    bad = np.flatnonzero(~np.isfinite(counts_arr))
    if bad.size:
        raise HistogramError(f"non-finite counts in {bad.size} bin(s), first at bin {bad[0]}")
    negative = np.flatnonzero(counts_arr < 0)
    if negative.size:
        raise HistogramError(f"negative counts in {negative.size} bin(s), first at bin {negative[0]}")
    if counts_arr.sum() <= 0:
        raise HistogramError("histogram is empty (all counts are zero)")
    return Spectrum(counts_arr, edges_arr)


def spectrum_from_hist(histogram: Any, *, lumi_fb: float | None = None) -> Spectrum:
    """Convert a ``hist.Hist`` with a ``mass`` axis (summing any other axis, e.g. ``dataset``) into a Spectrum.

    Args:
        histogram: the mass histogram.
        lumi_fb: luminosity to attach.

    Raises:
        HistogramError: if there is no ``mass`` axis or the contents are invalid.

    Returns:
        Spectrum: the validated spectrum.
    """
    names = [axis.name for axis in histogram.axes]
    if "mass" not in names:
        raise HistogramError(f"histogram has no 'mass' axis (axes: {names})")
    projected = histogram.project("mass")
    spectrum = validate_spectrum(projected.values(), projected.axes[0].edges)
    return spectrum._replace(lumi_fb=lumi_fb)


def load_spectrum(path: str | pathlib.Path) -> Spectrum:
    """Read the mass spectrum from a processing output directory or from one of its files.

    A directory is searched for ``histograms.json`` (uhi JSON with a ``mass`` Hist), then ``summary.json``
    (``mass: {edges, counts}`` and ``lumi_fb``).

    Args:
        path: a directory, or a ``histograms.json`` / ``summary.json`` file.

    Raises:
        HistogramError: if no spectrum file is found, it cannot be parsed, or its contents are invalid.

    Returns:
        Spectrum: counts, edges and (from ``summary.json`` where present) the luminosity.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        found = [path / name for name in SPECTRUM_FILES if (path / name).is_file()]
        if not found:
            raise HistogramError(f"no {' or '.join(SPECTRUM_FILES)} in {path}")
        path = found[0]
    if not path.is_file():
        raise HistogramError(f"spectrum file not found: {path}")
    lumi_fb = _summary_lumi(path.parent / "summary.json")
    try:
        if path.name == "summary.json":
            mass = json.loads(path.read_text())["mass"]
            return validate_spectrum(mass["counts"], mass["edges"])._replace(lumi_fb=lumi_fb)
        return spectrum_from_hist(_read_uhi_mass(path), lumi_fb=lumi_fb)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise HistogramError(f"cannot read the mass spectrum from {path}: {type(err).__name__}: {err}") from err


def _read_uhi_mass(path: pathlib.Path) -> Any:
    import hist.serialization
    import uhi.io.json

    with path.open() as stream:
        histograms = json.load(stream, object_hook=uhi.io.json.object_hook)
    return hist.serialization.from_uhi(histograms["mass"])


def _summary_lumi(path: pathlib.Path) -> float | None:
    # histograms.json carries no luminosity; take it from the sibling summary when there is one.
    try:
        lumi = json.loads(path.read_text()).get("lumi_fb")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return float(lumi) if lumi is not None else None
