"""The end-to-end pipeline behind ``opendata-stats run``.

generate (cached) -> process on Dask -> fit, workspace, mu, significance -> mass scan -> PatchSet scan ->
``results.json`` and ``report.md``. Every step writes under one output directory and reports progress on stderr;
the Dask client is started once and shared by processing and both scans.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from deploy.analysis import (fit_spectrum, identity, limit_likelihoods, look_elsewhere, scan_likelihoods, scan_spectrum,
                             to_plain, write_json)
from deploy.config import Configuration, configure, selection_cuts
from deploy.progress import Steps, counting
from deploy.simulation import SIMULATION_SUBDIR, process_samples, samples_to_process
from processors.datasets import NOMINAL_LUMI_FB, resolve_files
from processors.engine import process_files
from processors.generate import DEFAULT_SEED, generate_dataset
from processors.generate.simulation import MC_SIGNAL_MASS, default_events
from processors.histograms import save_outputs
from processors.processor import DiphotonProcessor
from processors.schema import TREE_NAME
from stats.hepdata import load_likelihoods
from stats.hyy_model import compare_with_truth, load_templates
from stats.inference import asimov_significance
from stats.mass_patchset import build_mass_patchset
from stats.profile import gaussian_template
from stats.provenance import project_version
from stats.spectrum import load_spectrum

#: Parameters of the embedded default dataset; a cached dataset is reused only if its truth.json matches them.
DATASET_KEYS = ("lumi_fb", "scale", "seed", "signal_mass", "background_only")
#: The settings a report lists with where each came from (default, config file or flag).
REPORTED_SETTINGS = ["dataset.lumi_fb", "dataset.scale", "dataset.seed", "processing.chunksize",
                     "processing.simulation", "selection", "histogram.bins", "histogram.low", "histogram.high",
                     "fit.mass", "fit.degree", "fit.method", "fit.likelihood", "fit.resolution", "model", "mass_scan",
                     "mass_patchset",
                     "patchset.mu", "patchset.test_stat", "patchset.backend", "patchset.timeout"]
#: The identity record a step's output folder keeps, compared before its results are reused.
IDENTITY_FILE = "identity.json"


class PipelineResult(NamedTuple):
    """What :func:`run_pipeline` wrote.

    Attributes:
        out_dir: the output directory.
        results: the content of ``results.json``.
        results_path: ``results.json``.
        report_path: ``report.md``.
        failures: one line per failed chunk or scan point, or per failed step (empty when all succeeded).
    """

    out_dir: pathlib.Path
    results: dict[str, Any]
    results_path: pathlib.Path
    report_path: pathlib.Path
    failures: list[str]


def cached_dataset(data_dir: pathlib.Path, *, echo: Callable[[str], None], progress: bool = False,
                   **options: Any) -> dict[str, Any]:
    """Generate the dataset into ``data_dir`` unless a dataset with the same parameters is already there.

    With ``progress``, the generation shows bars of the events generated (:func:`generate_dataset`).

    With ``mc=True`` among ``options`` the simulated samples are generated too, and a cached dataset without them
    (no ``simulation`` in its truth, or a sample's file missing) is generated again. One with other numbers of
    simulated events than today's defaults (another version's, or ``generate --mc-events``) is kept, and a line
    says so.

    Returns:
        The dataset's truth record.
    """
    truth_path = data_dir / "truth.json"
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text())
        wanted = {key: options[key] for key in DATASET_KEYS if key in options}
        nominal = truth.get("nominal_lumi_fb", truth.get("lumi_fb"))
        found = {"lumi_fb": nominal, **{key: truth.get(key) for key in DATASET_KEYS if key != "lumi_fb"}}
        names = list(truth.get("files", []))
        samples = (truth.get("simulation") or {}).get("samples")
        if options.get("mc"):
            names += [sample["file"] for sample in samples.values()] if samples else [""]
        files_present = all(name and (data_dir / name).is_file() for name in names)
        if files_present and all(found.get(key) == value for key, value in wanted.items()):
            echo(f"  reusing the generated dataset in {data_dir} ({truth['events_written']:,} events)")
            if options.get("mc") and samples and truth.get("lumi_fb"):
                _note_sample_sizes(samples, float(truth["lumi_fb"]), data_dir, echo)
            return truth
    echo(f"  generating the default dataset into {data_dir} ...")
    dataset = generate_dataset(data_dir, **options, progress=progress)
    echo(f"  wrote {len(dataset.files)} files, {dataset.events_written:,} events")
    return dataset.truth


def _note_sample_sizes(samples: dict[str, Any], lumi_fb: float, data_dir: pathlib.Path,
                       echo: Callable[[str], None]) -> None:
    """A line for each simulated sample of a reused dataset whose generated events differ from today's default
    (:func:`processors.generate.simulation.default_events`): its statistics limit the spurious-signal test."""
    for name, count in default_events(lumi_fb / NOMINAL_LUMI_FB).items():
        found = samples.get(name, {}).get("nEvents")
        if found is not None and found != count:
            echo(f"  note: its simulated sample {name} has {found:,} generated events, today's default is {count:,} "
                 f"(delete {data_dir} to generate it again)")


def _truth_comparison(truth: dict[str, Any], fit: dict[str, Any], best: dict[str, Any] | None,
                      edges: np.ndarray, background: np.ndarray) -> dict[str, Any]:
    """Fitted signal, significance and mass against the injected truth (and its Asimov expectation)."""
    if truth.get("background_only"):
        return {"background_only": True, "max_local_significance": best and best["significance"]}
    expected = truth["expected_selected_signal"]
    template = expected * gaussian_template(edges, truth["signal_mass"], truth["signal_resolution"])
    background_fit = fit["background_fit"]
    compared = {
        "signal_mass": truth["signal_mass"],
        "best_scan_mass": best and best["mass"],
        "expected_selected_signal": expected,
        "selected_signal_events": truth.get("selected_signal_events"),
        "fitted_signal_yield": background_fit["signal_yield"],
        "fitted_signal_yield_unc": background_fit["signal_yield_unc"],
        "fitted_signal_yield_vs_truth": compare_with_truth(background_fit["signal_yield"],
                                                           background_fit["signal_yield_unc"], expected),
        "asimov_significance": asimov_significance(template, background),
        "observed_significance": fit.get("profile_likelihood", {}).get("significance"),
    }
    model, simulation = fit.get("simulation_model"), truth.get("simulation")
    if model is not None and "error" not in model and simulation is not None:
        # The data's signal over the simulated one: ggF + VBF are simulated, the data also hold VH and ttH.
        compared["simulation_mu"] = {"mu": model["mu"], "mu_unc": model["mu_unc"],
                                     **compare_with_truth(model["mu"], model["mu_unc"],
                                                          simulation.get("signal_strength"))}
    return compared


def patchset_signal(fit: dict[str, Any], simulation_dir: pathlib.Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signal of the analysis's mass patchset: how it is described, and :func:`build_mass_patchset`'s options.

    Where the simulation model was built (``fit["simulation_model"]`` without an error), the signal is the sum of
    its signal samples' nominal histograms in ``simulation_dir`` (ggH + VBF at the data's luminosity, simulated at
    125 GeV only), moved to each mass: ``mu = 1`` is the simulated Standard Model yield and shape at every mass.
    Without it, a Gaussian of the width fitted to the data with the yield fitted at the peak.

    Returns:
        The record for ``results["patchset_signal"]`` (``model``: ``"simulation"`` or ``"gaussian"``, ``shape``,
        ``yield``, ``normalisation``, and ``resolution_gev`` or ``samples`` and ``template_mass``) and the options.

    Raises:
        HistogramError: the simulated histograms cannot be read.
    """
    model = fit.get("simulation_model")
    if model is not None and "error" not in model:  # mu relative to the SM: the simulated yield at 125 GeV
        template = load_templates(simulation_dir).total(model["signal_samples"])
        record = {"model": "simulation", "samples": list(model["signal_samples"]), "template_mass": MC_SIGNAL_MASS,
                  "yield": float(template.sum()),
                  "normalisation": f"the simulated Standard Model yield at {MC_SIGNAL_MASS:g} GeV, at every mass",
                  "shape": f"the simulated {' + '.join(model['signal_samples'])} template at {MC_SIGNAL_MASS:g} GeV "
                           "moved to each mass (only that mass is simulated)"}
        return record, {"signal_template": template, "template_mass": MC_SIGNAL_MASS}
    resolution = fit["background_fit"]["sigma"]
    signal_yield = max(fit["background_fit"]["signal_yield"], 1.0)
    record = {"model": "gaussian", "yield": signal_yield, "resolution_gev": resolution,
              "normalisation": "the signal yield fitted at the peak (no simulation)",
              "shape": f"a Gaussian of the fitted width {resolution:.3g} GeV (no simulation)"}
    return record, {"resolution": resolution, "signal_yield": signal_yield}


def _likelihood_identity(likelihoods: pathlib.Path) -> list[dict[str, Any]]:
    from deploy.analysis import file_identity

    files = sorted(p for p in likelihoods.rglob("*") if p.is_file()) if likelihoods.is_dir() else [likelihoods]
    return [file_identity(path) for path in files]


def _reuse_or_clear(step_dir: pathlib.Path, stamp: dict[str, Any], outputs: list[pathlib.Path],
                    echo: Callable[[str], None]) -> None:
    """Keep a step's resumable ``outputs`` only when they were computed from the same identity ``stamp``."""
    path = step_dir / IDENTITY_FILE
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    stale = [output for output in outputs if output.exists()]
    if previous != stamp and stale:
        changed = sorted(key for key in stamp if previous is None or previous.get(key) != stamp[key])
        echo(f"  {step_dir.name}: earlier results were computed from other {', '.join(changed) or 'inputs'}; "
             "recomputing")
        for output in stale:
            shutil.rmtree(output) if output.is_dir() else output.unlink()
    write_json(path, stamp)


def run_pipeline(
    out_dir: str | pathlib.Path,
    *,
    client: Any,
    configuration: Configuration | None = None,
    data_dir: str | pathlib.Path | None = None,
    masses: np.ndarray | None = None,
    patch_masses: np.ndarray | None = None,
    likelihoods: str | pathlib.Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> PipelineResult:
    """Run every step of the analysis on the embedded default (generated) dataset.

    Every setting comes from ``configuration`` (default: the packaged defaults); the report lists where each came
    from. Each step records the identity of what it was computed from; the patch scan, the one step that resumes,
    reuses earlier points only when that identity is unchanged.

    Args:
        out_dir: output directory (created).
        client: the Dask client shared by processing and the scans.
        configuration: settings and their origins (:func:`deploy.config.configure`).
        data_dir: where the generated dataset lives (default ``out_dir/data``; reused when its parameters match).
        masses: mass-scan grid (default: the configuration's ``mass_scan``).
        patch_masses: masses of the analysis's own patchset (default: ``masses`` where given, else the
            configuration's ``mass_patchset``; each patch is a full CLs
            hypotest with the per-bin ``shapesys`` parameters).
        likelihoods: a HEPData likelihood (tarball, directory) to scan; default: a patchset built from the analysis.
        echo: progress output: a line as each step starts (with ``progress``, long steps count their seconds on
            stderr instead, as their own lines).
        progress: show progress bars (data generation, processing, the patch scans) and count each long step's
            seconds.

    Returns:
        PipelineResult: paths, the results record and the failures.
    """
    configuration = configuration or configure()
    settings = configuration.settings
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = pathlib.Path(data_dir) if data_dir is not None else out_dir / "data"
    started = time.perf_counter()
    failures: list[str] = []
    results: dict[str, Any] = {"version": project_version(), "settings": configuration.choices(REPORTED_SETTINGS)}

    echo("[1/5] dataset")
    # A seed left null is the generator's default, compared explicitly so that data of another seed is not reused.
    seed = DEFAULT_SEED if settings.dataset.seed is None else settings.dataset.seed
    options: dict[str, Any] = {"lumi_fb": settings.dataset.lumi_fb, "scale": settings.dataset.scale, "seed": seed}
    # The simulated samples are generated with the data unless processing.simulation is false.
    simulation = settings.processing.simulation
    if simulation is not False:
        options["mc"] = True
    truth = cached_dataset(data_dir, echo=echo, progress=progress, **options)
    results["dataset"] = {"directory": str(data_dir), **{k: truth.get(k) for k in (
        "release", "skim", "lumi_fb", "scale", "seed", "signal_mass", "events_written")}}

    echo("[2/5] processing on Dask")
    files = resolve_files(metadata=data_dir / "metadata.json")
    processing_dir = out_dir / "processing"
    histogram, processing = settings.histogram, settings.processing
    processor = DiphotonProcessor(cuts=selection_cuts(settings), bins=histogram.bins,
                                  mass_range=(histogram.low, histogram.high))
    result = process_files(files, processor=processor, client=client, tree=TREE_NAME,
                           chunksize=processing.chunksize, task_entries=processing.task_entries,
                           retries=processing.retries, timeout=processing.timeout,
                           checkpoint_dir=processing_dir / "checkpoint", progress=progress)
    save_outputs(processing_dir, result, lumi_fb=truth["lumi_fb"])
    failures += [f"chunk {f.file} [{f.entry_start}, {f.entry_stop}): {f.error}" for f in result.failed_chunks]
    results["processing"] = {"directory": str(processing_dir), "events_in_files": result.events_in_files,
                             "events_processed": result.events_processed,
                             "selected": float(result.histograms["mass"].sum()),
                             "failed_chunks": len(result.failed_chunks), "wall_time": result.wall_time,
                             "identity": getattr(result, "identity", None)}
    echo(f"  {result.events_processed:,} of {result.events_in_files:,} events in {result.wall_time:.1f} s, "
         f"{results['processing']['selected']:,.0f} selected")
    simulation_dir = processing_dir / SIMULATION_SUBDIR
    samples = samples_to_process(simulation, metadata=data_dir / "metadata.json", echo=echo)
    if samples:
        # Every sample at the data's whole luminosity (the luminosity the generated data stand for).
        simulated = process_samples(
            samples, lumi_fb=truth["lumi_fb"], processor_options={
                "cuts": processor.cuts, "bins": processor.bins, "mass_range": processor.mass_range},
            client=client, tree=TREE_NAME, chunksize=processing.chunksize, task_entries=processing.task_entries,
            retries=processing.retries, timeout=processing.timeout,
            checkpoint_dir=simulation_dir / "checkpoint", progress=progress)
        save_outputs(simulation_dir, simulated, lumi_fb=truth["lumi_fb"])
        failures += [f"chunk {f.file} [{f.entry_start}, {f.entry_stop}): {f.error}" for f in simulated.failed_chunks]
        yields = simulated.histograms["mc_mass"][:, "nominal", :].project("dataset")
        results["processing"]["simulation"] = {
            "directory": str(simulation_dir), "events_processed": simulated.events_processed,
            "failed_chunks": len(simulated.failed_chunks), "wall_time": simulated.wall_time,
            "lumi_fb": truth["lumi_fb"], "yields": dict(zip(yields.axes[0], yields.values()))}
        echo(f"  simulated samples at {truth['lumi_fb']:.4g} fb^-1: " + ", ".join(
            f"{name} {value:,.1f}" for name, value in results["processing"]["simulation"]["yields"].items()))
    elif simulation_dir.exists():
        shutil.rmtree(simulation_dir)  # an earlier run's samples are not these data's

    echo("[3/5] background fit, workspace, signal strength, significance")
    with Steps(echo, live=progress) as steps:
        fit = fit_spectrum(processing_dir, out_dir / "fit", settings.fit, settings.model, steps=steps)
    results["fit"] = {key: fit.get(key) for key in (
        "degree", "degree_choice", "degree_scan", "mass", "method", "mu", "mu_unc", "significance",
        "profile_likelihood", "plots", "identity")}
    model = fit.get("simulation_model")
    if model is not None:
        results["fit"]["simulation_model"] = model if "error" in model else {key: model[key] for key in (
            "signal_samples", "background_samples", "degree", "expected_signal", "signal_yields", "continuum_scale",
            "lumi_uncertainty", "spurious_signal", "spurious_uncertainty", "workspace", "modifiers", "mu", "mu_unc",
            "significance", "parameters", "plots")}
        if "error" in model:
            failures.append(f"simulation model: {model['error']}")
    results["fit"]["background_fit"] = {key: fit["background_fit"][key] for key in (
        "chi2_ndf", "signal_yield", "signal_yield_unc", "sigma")}
    if "error" in fit["significance"]:
        failures.append(f"workspace significance: {fit['significance']['error']}")
    echo(f"  degree {fit['degree']}, signal yield {fit['background_fit']['signal_yield']:.0f} "
         f"+/- {fit['background_fit']['signal_yield_unc']:.0f}, mu = {fit['mu']:.2f} +/- {fit['mu_unc']:.2f} "
         "(tutorial model)")
    if model is not None and "error" not in model:
        echo(f"  simulation model: mu = {model['mu']:.3f} +/- {model['mu_unc']:.3f} (relative to the SM), "
             f"significance observed {model['significance']['observed']:.2f}, expected "
             f"{model['significance']['expected']:.2f} sigma")

    echo("[4/5] mass scan on Dask")
    spectrum = load_spectrum(processing_dir)
    grid = settings.mass_scan.masses() if masses is None else np.asarray(masses, dtype=float)
    if masses is not None:
        results["settings"]["mass_scan"] = {"value": {"masses": grid}, "origin": "given (--masses)"}
    with Steps(echo, live=progress) as steps:
        steps(f"  profile-likelihood fits at {grid.size} masses on Dask, and plots")
        scan, scan_record = scan_spectrum(spectrum, out_dir / "mass_scan", grid, settings.fit, degree=fit["degree"],
                                          client=client, source=processing_dir)
    failures += [f"mass {p['mass']:g} GeV: {p['error']}" for p in scan.failed]
    results["mass_scan"] = {key: scan_record[key] for key in ("best", "failed", "wall_time", "plots", "identity")}
    if scan.best:
        echo(f"  largest local significance {scan.best['significance']:.2f} sigma at {scan.best['mass']:g} GeV "
             f"({len(scan.failed)} failed points, {scan.wall_time:.1f} s)")
    with Steps(echo, live=progress) as steps:
        steps(f"  look-elsewhere effect: {settings.look_elsewhere.toys} background-only toys")
        lee = look_elsewhere(spectrum, out_dir / "mass_scan", scan, scan_record, settings.fit, settings.look_elsewhere,
                             client=client, recompute_stale=True, echo=echo)
    results["look_elsewhere"] = lee and {key: lee[key] for key in (
        "observed", "toys", "gross_vitells", "trials_factor", "batches", "identity", "complete")}
    if lee is not None:
        failures += [f"look-elsewhere toy batch {batch}" for batch in lee["batches"]["failed"]]
        echo(f"  global significance from {lee['toys']['toys']} background-only toys: {lee['toys']['statement']}")
    results["truth"] = _truth_comparison(truth, fit, scan.best, spectrum.edges, np.asarray(fit["background"]))

    echo("[5/5] PatchSet hypotest scan on Dask")
    patchset_dir = out_dir / "patchset"
    patchset_dir.mkdir(parents=True, exist_ok=True)
    own_lumi = None  # a published likelihood's plots do not carry this data's luminosity
    if likelihoods is None:
        own_lumi = truth["lumi_fb"]
        if patch_masses is None:  # --masses sets both grids; otherwise the patchset has its own
            patch_masses = grid if masses is not None else settings.mass_patchset.masses()
        patch_masses = np.asarray(patch_masses, float)
        results["patchset_signal"], signal_options = patchset_signal(fit, simulation_dir)
        built = build_mass_patchset(spectrum.counts, spectrum.edges, fit["background"], fit["background_unc"],
                                    masses=patch_masses, **signal_options)
        likelihoods = patchset_dir / "likelihoods"
        likelihoods.mkdir(exist_ok=True)
        write_json(likelihoods / "BkgOnly.json", built.background_only)
        write_json(likelihoods / "patchset.json", built.patchset)
        echo(f"  no published likelihood given: scanning the analysis's own mass patchset ({patch_masses.size} patches)")
    likelihoods = pathlib.Path(likelihoods)
    hypotest = settings.patchset.hypotest_settings()
    stamp = identity(_likelihood_identity(likelihoods), {**hypotest._asdict(), "timeout": settings.patchset.timeout})
    cls_path = patchset_dir / "cls.json"
    _reuse_or_clear(patchset_dir, stamp, [cls_path, *patchset_dir.glob("cls.p*")], echo)
    with Steps(echo, live=progress) as steps:  # reading, checking and digesting the archive: seconds
        steps("  loading the likelihoods")
        loaded = load_likelihoods(likelihoods)
    patches = len(loaded.patchset.patches)
    with counting(f"  CLs of {patches} patches on Dask", total=patches, unit="patch", echo=echo,
                  live=progress) as bar:
        record = scan_likelihoods(loaded, cls_path, client=client, settings=hypotest,
                                  timeout=settings.patchset.timeout, lumi=own_lumi,
                                  progress=lambda point: bar.update())
        bar.update(patches - bar.n)  # the patches reused from an earlier run
    failed = [r for r in record["results"] if r["status"] != "ok"]
    failures += [f"patch {r['name']}: {r['error']}" for r in failed]
    results["patchset"] = {"likelihoods": str(likelihoods), "points": len(record["results"]),
                           "failed": len(failed), "wall_time": record.get("wall_time"),
                           "plots": record.get("plots", []), "plot_error": record.get("plot_error"),
                           "identity": stamp}
    echo(f"  {len(record['results'])} patches, {len(failed)} failed, {record.get('wall_time', 0):.1f} s")
    if settings.patchset.limits and hypotest.test_stat in ("qtilde", "q"):
        limits_dir = patchset_dir / "limits"
        limits_dir.mkdir(exist_ok=True)
        limits_path = limits_dir / "limits.json"
        limit_stamp = identity(_likelihood_identity(likelihoods), {**hypotest._replace(mu=1.0)._asdict(),
                                                                   "timeout": settings.patchset.timeout})
        _reuse_or_clear(limits_dir, limit_stamp, [limits_path, *limits_dir.glob("limits*.p*")], echo)
        with counting(f"  upper limits of {patches} patches on Dask", total=patches, unit="patch", echo=echo,
                      live=progress) as bar:
            limited, plotted = limit_likelihoods(loaded, limits_path, client=client, settings=hypotest,
                                                 timeout=settings.patchset.timeout, lumi=own_lumi,
                                                 progress=lambda point: bar.update())
            bar.update(patches - bar.n)  # the patches reused from an earlier run
        failures += [f"limits of patch {r.name}: {r.error}" for r in limited.failed]
        results["limits"] = {"path": str(limits_path), "patches": len(limited.results), "failed": len(limited.failed),
                             "wall_time": limited.wall_time, **plotted, "identity": limit_stamp,
                             "points": [{"name": r.name, "values": r.values, "observed": r.observed,
                                         "expected": r.expected, "status": r.status} for r in limited.results]}
        echo(f"  upper limits of {len(limited.results)} patches, {len(limited.failed)} failed, "
             f"{limited.wall_time:.1f} s")

    results["failures"] = failures
    results["wall_time"] = time.perf_counter() - started
    results_path = write_json(out_dir / "results.json", results)
    report_path = out_dir / "report.md"
    report_path.write_text(render_report(to_plain(results), out_dir))
    return PipelineResult(out_dir, to_plain(results), results_path, report_path, failures)


def _settings_table(results: dict[str, Any]) -> list[str]:
    lines = ["## Settings", "", "| setting | value | from |", "| --- | --- | --- |"]
    for key, choice in results["settings"].items():
        value = choice["value"]
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        if key == "fit.degree" and results["fit"].get("degree_choice", {}).get("requested") == "auto":
            shown = f"auto: {results['fit']['degree']} ({results['fit']['degree_choice']['by']})"
        lines.append(f"| `{key}` | {shown} | {choice['origin']} |")
    return [*lines, ""]


def _yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")


def _pull(compared: dict[str, Any]) -> str:
    if compared.get("pull") is None:
        return "no truth to compare with"
    return (f"pull {compared['pull']:+.2f} sigma, within 2 sigma: {_yes_no(compared['within_2_sigma'])}")


def _background_function(fit: dict[str, Any], how: str) -> list[str]:
    """The background polynomial's choice: F-tests and, with the simulation, the spurious-signal test."""
    lines = ["## Background function", "",
             f"Polynomial degree {fit['degree']} ({how}), chi2/ndf = {fit['background_fit']['chi2_ndf']:.3f} "
             "(robust fit of polynomial + Gaussian to the data).", ""]
    model = fit.get("simulation_model") or {}
    spurious = model.get("spurious_signal", {})
    rows = fit.get("degree_scan") or [{"degree": fit["degree"]}]
    if len(rows) > 1 or spurious:
        lines += ["| degree | chi2/ndf | F-test p-value (vs degree - 1) | spurious signal [events] | "
                  "/ expected signal | / sigma_bkg | simulation stat. [events] | ATLAS criteria | zeta [events] | "
                  "relaxed criteria |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            degree = row["degree"]
            chi2 = f"{row['chi2'] / row['ndf']:.3f}" if row.get("ndf") else ""
            f_test = f"{row['f_p_value']:.3g}" if row.get("f_p_value") is not None else ""
            test = spurious.get(str(degree))
            relaxed = test and test.get("passes_relaxed")
            cells = [""] * 7 if test is None else [
                f"{test['value']:.1f} at {test['mass']:g} GeV", f"{100 * test['relative_to_signal']:.1f} %",
                f"{100 * test['relative_to_uncertainty']:.1f} %",
                "" if test.get("mc_unc") is None else f"{test['mc_unc']:.1f}", "pass" if test["passes"] else "fail",
                "" if test.get("zeta") is None else f"{test['zeta']:.1f}",
                "" if relaxed is None else ("pass" if relaxed else "fail")]
            mark = " (chosen)" if degree == fit["degree"] else ""
            lines.append(f"| {degree}{mark} | {chi2} | {f_test} | " + " | ".join(cells) + " |")
        lines.append("")
    if spurious:
        lines += ["Spurious signal: the signal (simulated template moved to each mass hypothesis) fitted with the "
                  "polynomial to the background-only template (the simulated yy continuum normalised to the data "
                  "outside 120-130 GeV) as if it were data (binned Poisson likelihood); the largest |S| over the "
                  "masses is S_spur. ATLAS criteria: |S_spur| < 10 % of the expected signal or < 20 % of sigma_bkg "
                  "(the fitted signal's uncertainty at the data's statistics). The simulation stat. column is the "
                  "template's own statistical uncertainty on S_spur; zeta, the largest |S| less twice that, enters "
                  "the relaxed criteria (ATLAS, arXiv:2207.00348). The model's spurious-signal uncertainty is "
                  "S_spur where the template's statistical uncertainty is below sigma_bkg (the template holds more "
                  "statistics than the data), zeta where it is not (S_spur is then mostly the template's own "
                  "fluctuation).", ""]
        chosen = model.get("spurious_uncertainty")
        if chosen:
            lines += [f"Spurious-signal uncertainty of the chosen degree {fit['degree']}: "
                      f"{chosen['explanation']}.", ""]
    return lines


def _tutorial_model(fit: dict[str, Any], truth: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The tutorial's model and the two other significances, each with its method."""
    background = fit["background_fit"]
    resolution = settings.get("fit.resolution", {}).get("value")
    lines = ["## Tutorial model (signal: the Gaussian fitted to these data)", "",
             f"Fitted signal yield {background['signal_yield']:.0f} +/- {background['signal_yield_unc']:.0f} events "
             f"at {fit['mass']:g} GeV; tutorial workspace mu = {fit['mu']:.3f} +/- {fit['mu_unc']:.3f} (a normfactor "
             "on the signal fitted to the same data: 1 by construction, not a signal strength).", ""]
    significance = fit["significance"]
    if "error" in significance:
        lines += [f"- Tutorial workspace significance failed: {significance['error']}"]
    else:
        lines += [f"- Discovery significance, tutorial workspace (pyhf/cabinetry q0; the fitted Gaussian as signal, "
                  f"per-bin shapesys of the background fit): observed {significance['observed']:.2f} sigma, expected "
                  f"{significance['expected']:.2f} sigma."]
    profile_point = fit.get("profile_likelihood") or {}
    if profile_point.get("status") == "ok":
        width = f" {resolution:g} GeV" if resolution is not None else ""
        lines += [f"- Discovery significance, profile likelihood (binned Poisson fit of polynomial + Gaussian of "
                  f"fixed width{width}, polynomial coefficients profiled, no systematic uncertainty; the mass scan's "
                  f"method): {profile_point['significance']:.2f} sigma."]
    if not truth.get("background_only"):
        lines += [f"- Expected significance of the injected truth (Asimov formula: the generator's expected "
                  f"{truth['expected_selected_signal']:.0f} selected signal events at {truth['signal_mass']} GeV as "
                  f"a Gaussian over the fitted background, no systematic uncertainty): "
                  f"{truth['asimov_significance']:.2f} sigma.",
                  f"- Fitted signal yield against the injected {truth['expected_selected_signal']:.0f} events: "
                  f"{_pull(truth.get('fitted_signal_yield_vs_truth') or {})}."]
    return [*lines, ""]


#: What each modifier of the simulation model stands for, in the report.
_MODIFIER_MEANING = {
    "mu": "signal strength relative to the SM (POI)",
    "lumi": "luminosity",
    "photon_energy_scale": "photon energy scale (+-0.5 % templates)",
    "photon_energy_resolution": "photon energy resolution (extra 1 % smearing templates)",
    "spurious_signal": "spurious signal of the background function (S_spur x signal shape)",
}


def _simulation_model(fit: dict[str, Any], truth: dict[str, Any]) -> list[str]:
    """The model on the simulated templates: mu, its significance, its modifiers, and mu against the truth."""
    model = fit.get("simulation_model")
    if model is None:
        return []
    lines = ["## Simulation model (signal from simulation: mu relative to the Standard Model)", ""]
    if "error" in model:
        return [*lines, f"Failed: {model['error']}", ""]
    significance, parameters = model["significance"], model["parameters"]
    spurious, taken = model["spurious_signal"][str(model["degree"])], model["spurious_uncertainty"]
    lines += [
        f"Samples: signal = {' + '.join(model['signal_samples'])} simulation, {model['expected_signal']:.1f} events "
        f"at mu = 1; background = Bernstein polynomial of degree {model['degree']} with free coefficients, fitted "
        f"to the data; spurious-signal uncertainty {taken['value']:.1f} events ({taken['from']}"
        + ("" if taken["from"] == "S_spur" else f"; S_spur {spurious['value']:.1f}") + "). "
        f"Workspace `{pathlib.Path(model['workspace']).name}`.", "",
        f"- Signal strength (profile likelihood, every nuisance parameter profiled; cabinetry fit, verified): "
        f"mu = {model['mu']:.3f} +/- {model['mu_unc']:.3f}.",
        f"- Discovery significance, simulation model (pyhf q0 with every systematic uncertainty): observed "
        f"{significance['observed']:.2f} sigma, expected {significance['expected']:.2f} sigma (Asimov data at "
        "mu = 1, background as fitted to the data).",
    ]
    compared = truth.get("simulation_mu")
    if compared:
        lines.append(f"- Against the injected signal strength {compared['truth']:.3f} (`truth.json` simulation."
                     f"signal_strength: the data's signal over the simulated ggF + VBF): {_pull(compared)}.")
    lines += ["", "| modifier | type | what | fitted |", "| --- | --- | --- | --- |"]
    for name, kind in model["modifiers"]:
        if name.startswith("background_bernstein_"):
            continue
        value = parameters.get(name)
        fitted = "" if value is None else f"{value[0]:.3f} +/- {value[1]:.3f}"
        lines.append(f"| `{name}` | {kind} | {_MODIFIER_MEANING.get(name, '')} | {fitted} |")
    lumi = model.get("lumi_uncertainty")
    lines.append(f"| `background_bernstein_0..{model['degree']}` | normfactor | background polynomial coefficients "
                 "(free) | |")
    lines += ["", f"Luminosity uncertainty {100 * lumi:.1f} % (Run 2, ATLAS-CONF-2019-021)." if lumi else "", ""]
    return lines


def _shown(value: float | None, spec: str) -> str:
    """``value`` formatted, or ``n/a`` when it is undefined (None)."""
    return "n/a" if value is None else format(value, spec)


def _limits_section(results: dict[str, Any], link: Callable[[str], str]) -> list[str]:
    """The upper limits of the patch scan: how, the plot, and the table (the first 30 patches)."""
    limits = results.get("limits")
    if not limits:
        return []
    signal = results.get("patchset_signal")
    how = ("95% CL CLs upper limits on the signal strength mu (qtilde, asymptotic formulae; each patch a Dask task"
           + (f"; mu = 1 is {signal['normalisation']}, {signal['yield']:.1f} events" if signal else "") + ").")
    lines = ["## Upper limits", "", how, "",
             f"{limits['patches']} patches, {limits['failed']} failed, {limits['wall_time']:.1f} s.", "",
             *(link(p) for p in limits["plots"] if p.endswith(".png"))]
    if limits.get("plot_error"):
        lines += [f"No limit plot: {limits['plot_error']}"]

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    lines += ["", "| patch | observed | expected | expected -1 sigma | expected +1 sigma | excluded at mu = 1 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for point in limits["points"][:30]:
        if point["status"] != "ok":
            lines.append(f"| {point['name']} | failed | | | | |")
            continue
        expected = point["expected"] or [None] * 5
        excluded = "-" if point["observed"] is None else _yes_no(point["observed"] < 1.0)
        lines.append(f"| {point['name']} | {shown(point['observed'])} | {shown(expected[2])} | {shown(expected[1])} "
                     f"| {shown(expected[3])} | {excluded} |")
    if len(limits["points"]) > 30:
        lines.append(f"| ... {len(limits['points']) - 30} more in `{limits['path']}` | | | | | |")
    return [*lines, ""]


def render_report(results: dict[str, Any], out_dir: pathlib.Path) -> str:
    """A short Markdown report of ``results`` with links to every plot (PNG) and where each setting came from."""
    def link(path: str) -> str:
        relative = pathlib.Path(path).resolve().relative_to(out_dir.resolve())
        return f"![{relative.stem}]({relative.as_posix()})"

    dataset, processing, fit, scan = results["dataset"], results["processing"], results["fit"], results["mass_scan"]
    truth, settings = results["truth"], results["settings"]
    window = f"{settings['histogram.low']['value']:g}-{settings['histogram.high']['value']:g} GeV"
    choice = fit["degree_choice"]
    how = choice["by"] if choice["requested"] == "auto" else f"set by {settings['fit.degree']['origin']}"
    lines = [
        "# opendata-stats report", "",
        f"opendata-stats {results['version']}. Dataset: {dataset['release']} `{dataset['skim']}`, "
        f"{dataset['events_written']:,} generated events ({dataset['lumi_fb']:.3g} fb^-1, seed {dataset['seed']}), "
        f"in `{dataset['directory']}`.", "",
        *_settings_table(results),
        "## Processing", "",
        f"{processing['events_processed']:,} of {processing['events_in_files']:,} events processed in "
        f"{processing['wall_time']:.1f} s; {processing['selected']:,.0f} diphoton candidates in {window}; "
        f"{processing['failed_chunks']} failed chunks.", "",
    ]
    simulated = processing.get("simulation")
    if simulated:
        lines += [f"Simulated samples, weighted to the data's {simulated['lumi_fb']:.4g} fb^-1: " + ", ".join(
            f"{name} {value:,.1f}" for name, value in simulated["yields"].items()) + f" selected events; "
            f"{simulated['failed_chunks']} failed chunks.", ""]
    lines += _background_function(fit, how)
    lines += _tutorial_model(fit, truth, settings)
    lines += _simulation_model(fit, truth)
    model_plots = (fit.get("simulation_model") or {}).get("plots", [])
    lines += [*(link(p) for p in [*fit["plots"], *model_plots] if p.endswith(".png")), "", "## Mass scan", ""]
    if scan["best"]:
        lines += [f"Largest local significance {scan['best']['significance']:.2f} sigma at "
                  f"{scan['best']['mass']:g} GeV; {scan['failed']} failed points; {scan['wall_time']:.1f} s.", ""]
    lee = results.get("look_elsewhere")
    if lee:
        observed = lee["observed"]
        lines += [f"Global significance of the largest local excess ({observed['max_significance']:.2f} sigma local at "
                  f"{observed['mass']:g} GeV, p_local {observed['p_local']:.3g}), look-elsewhere effect over the "
                  f"scanned masses:", "",
                  f"- from {lee['toys']['toys']} background-only toys (method: the fraction of toys whose largest "
                  f"local significance reaches the observed one): {lee['toys']['statement']}",
                  *(f"- Gross-Vitells (upcrossings of {g['level']:g} sigma counted on the {g['source']}): "
                    f"p_global = {_shown(g['p_value'], '.3g')}, {_shown(g['significance'], '.2f')} sigma"
                    + ("" if g.get("valid", True) else " (not valid: the local excess is below the reference level)")
                    for g in lee["gross_vitells"]),
                  f"- trials factor {_shown(lee['trials_factor'], '.3g')}", ""]
    lines += [*(link(p) for p in scan["plots"] if p.endswith(".png")), "", "## PatchSet scan", ""]
    patchset = results["patchset"]
    lines += [f"{patchset['points']} patches of `{patchset['likelihoods']}`, {patchset['failed']} failed, "
              f"{patchset['wall_time']:.1f} s.", ""]
    signal = results.get("patchset_signal")
    if signal:
        lines += [f"Signal of each patch: {signal['shape']}; mu = 1 is {signal['normalisation']} "
                  f"({signal['yield']:.1f} events).", ""]
    lines += [*(link(p) for p in patchset["plots"] if p.endswith(".png")), ""]
    if patchset["plot_error"]:
        lines += [f"No CLs plot: {patchset['plot_error']}", ""]
    lines += _limits_section(results, link)
    if results["failures"]:
        lines += ["## Failures", "", *(f"- {line}" for line in results["failures"]), ""]
    return "\n".join(lines)
