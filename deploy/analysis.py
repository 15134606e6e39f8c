"""The analysis steps after processing, shared by ``opendata-stats fit``, ``scan-mass`` and ``run``.

Each step reads a processing output directory, writes its JSON and plots, and returns the record it wrote as a
plain dict, so the command line and the pipeline report the same numbers.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from stats.background import DEFAULT_RESOLUTION_GEV, fit_background, scan_degrees
from stats.errors import FitError
from stats.inference import discovery_significance, fit_signal_strength
from stats.mass_scan import MassScan, scan_masses
from stats.spectrum import Spectrum, load_spectrum
from stats.workspace import build_workspace, model_info, save_workspace


def to_plain(value: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: pathlib.Path, record: dict[str, Any]) -> pathlib.Path:
    """Write ``record`` as indented JSON (see :func:`to_plain`)."""
    path.write_text(json.dumps(to_plain(record), indent=2) + "\n")
    return path


def fit_spectrum(
    directory: pathlib.Path,
    out_dir: pathlib.Path,
    *,
    mass: float = 125.0,
    degree: int | str = 4,
    method: str = "robust",
    likelihood: str = "chi2",
    resolution: float = DEFAULT_RESOLUTION_GEV,
) -> dict[str, Any]:
    """Fit the spectrum, build the workspace, fit ``mu`` and the significance; write fit.json, workspace.json, plots.

    Args:
        directory: processing output (``histograms.json`` or ``summary.json``).
        out_dir: where to write.
        mass: fixed Gaussian centre in GeV.
        degree: polynomial degree, or ``"auto"`` for the F-test choice over degrees 2-6.
        method: ``"robust"`` or ``"tutorial"`` background fit.
        likelihood: ``"chi2"`` or ``"poisson"``.
        resolution: peak width in GeV (fixed in the robust method).

    Returns:
        The content of ``fit.json``; a failed significance is recorded under ``significance.error``.
    """
    from stats.plotting import plot_data_mc, plot_degree_scan, plot_fit

    out_dir.mkdir(parents=True, exist_ok=True)
    spectrum = load_spectrum(directory)
    options = {"mass": mass, "method": method, "likelihood": likelihood, "resolution": resolution}
    record: dict[str, Any] = {"input": str(directory), **options}
    if degree == "auto":
        degrees = scan_degrees(spectrum.counts, spectrum.edges, **options)
        degree = degrees.best_degree
        record["degree_scan"] = [row._asdict() for row in degrees.rows]
        plot_degree_scan(degrees, out_dir / "degree_scan")
    background = fit_background(spectrum.counts, spectrum.edges, degree=int(degree), **options)
    spec = build_workspace(spectrum.counts, background)
    save_workspace(spec, out_dir / "workspace.json")
    strength = fit_signal_strength(spec)
    record.update(
        degree=int(degree), lumi_fb=spectrum.lumi_fb,
        background_fit={"parameters": background.parameters, "chi2": background.chi2, "ndf": background.ndf,
                        "chi2_ndf": background.chi2_ndf, "signal_yield": background.signal_yield,
                        "signal_yield_unc": background.signal_yield_unc, "sigma": background.sigma,
                        "covariance_ok": background.covariance_ok},
        background=background.background, background_unc=background.background_unc,
        mu=strength.mu, mu_unc=strength.mu_unc, model=model_info(spec),
    )
    try:
        record["significance"] = discovery_significance(spec)._asdict()
    except FitError as err:
        record["significance"] = {"error": str(err)}
    record["profile_likelihood"] = scan_masses(spectrum.counts, spectrum.edges, [mass], degree=int(degree),
                                               resolution=resolution).points[0]
    plots = [*plot_fit(spectrum.counts, spectrum.edges, background, out_dir / "fit"),
             *plot_data_mc(spec, out_dir / "data_mc_prefit", edges=spectrum.edges),
             *plot_data_mc(spec, out_dir / "data_mc_postfit", fit_results=strength.fit_results, edges=spectrum.edges)]
    record["plots"] = [str(path) for path in plots]
    write_json(out_dir / "fit.json", record)
    return to_plain(record)


def scan_spectrum(
    spectrum: Spectrum,
    out_dir: pathlib.Path,
    masses: np.ndarray,
    *,
    client: Any = None,
    method: str = "robust",
    degree: int = 4,
    resolution: float = DEFAULT_RESOLUTION_GEV,
    source: str = "",
) -> tuple[MassScan, dict[str, Any]]:
    """Run the mass scan (on ``client`` when given); write mass_scan.json and its plots.

    Returns:
        The scan and the content of ``mass_scan.json``.
    """
    from stats.plotting import plot_mass_scan

    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_masses(spectrum.counts, spectrum.edges, masses, client=client, method=method, degree=degree,
                       resolution=resolution)
    plots = plot_mass_scan(scan, out_dir / "mass_scan")
    record = {"input": source, "method": method, "degree": degree, "points": scan.points,
              "wall_time": scan.wall_time, "failed": len(scan.failed), "best": scan.best,
              "plots": [str(path) for path in plots]}
    write_json(out_dir / "mass_scan.json", record)
    return scan, to_plain(record)



def scan_likelihoods(
    likelihoods: pathlib.Path,
    out: pathlib.Path,
    *,
    client: Any,
    patches: list[str] | None = None,
    settings: Any = None,
    timeout: float | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """CLs of the patches of a HEPData likelihood on Dask; write ``out`` (resumable) and the CLs plot.

    A 2D patchset gets the exclusion contour, a 1D one (the analysis's mass patchset) CLs against its label.

    Args:
        likelihoods: tarball, directory or ``BkgOnly.json`` of the likelihood.
        out: result JSON; a rerun with the same file skips the points already done.
        client: the Dask client.
        patches: patch names or values (``"900,250"``); default all.
        settings: a ``stats.likelihoods.HypotestSettings`` (default: mu = 1, qtilde, code4/code4p, numpy).
        timeout: per-point time limit in seconds.
        progress: called with each finished point.

    Returns:
        The content of ``out`` plus ``plots`` (paths) and ``plot_error`` where no plot could be drawn.
    """
    from stats.contour import plot_cls_1d, plot_exclusion
    from stats.errors import StatsError
    from stats.hepdata import load_likelihoods
    from stats.likelihoods import HypotestSettings, select_patches
    from stats.patchscan import read_results, scan_patches

    loaded = load_likelihoods(likelihoods)
    chosen = select_patches(loaded.patchset, patches or None)
    result = scan_patches(loaded, client, patches=chosen, settings=settings or HypotestSettings(), timeout=timeout,
                          out=out, progress=progress)
    record = read_results(out)
    labels = list(loaded.patchset.labels)
    try:
        if len(labels) == 2:
            plots = plot_exclusion(result.results, labels, out.with_suffix(""))
        else:
            plots = plot_cls_1d(result.results, labels[0], out.with_suffix(""))
        record["plots"] = [str(path) for path in plots]
    except StatsError as err:
        record["plots"], record["plot_error"] = [], str(err)
    return record
