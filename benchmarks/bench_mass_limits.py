"""Upper limits on mu at 61 signal masses (110-160 GeV) on a running 2-worker cluster, against pyhf's upper_limit.

    .venv/bin/python benchmarks/bench_mass_limits.py [--masses 61] [--workers 2] [--baseline 3] [--json FILE]

The input is the mass-scan benchmark's seeded toy spectrum (``_lib.data.toy_spectrum``) extended to 170 GeV; its background fit (the
robust method, degree 4, as ``run`` does) gives the per-bin background and its ``shapesys`` uncertainty, and
:func:`stats.mass_patchset.build_mass_patchset` one patch per mass (a Gaussian signal of 1.7 GeV and 1800 events at
mu = 1). The measured call is what ``run`` and ``opendata-stats limits`` do: ``stats.limit_scan.scan_limits`` of
every patch on the cluster (each patch a Dask task; the engine compiles once per worker), from the written
likelihoods to the written results, twice: on fresh engines (compilation included) and again with the engines the
first scan left (a new output file). The cluster is started before timing. The baseline, measured in the same
run: pyhf's ``toms748_scan``, the root finder of ``upper_limit`` (numpy, rtol 1e-4, qtilde; its bracket from
1e-3 of the POI's upper bound, as ``upper_limit``'s from 0 meets a NaN CLs at mu = 0), in this process on
``--baseline`` masses spread over the grid, extrapolated to every mass on the workers; the same masses give the
largest relative difference of the six limits, and the largest deviation from 0.05 of the CLs that pyhf's model
with verified fits (``stats.hypotest.pyhf_hypotest``) gives at the scan's observed limits (``verified_cls_deviation``:
which of two differing limits is right).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {masses, workers,
baseline}, ``input``, ``patches``, ``scans`` [{label, wall_s, failed, hypotests}], ``baseline`` {method, masses,
per_mass_s, extrapolated_s, max_relative_difference, verified_cls_deviation}, ``target_s`` and ``target_met`` (the
fresh scan); ``benchmarks/render.py`` makes the "## Upper limits" section of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _lib import output
from _lib.data import TOY_SPECTRUM, toy_spectrum

from deploy.clusters import dask_client
from stats.background import fit_background
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, patched_model, switch_backend
from stats.limit_scan import scan_limits
from stats.mass_patchset import build_mass_patchset

#: Target of issue 20: limits at 61 masses on a running 2-worker cluster.
TARGET_S = 30.0
SIGNAL_YIELD = 1800.0
RESOLUTION = 1.7
#: The toy's upper edge (GeV): past the highest mass, 160 GeV, so that its signal lies inside the histogram.
HIGH = 170.0


def likelihoods(directory: Path, masses: np.ndarray) -> Path:
    """The toy's mass patchset, written as HEPData lays it out."""
    import json

    spectrum = toy_spectrum(high=HIGH)
    fit = fit_background(spectrum.counts, spectrum.edges, degree=4)
    built = build_mass_patchset(spectrum.counts, spectrum.edges, fit.background, fit.background_unc, masses=masses,
                                resolution=RESOLUTION, signal_yield=SIGNAL_YIELD)
    (directory / "BkgOnly.json").write_text(json.dumps(built.background_only))
    (directory / "patchset.json").write_text(json.dumps(built.patchset))
    return directory


def baseline(loaded, chosen: list, scanned: dict[str, list], workers: int, total: int) -> dict:
    """pyhf's upper_limit on ``chosen`` patches serially, extrapolated to ``total`` patches on ``workers``."""
    import pyhf

    from stats.hypotest import pyhf_hypotest

    walls, differences, verified = [], [], []
    for patch in chosen:
        switch_backend("numpy")
        model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch},
                                    HypotestSettings())
        start = time.perf_counter()
        # upper_limit's bracket starts at the POI's lower bound, 0, where pyhf's CLs is 0/0 (NaN) on these models;
        # its toms748 scan from a small positive mu halves that end until CLs is above the level, as upper_limit does.
        high = float(model.config.suggested_bounds()[model.config.poi_index][1])
        observed, expected = pyhf.infer.intervals.upper_limits.toms748_scan(
            data, model, high * 1e-3, high, rtol=1e-4, test_stat="qtilde")
        walls.append(time.perf_counter() - start)
        theirs = [float(observed), *(float(v) for v in expected)]
        mine = scanned[patch.name]
        differences += [abs(a - b) / abs(b) for a, b in zip(mine, theirs) if a is not None]
        if mine[0] is not None:  # which limit is right: CLs at the scan's, pyhf's model with verified fits
            verified.append(abs(pyhf_hypotest(model, data, mu=mine[0], test_stat="qtilde").CLs_obs - 0.05))
    per_mass = float(np.median(walls))
    return {"method": "pyhf.infer.intervals.upper_limits.toms748_scan (numpy, rtol 1e-4, bracket from 1e-3 of the "
                      "POI's upper bound), serial",
            "masses": [float(p.values[0]) for p in chosen], "per_mass_s": per_mass,
            "extrapolated_s": per_mass * total / workers,
            "max_relative_difference": max(differences) if differences else None,
            "verified_cls_deviation": max(verified) if verified else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masses", type=int, default=61)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=int, default=3, help="masses for pyhf's upper_limit")
    output.add_arguments(parser)
    args = parser.parse_args()
    names = ("masses", "workers", "baseline")
    document = output.start("mass_limits", output.command("bench_mass_limits.py", args, *names),
                            {name: getattr(args, name) for name in names})
    grid = np.linspace(110.0, 160.0, args.masses)
    scans = []
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_likelihoods(likelihoods(Path(folder), grid))
        settings = HypotestSettings(backend="jax")
        with dask_client(workers=args.workers, announce=False) as client:
            client.run(lambda: None)  # the cluster is running before the clock starts
            for label in ("fresh engines (compilation included)", "engines of the first scan"):
                start = time.perf_counter()
                result = scan_limits(loaded, client, settings=settings, out=Path(folder) / f"limits-{len(scans)}.json")
                scans.append({"label": label, "wall_s": time.perf_counter() - start, "failed": len(result.failed),
                              "hypotests": sum(r.hypotests for r in result.results)})
        scanned = {r.name: [r.observed, *(r.expected or [None] * 5)] for r in result.results}
        patches = list(loaded.patchset.patches)
        chosen = [patches[i] for i in np.linspace(0, len(patches) - 1, args.baseline).astype(int)] if args.baseline else []
        reference = baseline(loaded, chosen, scanned, args.workers, len(patches)) if chosen else None
    document.update({
        "input": f"{TOY_SPECTRUM}, extended to {HIGH:g} GeV; background fit of degree 4; a Gaussian signal of "
                 f"{RESOLUTION} GeV, "
                 f"{SIGNAL_YIELD:g} events at mu = 1",
        "patches": len(grid), "scans": scans, "baseline": reference, "target_s": TARGET_S,
        "target_met": scans[0]["wall_s"] <= TARGET_S,
    })
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
