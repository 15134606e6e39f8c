"""The analysis steps after processing, shared by ``opendata-stats fit``, ``scan-mass`` and ``run``.

Each step reads a processing output directory, writes its JSON and plots, and returns the record it wrote as a
plain dict, so the command line and the pipeline report the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from deploy.config import FitSettings, ModelSettings
from stats.background import DegreeScan, fit_background, scan_degrees
from stats.errors import FitError, StatsError
from stats.inference import discovery_significance, fit_signal_strength
from stats.mass_scan import MassScan, scan_masses
from stats.provenance import project_version
from stats.spectrum import SPECTRUM_FILES, Spectrum, load_spectrum
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
    """Write ``record`` as indented JSON (see :func:`to_plain`), atomically: a temporary file, then a rename."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(to_plain(record), indent=2) + "\n")
    partial.replace(path)
    return path


def file_identity(path: pathlib.Path) -> dict[str, Any]:
    """Size and SHA-256 of a file's bytes: what a result computed from it depends on."""
    data = path.read_bytes()
    return {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def spectrum_identity(directory: pathlib.Path) -> list[dict[str, Any]]:
    """The identity of every spectrum file of a processing output (``directory`` may also be one such file)."""
    if directory.is_file():
        return [file_identity(directory)]
    return [file_identity(directory / name) for name in SPECTRUM_FILES if (directory / name).is_file()]


def identity(inputs: Any, settings: Any) -> dict[str, Any]:
    """What a step's result was computed from: its inputs' identities, its settings and the project version."""
    return to_plain({"inputs": inputs, "settings": settings, "version": project_version()})


class DegreeChoice(NamedTuple):
    """The polynomial degree used, as asked for (an integer or ``"auto"``), and the F-test scan when one chose it."""

    degree: int
    requested: int | str
    scan: DegreeScan | None

    def record(self) -> dict[str, Any]:
        """Plain-data description for the output JSON and the report."""
        by = "F-test over degrees " + ", ".join(str(r.degree) for r in self.scan.rows) if self.scan else "setting"
        return {"requested": self.requested, "chosen": self.degree, "by": by}


def choose_degree(spectrum: Spectrum, fit: FitSettings, degree: int | str | None = None) -> DegreeChoice:
    """The degree to fit: ``degree`` (default ``fit.degree``) or, for ``"auto"``, the F-tests' choice at ``fit.mass``.

    Every command resolves ``auto`` here, at the same mass and with the same fit options, so ``fit``, ``scan-mass``
    and ``run`` choose the same degree on the same histogram.
    """
    requested = fit.degree if degree is None else degree
    if requested != "auto":
        return DegreeChoice(int(requested), requested, None)
    scan = scan_degrees(spectrum.counts, spectrum.edges, mass=fit.mass, method=fit.method, likelihood=fit.likelihood,
                        resolution=fit.resolution)
    return DegreeChoice(scan.best_degree, requested, scan)


def simulation_dir(directory: pathlib.Path) -> pathlib.Path | None:
    """The simulated samples' processing output beside a data processing output (None where there is none)."""
    from deploy.simulation import SIMULATION_SUBDIR

    found = directory / SIMULATION_SUBDIR / "histograms.json"
    return found.parent if directory.is_dir() and found.is_file() else None


def fit_spectrum(directory: pathlib.Path, out_dir: pathlib.Path, fit: FitSettings,
                 model: ModelSettings | None = None, *, steps: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit the spectrum, build the workspace, fit ``mu`` and the significance; write fit.json, workspace.json, plots.

    Two models: the tutorial's (``workspace.json``: the Gaussian fitted to these data, a per-bin ``shapesys``;
    ``mu``, ``significance``) and, where ``directory`` holds the simulated samples' output
    (``directory/simulation``), the H->yy model on the simulated templates (``workspace_simulation.json``;
    ``simulation_model``: :func:`deploy.simulation.simulation_model`), whose ``mu`` is relative to the Standard
    Model. Both use the same background polynomial degree.

    Args:
        directory: processing output (``histograms.json`` or ``summary.json``).
        out_dir: where to write.
        fit: mass hypothesis, degree (``"auto"``: the F-test's choice, see :func:`choose_degree`), method,
            likelihood and resolution.
        model: the simulation model's settings (default: the packaged defaults).
        steps: called with a line describing each step as it starts (the pipeline shows them:
            :class:`deploy.progress.Steps`).

    Returns:
        The content of ``fit.json``, with ``degree_choice`` and the ``identity`` of its input and settings; a failed
        significance is recorded under ``significance.error``, a failed simulation model under
        ``simulation_model.error``.
    """
    from stats.plotting import plot_data_mc, plot_degree_scan, plot_fit

    out_dir.mkdir(parents=True, exist_ok=True)
    spectrum = load_spectrum(directory)
    options = {"mass": fit.mass, "method": fit.method, "likelihood": fit.likelihood, "resolution": fit.resolution}
    simulated = simulation_dir(directory)
    if model is None:
        from deploy.config import load_config

        model = load_config().model
    inputs = spectrum_identity(directory) + (spectrum_identity(simulated) if simulated is not None else [])
    settings = {**fit._asdict(), **({"model": model._asdict()} if simulated is not None else {})}
    record: dict[str, Any] = {"input": str(directory), **options, "identity": identity(inputs, settings)}
    steps = steps or (lambda line: None)
    steps("  background fit" + (": polynomial degree by F-tests" if fit.degree == "auto" else ""))
    choice = choose_degree(spectrum, fit)
    if choice.scan is not None:
        record["degree_scan"] = [row._asdict() for row in choice.scan.rows]
        plot_degree_scan(choice.scan, out_dir / "degree_scan", lumi=spectrum.lumi_fb)
    degree = choice.degree
    background = fit_background(spectrum.counts, spectrum.edges, degree=degree, mass=fit.mass, method=fit.method,
                                likelihood=fit.likelihood, resolution=fit.resolution)
    steps("  workspace and signal strength (cabinetry fit)")
    spec = build_workspace(spectrum.counts, background)
    save_workspace(spec, out_dir / "workspace.json")
    strength = fit_signal_strength(spec)
    record.update(
        degree=degree, degree_choice=choice.record(), lumi_fb=spectrum.lumi_fb,
        background_fit={"parameters": background.parameters, "chi2": background.chi2, "ndf": background.ndf,
                        "chi2_ndf": background.chi2_ndf, "signal_yield": background.signal_yield,
                        "signal_yield_unc": background.signal_yield_unc, "sigma": background.sigma,
                        "covariance_ok": background.covariance_ok},
        background=background.background, background_unc=background.background_unc,
        mu=strength.mu, mu_unc=strength.mu_unc, model=model_info(spec),
    )
    steps("  discovery significance (pyhf, asymptotic q0)")
    try:
        record["significance"] = discovery_significance(spec)._asdict()
    except FitError as err:
        record["significance"] = {"error": str(err)}
    steps("  profile-likelihood significance and plots")
    record["profile_likelihood"] = scan_masses(spectrum.counts, spectrum.edges, [fit.mass], degree=degree,
                                               resolution=fit.resolution).points[0]
    plots = [*plot_fit(spectrum.counts, spectrum.edges, background, out_dir / "fit", lumi=spectrum.lumi_fb),
             *plot_data_mc(spec, out_dir / "data_mc_prefit", edges=spectrum.edges),
             *plot_data_mc(spec, out_dir / "data_mc_postfit", fit_results=strength.fit_results, edges=spectrum.edges)]
    record["plots"] = [str(path) for path in plots]
    if simulated is not None:
        from deploy.simulation import simulation_model

        steps("  simulation model: templates, spurious signal, fit, significance")
        try:
            record["simulation_model"] = simulation_model(spectrum, simulated, out_dir, degree=degree,
                                                          degree_scan=choice.scan, model=model, fit_mass=fit.mass)
        except StatsError as err:
            record["simulation_model"] = {"error": str(err)}
    write_json(out_dir / "fit.json", record)
    return to_plain(record)


def scan_spectrum(
    spectrum: Spectrum,
    out_dir: pathlib.Path,
    masses: np.ndarray,
    fit: FitSettings,
    *,
    degree: int | str | None = None,
    client: Any = None,
    source: pathlib.Path | None = None,
) -> tuple[MassScan, dict[str, Any]]:
    """Run the mass scan (on ``client`` when given); write mass_scan.json and its plots.

    Args:
        spectrum: the histogram scanned.
        out_dir: where to write.
        masses: the mass hypotheses (GeV).
        fit: method, resolution, and the degree and mass at which ``"auto"`` is resolved (:func:`choose_degree`).
        degree: the degree to use instead of ``fit.degree`` (e.g. one a fit already chose).
        client: a Dask client, or None to scan in this process.
        source: the processing output the spectrum was read from (its files' identity is recorded).

    Returns:
        The scan and the content of ``mass_scan.json``.
    """
    from stats.plotting import plot_mass_scan

    out_dir.mkdir(parents=True, exist_ok=True)
    choice = choose_degree(spectrum, fit, degree)
    scan = scan_masses(spectrum.counts, spectrum.edges, masses, client=client, method=fit.method,
                       degree=choice.degree, resolution=fit.resolution)
    plots = plot_mass_scan(scan, out_dir / "mass_scan", lumi=spectrum.lumi_fb)
    inputs = spectrum_identity(source) if source is not None else {"counts": spectrum.counts, "edges": spectrum.edges}
    record = {"input": str(source or ""), "method": fit.method, "degree": choice.degree,
              "degree_choice": choice.record(),
              "identity": identity(inputs, {**fit._asdict(), "degree": choice.degree, "masses": masses}),
              "points": scan.points, "wall_time": scan.wall_time, "failed": len(scan.failed), "best": scan.best,
              "plots": [str(path) for path in plots]}
    write_json(out_dir / "mass_scan.json", record)
    return scan, to_plain(record)


def look_elsewhere(spectrum: Spectrum, out_dir: pathlib.Path, scan: Any, record: dict[str, Any], fit: FitSettings,
                   settings: Any, *, client: Any = None, progress: Any = None, recompute_stale: bool = False,
                   echo: Any = None) -> dict[str, Any] | None:
    """The global significance of ``scan``'s largest excess from background-only toys and by Gross-Vitells.

    The toys are drawn and scanned over the same masses with the scan's degree (the robust method's statistic; a
    tutorial-method scan is redone with it). Batches are checkpointed in ``out_dir/look_elsewhere.json`` and reused
    by a rerun of the same identity.

    Args:
        scan: the mass scan (:func:`scan_spectrum`) and ``record`` its ``mass_scan.json`` content.
        settings: the ``look_elsewhere`` settings (toys, batch size, seed, reference level).
        recompute_stale: a checkpoint of other inputs is deleted and the toys recomputed (the pipeline, which owns
            its folder); otherwise it is refused (``IdentityMismatchError`` names what differs).
        echo: where the pipeline says it recomputes.

    Returns:
        The result as plain data (``stats.lee.GlobalSignificance.record``), or None when no toys are asked for or
        the scan has one mass.
    """
    from stats.lee import global_significance

    masses = np.asarray([point["mass"] for point in scan.points], dtype=float)
    if settings.toys <= 0 or masses.size < 2:  # one mass: nowhere else to look
        return None
    from stats.errors import IdentityMismatchError

    observed = scan if fit.method == "robust" and not scan.failed else None
    checkpoint = out_dir / "look_elsewhere.json"

    def toys() -> Any:
        return global_significance(spectrum.counts, spectrum.edges, masses, degree=record["degree"],
                                   resolution=fit.resolution, toys=settings.toys, batch_size=settings.batch_size,
                                   seed=settings.seed, reference_level=settings.reference_level, client=client,
                                   out=checkpoint, progress=progress, observed=observed)

    try:
        result = toys()
    except IdentityMismatchError as err:
        if not recompute_stale:
            raise
        if echo is not None:
            echo(f"  {checkpoint.name}: {err}; recomputing")
        checkpoint.unlink()
        result = toys()
    return to_plain(result.record())


def axis_title(label: str) -> str:
    """The axis title of a patchset's label: the analysis's own mass patchset's ``mass`` is m_H in GeV."""
    return r"$m_H$ [GeV]" if label == "mass" else label


def scan_likelihoods(
    likelihoods: pathlib.Path | Any,
    out: pathlib.Path,
    *,
    client: Any,
    patches: list[str] | None = None,
    settings: Any = None,
    timeout: float | None = None,
    progress: Any = None,
    lumi: float | None = None,
) -> dict[str, Any]:
    """CLs of the patches of a HEPData likelihood on Dask; write ``out`` (resumable) and the CLs plot.

    A 2D patchset gets the exclusion contour, a 1D one (the analysis's mass patchset) CLs against its label.

    Args:
        likelihoods: tarball, directory or ``BkgOnly.json`` of the likelihood, or the likelihoods loaded
            (:func:`stats.hepdata.load_likelihoods`).
        out: result JSON; a rerun with the same file skips the points already done.
        client: the Dask client.
        patches: patch names or values (``"900,250"``); default all.
        settings: a ``stats.likelihoods.HypotestSettings`` (default: mu = 1, qtilde, code4/code4p, numpy).
        timeout: per-point time limit in seconds.
        progress: called with each finished point.
        lumi: the luminosity (fb^-1) of the plot's label.

    Returns:
        The content of ``out`` plus ``plots`` (paths) and ``plot_error`` where no plot could be drawn.
    """
    from stats.errors import StatsError
    from stats.hepdata import Likelihoods, load_likelihoods
    from stats.limit_plots import plot_cls_curve, plot_exclusion_contour
    from stats.likelihoods import HypotestSettings, select_patches
    from stats.patchscan import read_results, scan_patches

    loaded = likelihoods if isinstance(likelihoods, Likelihoods) else load_likelihoods(likelihoods)
    chosen = select_patches(loaded.patchset, patches or None)
    result = scan_patches(loaded, client, patches=chosen, settings=settings or HypotestSettings(), timeout=timeout,
                          out=out, progress=progress)
    record = read_results(out)
    labels = list(loaded.patchset.labels)
    try:
        if len(labels) == 2:
            plots = plot_exclusion_contour(result.results, labels, out.with_suffix(""))
        else:
            plots = plot_cls_curve(result.results, out.with_suffix(""), xlabel=axis_title(labels[0]), lumi=lumi)
        record["plots"] = [str(path) for path in plots]
    except StatsError as err:
        record["plots"], record["plot_error"] = [], str(err)
    return record


def limit_likelihoods(
    loaded: Any,
    out: pathlib.Path,
    *,
    client: Any,
    patches: list[str] | None = None,
    settings: Any = None,
    timeout: float | None = None,
    progress: Any = None,
    lumi: float | None = None,
    plot: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """95% CL upper limits on the signal strength of the patches of a likelihood on Dask; write ``out``
    (resumable) and the plots: for a 1D patchset the limits against its label with the expected bands (Brazil
    plot; ``m_H [GeV]`` for the analysis's mass patchset), for a 2D one the map of the observed limits.

    Args:
        loaded: the loaded likelihoods (:func:`stats.hepdata.load_likelihoods`).
        out: result JSON; a rerun with the same file reuses the patches already settled.
        client: the Dask client.
        patches: patch names or values; default all.
        settings: a ``stats.likelihoods.HypotestSettings`` (its ``mu`` is not used).
        timeout: per-hypotest time limit in seconds.
        progress: called with each finished patch.
        lumi: the luminosity (fb^-1) of the plots' label.
        plot: draw the plots.

    Returns:
        The :class:`stats.limit_scan.LimitScan`, and ``{"plots": [...], "plot_error": ...}`` (the error only where no
        plot could be drawn).
    """
    from stats.errors import StatsError
    from stats.limit_plots import plot_brazil, plot_limit_map
    from stats.limit_scan import scan_limits
    from stats.likelihoods import HypotestSettings, select_patches

    chosen = select_patches(loaded.patchset, patches or None)
    result = scan_limits(loaded, client, patches=chosen, settings=settings or HypotestSettings(), timeout=timeout,
                         out=out, progress=progress)
    labels = list(loaded.patchset.labels)
    plotted: dict[str, Any] = {"plots": []}
    if not plot:
        return result, plotted
    try:
        if len(labels) == 1:
            paths = plot_brazil([p.values[0] for p in result.results], result.results, out.with_suffix(""),
                                xlabel=axis_title(labels[0]), lumi=lumi)
        elif len(labels) == 2:
            paths = plot_limit_map(result.results, labels, out.with_name(out.stem + "_map"), lumi=lumi)
        else:
            raise StatsError(f"no limit plot for a patchset of {len(labels)} labels")
        plotted["plots"] = [str(path) for path in paths]
    except StatsError as err:
        plotted["plot_error"] = str(err)
    return result, plotted
