"""The simulated samples beside the data: their processing (``process``, ``run``) and the H->yy model built on
them (``fit``, ``run``).

Processing: each sample of :data:`processors.datasets.SIMULATED_SAMPLES` that the data's source lists (a metadata
file, or a release online) is one :func:`processors.engine.process_files` run of a
:class:`processors.simulation.SimulationProcessor` normalised to the data's whole luminosity (a ``--fraction`` of
a sample gives that fraction of its yield, as the same fraction of the data holds that fraction of the
luminosity). The samples' results are merged into one and written to ``OUT/simulation/`` (``histograms.json``
with ``mc_mass`` and ``mc_cutflow``, ``summary.json`` with its ``simulation`` section); the data's outputs in
``OUT`` are the same with or without them.

The model (:func:`simulation_model`): the background polynomial's degree as the tutorial model chooses it, the
spurious-signal test of each degree the F-tests compared (or of the degree set), the workspace of
:mod:`stats.hyy_model` with the chosen degree's spurious-signal uncertainty (``S_spur``, or ``zeta`` where the
continuum template's statistics dominate: :attr:`stats.hyy_model.SpuriousSignal.uncertainty`), its fit and its
significance.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from coffea.processor import accumulate

from processors.datasets import SIMULATED_SAMPLES, ResolvedSample, resolve_samples
from processors.engine import ProcessingResult, process_files
from processors.errors import DatasetResolutionError
from processors.simulation import SimulationProcessor
from stats.errors import HistogramError
from stats.provenance import project_version

#: Where the simulated samples' outputs go, inside a processing output directory.
SIMULATION_SUBDIR = "simulation"


def samples_to_process(
    setting: str | bool, *, release: str | None = None, metadata: str | pathlib.Path | None = None,
    skim: str = "GamGam", protocol: str = "root", echo: Callable[[str], None] | None = None,
) -> list[ResolvedSample]:
    """The simulated samples to process beside the data, as ``processing.simulation`` asks.

    Args:
        setting: ``"auto"`` (the samples the source lists; none where it lists none or there is no source),
            True (all of them, an error where they cannot be resolved) or False (none).
        release, metadata, skim, protocol: the data's source (as for :func:`processors.datasets.resolve_samples`).
        echo: told why no sample is processed under ``"auto"``.

    Raises:
        DatasetResolutionError: with ``setting`` True, no source or a sample that does not resolve.
    """
    if setting is False:
        return []
    if release is None and metadata is None:
        if setting is True:
            raise DatasetResolutionError("the simulated samples need --metadata or --release "
                                         "(processing.simulation is true)")
        return []
    try:
        return resolve_samples(release=release, metadata=metadata, skim=skim, protocol=protocol)
    except DatasetResolutionError as err:
        if setting is True:
            raise
        if echo is not None:
            echo(f"note: no simulated samples processed ({err})")
        return []


def merge_results(results: Mapping[str, ProcessingResult]) -> ProcessingResult:
    """One result of several samples' runs: histograms accumulated (coffea), counts and failures added up; its
    ``identity`` holds each sample's."""
    parts = list(results.values())
    if not parts:
        raise ValueError("no result to merge")
    return ProcessingResult(
        histograms=accumulate([part.histograms for part in parts]),
        events_in_files=sum(part.events_in_files for part in parts),
        events_processed=sum(part.events_processed for part in parts),
        failed_chunks=[failure for part in parts for failure in part.failed_chunks],
        files=[name for part in parts for name in part.files],
        wall_time=sum(part.wall_time for part in parts),
        chunks=sum(part.chunks for part in parts),
        resumed_chunks=sum(part.resumed_chunks for part in parts),
        tasks=sum(part.tasks for part in parts),
        fraction=parts[0].fraction,
        entries_total=sum(part.entries_total for part in parts),
        identity={"samples": {name: part.identity for name, part in results.items()}, "version": project_version()},
    )


def process_samples(
    samples: Sequence[ResolvedSample],
    *,
    lumi_fb: float,
    processor_options: Mapping[str, Any],
    checkpoint_dir: pathlib.Path | None,
    **engine: Any,
) -> ProcessingResult:
    """Process each sample (one engine run each, ``dataset`` its name) and merge the results.

    Args:
        samples: the resolved samples.
        lumi_fb: the data's whole luminosity (fb^-1), which every sample is normalised to (never scaled by the
            processing fraction).
        processor_options: ``cuts``, ``bins``, ``mass_range`` of the data's processor.
        checkpoint_dir: a folder per sample inside it (None: no checkpoints).
        **engine: :func:`processors.engine.process_files` options (client, chunksize, fraction, ...).
    """
    processor = SimulationProcessor(lumi_fb=lumi_fb, **processor_options)
    results = {}
    for sample in samples:
        results[sample.name] = process_files(
            sample.files, processor=processor, dataset=sample.name,
            checkpoint_dir=None if checkpoint_dir is None else checkpoint_dir / sample.name, **engine)
    return merge_results(results)


def sample_roles(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The signal and the background samples among ``names`` (a sample not in the release's table is background,
    as :func:`processors.datasets.resolve_samples` counts it)."""
    signal = {sample.name for sample in SIMULATED_SAMPLES if sample.signal}
    return [name for name in names if name in signal], [name for name in names if name not in signal]


def check_normalisation(data_dir: pathlib.Path, simulated_dir: pathlib.Path) -> None:
    """Refuse simulated samples normalised to another luminosity than the data's whole one (an earlier run's).

    Raises:
        HistogramError: naming both luminosities.
    """
    import json

    def summary(directory: pathlib.Path) -> dict[str, Any]:
        try:
            return json.loads((directory / "summary.json").read_text())
        except (OSError, ValueError):
            return {}

    data, simulated = summary(data_dir), summary(simulated_dir)
    if data.get("lumi_fb") is None or simulated.get("lumi_fb") is None or not data.get("fraction"):
        return
    whole = data["lumi_fb"] / data["fraction"]
    if abs(simulated["lumi_fb"] - whole) > 1e-6 * whole:
        raise HistogramError(f"the simulated samples in {simulated_dir} are weighted to {simulated['lumi_fb']:.6g} "
                             f"fb^-1, the data in {data_dir} hold {whole:.6g} fb^-1: process them again with the data")


def simulation_model(
    spectrum: Any,
    directory: pathlib.Path,
    out_dir: pathlib.Path,
    *,
    degree: int,
    degree_scan: Any,
    model: Any,
    fit_mass: float,
) -> dict[str, Any]:
    """The H->yy model on the simulated templates in ``directory``: spurious-signal tests, workspace, fit.

    Args:
        spectrum: the data (:class:`stats.spectrum.Spectrum`).
        directory: the simulated samples' processing output (``histograms.json`` with ``mc_mass``).
        out_dir: where ``workspace_simulation.json`` and the plots go.
        degree: the background polynomial's degree (the tutorial model's choice).
        degree_scan: the F-test scan that chose it (:class:`stats.background.DegreeScan`), or None.
        model: the ``model`` settings (:class:`deploy.config.ModelSettings`).
        fit_mass: the signal mass hypothesis (GeV); the templates are moved from the simulated mass to it.

    Returns:
        Plain data: samples, modifiers, the spurious-signal tests by degree, ``mu``, its uncertainty, the
        observed and expected significance and every parameter's fitted value.
    """
    import numpy as np

    from processors.generate.simulation import MC_SIGNAL_MASS
    from stats import hyy_model
    from stats.workspace import model_info, save_workspace

    check_normalisation(directory.parent, directory)
    templates = hyy_model.load_templates(directory)
    signal_names, background_names = sample_roles(templates.samples)
    if not signal_names or not background_names:
        raise HistogramError(f"the simulated samples {', '.join(templates.samples)} hold no signal or "
                                       "no continuum")
    if not np.allclose(templates.edges, spectrum.edges):
        raise HistogramError("the simulated histograms' binning differs from the data's")
    shift = float(fit_mass) - MC_SIGNAL_MASS
    signal = hyy_model.signal_templates(templates, signal_names, shift=shift)
    template, scale = hyy_model.continuum_template(spectrum.counts, spectrum.edges, templates.total(background_names))
    variance = np.sum([templates.variances[name][hyy_model.NOMINAL] for name in background_names], axis=0) * scale**2
    masses = model.spurious_masses()
    degrees = [row.degree for row in degree_scan.rows] if degree_scan is not None else [degree]
    tests = {d: hyy_model.spurious_signal(template, spectrum.edges, signal.nominal, degree=d, masses=masses,
                                          signal_mass=float(fit_mass), window=tuple(model.spurious_window),
                                          template_variance=variance) for d in degrees}
    chosen = tests[degree]
    spec = hyy_model.build_hyy_workspace(spectrum.counts, spectrum.edges, signal, degree=degree,
                                         spurious=chosen.uncertainty, lumi_uncertainty=model.lumi_uncertainty)
    workspace_path = save_workspace(spec, out_dir / "workspace_simulation.json")
    result = hyy_model.fit_hyy_model(spec)
    record = {
        "signal_samples": signal_names, "background_samples": background_names, "mass": float(fit_mass),
        "simulated_mass": MC_SIGNAL_MASS, "degree": degree,
        "expected_signal": result.expected_signal,
        "signal_yields": {name: float(templates.values[name][hyy_model.NOMINAL].sum()) for name in signal_names},
        "continuum_scale": scale,
        "lumi_uncertainty": model.lumi_uncertainty,
        "spurious_signal": {str(d): test.record() for d, test in tests.items()},
        "spurious_uncertainty": {"value": chosen.uncertainty, "from": chosen.uncertainty_from,
                                 "explanation": chosen.explanation()},
        "workspace": str(workspace_path),
        "modifiers": [list(modifier) for modifier in hyy_model.modifiers(spec)],
        "model": model_info(spec),
        "mu": result.mu, "mu_unc": result.mu_unc,
        "significance": result.significance,
        "parameters": result.parameters,
    }
    plots = hyy_model.plot_hyy_fit(spec, result, spectrum.edges, out_dir / "simulation_fit", lumi=spectrum.lumi_fb)
    plots += hyy_model.plot_spurious_signal(list(tests.values()), degree, out_dir / "spurious_signal")
    record["plots"] = [str(path) for path in plots]
    return record
