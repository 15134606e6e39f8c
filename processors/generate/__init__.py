"""Generate a synthetic copy of the ATLAS Open Data ``2025e-13tev-beta`` ``GamGam`` skim.

The files have the real release's names, tree (``analysis``) and ~80 of its branches (``processors.schema``),
so the analysis runs on them unchanged, and a ``truth.json`` says what was put in them. This module is the
dataset API (:func:`generate_dataset`); :mod:`processors.generate.model` holds the physics model,
:mod:`processors.generate.rootfile` writes one file and :mod:`processors.generate.simulation` describes the
simulated samples written on request beside the data. The release itself (periods, file names, simulated
samples) is described in :mod:`processors.datasets`, beside :func:`~processors.datasets.write_metadata`.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import uproot

from processors.datasets import FILE_PATTERN, NOMINAL_LUMI_FB, PERIODS, RELEASE, SKIM, write_metadata
from processors.errors import ProcessingError
from processors.generate import rootfile, simulation
from processors.generate.model import (DEFAULT_SIGNAL_MASS, EVENTS_PER_FB, MASS_WINDOW, SIGMA_BR_FB,
                                       SIGNAL_MASS_RANGE, continuum_efficiency, signal_efficiency)
from processors.generate.rootfile import (DEFAULT_COMPRESSION, FileResult, FileTask, SampleTask, write_file,
                                          write_sample_file)
from processors.progress import live_bar

__all__ = [
    "DEFAULT_COMPRESSION", "DEFAULT_SEED", "DEFAULT_SIGNAL_MASS", "EVENTS_PER_FB", "MASS_WINDOW", "SIGMA_BR_FB",
    "SIGNAL_MASS_RANGE", "GeneratedDataset", "generate_dataset",
    # Defined in processors.datasets; still imported from here by deploy.xrootd.
    "SKIM", "write_metadata",
]

DEFAULT_SEED = 2015_2016

_PERIOD_INDEX = {period.name: index for index, period in enumerate(PERIODS)}


class GeneratedDataset(NamedTuple):
    """What ``generate_dataset`` wrote.

    Attributes:
        files: paths of the ROOT files, in period order.
        metadata_path: the ``metadata.json`` for ``atlasopenmagic.read_metadata``.
        truth_path: the ``truth.json``.
        truth: its content.
        events_written: entries over all files.
        sample_files: the simulated samples' files by sample name (empty unless asked for).
    """

    files: list[Path]
    metadata_path: Path
    truth_path: Path
    truth: dict[str, Any]
    events_written: int
    sample_files: dict[str, Path] = {}


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` summing to ``total`` (largest remainders)."""
    shares = np.asarray(weights, dtype=float) / float(np.sum(weights)) * total
    counts = np.floor(shares).astype(int)
    counts[np.argsort(counts - shares)[: total - counts.sum()]] += 1
    return counts.tolist()


def _write_all(write: Callable[[Any], Any], tasks: list[Any], workers: int, bar: Any = None) -> list[Any]:
    """``write`` each task, in ``workers`` processes if more than one; the results in the order of ``tasks``.

    ``bar`` (a tqdm bar, or None) is updated with the generated events of each cluster as it is written, in
    whichever process writes it.
    """
    if workers <= 1:
        rootfile.report_clusters(None if bar is None else bar.update)
        try:
            return [write(task) for task in tasks]
        finally:
            rootfile.report_clusters(None)
    # Spawned, not forked: the caller may hold threads (Dask, the XRootD client).
    spawn = multiprocessing.get_context("spawn")
    queue: Any = None if bar is None else spawn.SimpleQueue()
    report = None if queue is None else queue.put
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn, initializer=rootfile.report_clusters,
                                                initargs=(report,)) as pool:
        # Largest files first, so that no worker is left alone with a big one at the end.
        pending = {pool.submit(write, task) for task in sorted(tasks, key=_events, reverse=True)}
        finished: list[concurrent.futures.Future[Any]] = []
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=None if queue is None else 0.25,
                                                    return_when=concurrent.futures.FIRST_EXCEPTION)
            finished += done
            while queue is not None and not queue.empty():
                bar.update(queue.get())
            if any(future.exception() is not None for future in done):
                break
        results = {result.path: result for result in (future.result() for future in finished)}
    return [results[task.path] for task in tasks]


def _events(task: FileTask | SampleTask) -> int:
    """The events a task generates: the continuum of a data file, all generated events of a simulated sample."""
    return task.continuum_events if isinstance(task, FileTask) else task.events


def _check_options(
    *, lumi_fb: float, scale: float, signal_mass: float, signal_strength: float, events: int | None,
    basket_entries: int, mc_events: int | None,
) -> None:
    if not lumi_fb > 0:
        raise ProcessingError(f"luminosity must be positive, got {lumi_fb} fb^-1")
    if not scale > 0:
        raise ProcessingError(f"scale must be positive, got {scale}")
    if not SIGNAL_MASS_RANGE[0] <= signal_mass <= SIGNAL_MASS_RANGE[1]:
        raise ProcessingError(
            f"signal mass {signal_mass} GeV is outside the supported "
            f"{SIGNAL_MASS_RANGE[0]:g}-{SIGNAL_MASS_RANGE[1]:g} GeV"
        )
    if not signal_strength >= 0:
        raise ProcessingError(f"signal strength must be non-negative, got {signal_strength}")
    if events is not None and events < 1:
        raise ProcessingError(f"number of events must be at least 1, got {events}")
    if mc_events is not None and mc_events < 1:
        raise ProcessingError(f"number of simulated events must be at least 1, got {mc_events}")
    if basket_entries < 1:
        raise ProcessingError(f"entries per basket must be at least 1, got {basket_entries}")


def _resolve_periods(periods: Iterable[str] | None) -> list[int]:
    if periods is None:
        return list(range(len(PERIODS)))
    names = list(periods)
    unknown = [name for name in names if name not in _PERIOD_INDEX]
    if unknown:
        raise ProcessingError(
            f"unknown period {unknown[0]!r} (known: {', '.join(p.name for p in PERIODS)})"
        )
    if not names:
        raise ProcessingError("no period selected")
    return sorted({_PERIOD_INDEX[name] for name in names})


def generate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    lumi_fb: float = NOMINAL_LUMI_FB,
    scale: float = 1.0,
    seed: int = DEFAULT_SEED,
    signal_mass: float = DEFAULT_SIGNAL_MASS,
    signal_strength: float = 1.0,
    background_only: bool = False,
    events: int | None = None,
    periods: Iterable[str] | None = None,
    basket_entries: int = 50_000,
    compression: uproot.compression.Compression | None = DEFAULT_COMPRESSION,
    workers: int | None = None,
    mc: bool = False,
    mc_events: int | None = None,
    progress: bool = False,
) -> GeneratedDataset:
    """Write a synthetic GamGam skim: one ROOT file per period, ``metadata.json`` and ``truth.json``.

    Args:
        out_dir: directory to write to (created if missing; files of the same names are overwritten).
        lumi_fb: integrated luminosity in fb^-1 of the 16 periods together (36.1 is the 2015-16 release;
            140 the full Run 2).
        scale: fraction of the luminosity's events to write (0.01 gives a 1 % sample); signal and continuum
            scale together, so the files stand for ``lumi_fb * scale``.
        seed: seed of every random number.
        signal_mass: Higgs boson mass in GeV.
        signal_strength: signal yield over the Standard Model one.
        background_only: write no signal.
        events: write about this many continuum events over the selected periods instead (the signal
            comes on top, in proportion); the files stand for ``events / EVENTS_PER_FB`` fb^-1.
        periods: names of the periods to write (default all 16), e.g. ``["data15_periodD"]``.
        basket_entries: continuum events per cluster (one basket per branch each); in a simulated sample,
            generated events per cluster.
        compression: uproot compression of the baskets (``None``: uncompressed).
        workers: processes writing files in parallel (default: one per core for large datasets).
        mc: also write the simulated samples (:mod:`processors.generate.simulation`) beside the data, list them
            in ``metadata.json`` and describe them in the truth's ``simulation``; the data are the same either way.
        mc_events: events to generate per simulated sample, before the skim (default: each sample's own; the
            continuum's in proportion to the data's luminosity, 10M at the release's 36.1 fb^-1, between 400k and 10M:
            :func:`processors.generate.simulation.continuum_events`).
        progress: show a bar of the events generated (data, then simulated samples) on stderr, moving as each
            cluster of events is written, its clock running until the truth is written.

    Returns:
        The files, the metadata and truth paths, the truth and the number of entries written. The truth
        (also in ``truth.json``) holds the options (``seed``, ``signal_mass``, ``signal_strength``,
        ``background_only``), ``lumi_fb`` (what the files stand for), ``signal_resolution`` (half the
        16-84 % interval of the selected signal m_yy, GeV), ``signal_events_injected`` (signal events in the
        files), ``expected_selected_signal`` and ``selected_signal_events`` (mean and realised signal passing
        the tutorial selection in 100-160 GeV), ``background_expected_in_window`` and
        ``selected_background_events`` (the same for the continuum; the expectation has a sampling error
        ``background_expected_in_window_error`` of ~1 %), ``events_written``, and the speed. With ``mc``,
        ``simulation`` holds each sample's metadata, efficiency, ``expected_yield`` at the data's ``lumi_fb`` and
        its realised ``selected_yield`` (:func:`processors.generate.simulation.truth`).

    Raises:
        ProcessingError: an option is out of range, a period unknown, or ``out_dir`` not writable.
    """
    _check_options(
        lumi_fb=lumi_fb, scale=scale, signal_mass=signal_mass, signal_strength=signal_strength,
        events=events, basket_entries=basket_entries, mc_events=mc_events,
    )
    indices = _resolve_periods(periods)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProcessingError(f"cannot create output directory {out_dir}: {err.strerror}") from err

    period_lumi = [PERIODS[i].lumi_fb / NOMINAL_LUMI_FB * lumi_fb * scale for i in indices]
    if events is None:
        continuum = [int(round(lumi * EVENTS_PER_FB)) for lumi in period_lumi]
    else:
        continuum = _split(events, period_lumi)
        period_lumi = [count / EVENTS_PER_FB for count in continuum]
    strength = 0.0 if background_only else signal_strength
    tasks = [
        FileTask(
            str(out_dir / FILE_PATTERN.format(period=PERIODS[i].name)),
            i,
            count,
            lumi,
            seed,
            signal_mass,
            strength,
            basket_entries,
            compression,
        )
        for i, count, lumi in zip(indices, continuum, period_lumi)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, len(tasks)) if sum(continuum) > 200_000 else 1

    sample_tasks = (
        simulation.sample_tasks(out_dir, seed=seed, events=mc_events, cluster_events=basket_entries,
                                compression=compression, data_share=sum(period_lumi) / NOMINAL_LUMI_FB) if mc else []
    )
    total = sum(_events(task) for task in [*tasks, *sample_tasks])
    with live_bar("generating", total=total, unit="event", unit_scale=True, enabled=progress) as bar:
        start = time.perf_counter()
        try:
            bar.set_postfix_str(f"{len(tasks)} data files", refresh=False)
            results = _write_all(write_file, tasks, workers, bar if progress else None)
            seconds = time.perf_counter() - start
            bar.set_postfix_str(f"{len(sample_tasks)} simulated samples", refresh=False)
            sample_results = _write_all(write_sample_file, sample_tasks, min(workers, len(sample_tasks)),
                                        bar if progress else None)
        except OSError as err:
            raise ProcessingError(f"cannot write into {out_dir}: {err.strerror or err}") from err
        bar.set_postfix_str("expected yields", refresh=False)  # from large fixed-seed samples: seconds
        files = [Path(result.path) for result in results]
        samples = simulation.records(sample_tasks, sample_results)
        metadata_path = write_metadata(files, out_dir / "metadata.json", samples=samples)
        truth = _truth(
            results,
            lumi_fb=sum(period_lumi),
            nominal_lumi_fb=lumi_fb,
            scale=scale,
            seed=seed,
            signal_mass=signal_mass,
            signal_strength=strength,
            background_only=background_only,
            continuum=sum(continuum),
            seconds=seconds,
        )
        if mc:
            truth["simulation"] = simulation.truth(samples, sample_results, lumi_fb=truth["lumi_fb"],
                                                   data_signal=truth["expected_selected_signal"])
        truth_path = out_dir / "truth.json"
        truth_path.write_text(json.dumps(truth, indent=2) + "\n")
    sample_files = {record.sample.name: Path(record.files[0]) for record in samples}
    return GeneratedDataset(files, metadata_path, truth_path, truth, truth["events_written"], sample_files)


def _truth(
    results: list[FileResult],
    *,
    lumi_fb: float,
    nominal_lumi_fb: float,
    scale: float,
    seed: int,
    signal_mass: float,
    signal_strength: float,
    background_only: bool,
    continuum: int,
    seconds: float,
) -> dict[str, Any]:
    signal = signal_efficiency(signal_mass)
    produced = signal_strength * SIGMA_BR_FB * lumi_fb
    continuum_fraction, continuum_error = continuum_efficiency()
    masses = np.concatenate([r.signal_masses for r in results])
    entries = sum(r.entries for r in results)
    return {
        "release": RELEASE,
        "skim": SKIM,
        "seed": seed,
        "lumi_fb": lumi_fb,
        "nominal_lumi_fb": nominal_lumi_fb,
        "scale": scale,
        "background_only": background_only,
        "signal_mass": signal_mass,
        "signal_strength": signal_strength,
        "signal_resolution": signal.resolution,
        "sigma_br_fb": SIGMA_BR_FB,
        "mass_window": list(MASS_WINDOW),
        "signal_events_expected": produced * signal.skim,
        "signal_events_injected": sum(r.signal_injected for r in results),
        "expected_selected_signal": produced * signal.skim * signal.selection,
        "selected_signal_events": sum(r.signal_selected for r in results),
        "selected_signal_mean_mass": float(masses.mean()) if len(masses) else None,
        "background_events": continuum,
        "background_expected_in_window": continuum * continuum_fraction,
        # The expectation comes from a finite sample: its error, to compare with large realised counts.
        "background_expected_in_window_error": continuum * continuum_error,
        "selected_background_events": sum(r.continuum_selected for r in results),
        "events_written": entries,
        "files": [Path(r.path).name for r in results],
        "generation_seconds": seconds,
        "events_per_second": entries / seconds if seconds > 0 else None,
    }
