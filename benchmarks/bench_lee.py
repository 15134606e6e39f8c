"""Look-elsewhere benchmark: 1000 background-only toys over the 110-160 GeV scan on a running 2-worker cluster.

    .venv/bin/python benchmarks/bench_lee.py [--input DIR] [--toys 1000] [--workers 2] [--repeats 3]

Without ``--input`` the spectrum is the mass-scan benchmark's seeded toy (1e5 continuum and 1800 signal events at
125.09 GeV, 60 bins from 100 to 160 GeV; the scan is 110-159.5 GeV in 0.5 GeV steps). The measured call is
``stats.lee.global_significance`` as a user runs it: the observed mass scan on the cluster, the fast statistic's
check against it, every batch of toys a Dask task, the checkpoint rewritten after each batch (a fresh file and
seed per repeat). The cluster is started and warmed up (imports on the workers) before timing. The baseline,
measured in the same run, is the mass scan's full method (``scan_masses``, Migrad fits verified by restarts) on
``--baseline-toys`` of the same toys in this process, extrapolated to all toys on the workers; the same toys give
the largest difference in ``q0`` between the two statistics.

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {input, toys, batch_size,
workers, repeats, baseline_toys}, ``input`` and ``cluster`` (descriptions), ``masses`` {count, low, high},
``toys``, ``batch_size``, ``degree``, ``wall_s`` (every repeat), ``wall_median_s``, ``per_toy_ms``, ``target_s``,
``target_met``, ``baseline`` {method, toys_timed, per_toy_s, fast_per_toy_s, extrapolated_s,
max_abs_q0_diff_fast_vs_full}, ``speedup_vs_baseline``, ``full_method_points`` and ``failed_toys`` (per repeat)
and ``last_run`` {z_local, mass, toys, gross_vitells_toys_p, gross_vitells_observed_p, observed_fast_check};
``benchmarks/render.py`` makes the "## Look-elsewhere toys" section of it.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np

from _lib import output
from _lib.data import TOY_SPECTRUM, toy_spectrum

from deploy.clusters import dask_client
from stats import profile
from stats.lee import DEFAULT_BATCH_SIZE, default_masses, draw_toys, global_significance, local_significance
from stats.mass_scan import scan_masses
from stats.spectrum import load_spectrum

TARGET_S = 120.0
DEGREE = 4


def baseline(counts: np.ndarray, edges: np.ndarray, masses: np.ndarray, toys: int, workers: int,
             n_timed: int) -> dict:
    """The full method on ``n_timed`` toys serially, extrapolated to ``toys`` toys on ``workers`` workers."""
    basis = profile.polynomial_basis(edges, DEGREE)
    expected = basis @ profile.fit_poisson(counts, basis).params
    sample = draw_toys(expected, 1, 0, n_timed)
    walls, diffs = [], []
    for toy in sample:
        start = time.perf_counter()
        scan = scan_masses(toy, edges, masses, degree=DEGREE)
        walls.append(time.perf_counter() - start)
        z = np.array([point["significance"] for point in scan.points])
        diffs.append(float(np.max(np.abs(local_significance(toy, edges, masses, degree=DEGREE).q0[0] - z**2))))
    start = time.perf_counter()
    local_significance(sample, edges, masses, degree=DEGREE)
    fast = (time.perf_counter() - start) / n_timed
    per_toy = statistics.median(walls)
    return {"method": "stats.mass_scan.scan_masses per toy (Migrad, verified by restarts), serial",
            "toys_timed": n_timed, "per_toy_s": per_toy, "fast_per_toy_s": fast,
            "extrapolated_s": per_toy * toys / workers, "max_abs_q0_diff_fast_vs_full": max(diffs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=pathlib.Path, help="processing output directory (default: a toy)")
    parser.add_argument("--toys", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-toys", type=int, default=5)
    output.add_arguments(parser)
    args = parser.parse_args()
    names = ("input", "toys", "batch_size", "workers", "repeats", "baseline_toys")
    document = output.start("lee", output.command("bench_lee.py", args, *names),
                            {name: getattr(args, name) for name in names})
    spectrum = load_spectrum(args.input) if args.input else toy_spectrum()
    counts, edges = spectrum.counts, spectrum.edges
    masses = default_masses(edges)

    reference = baseline(counts, edges, masses, args.toys, args.workers, args.baseline_toys)
    runs = []
    with dask_client(workers=args.workers, announce=False) as client, tempfile.TemporaryDirectory() as folder:
        global_significance(counts, edges, masses, degree=DEGREE, toys=2 * args.batch_size,
                            batch_size=args.batch_size, seed=0, client=client)  # warm-up: imports on the workers
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = global_significance(counts, edges, masses, degree=DEGREE, toys=args.toys,
                                         batch_size=args.batch_size, seed=1000 + repeat, client=client,
                                         out=pathlib.Path(folder) / f"lee-{repeat}.json")
            runs.append({"wall_s": time.perf_counter() - start, "result": result})
    wall = statistics.median(run["wall_s"] for run in runs)
    last = runs[-1]["result"]
    gv_toys, gv_observed = last.gross_vitells
    document.update({
        "input": f"`{args.input}`" if args.input else TOY_SPECTRUM,
        "cluster": f"LocalCluster, {args.workers} workers, started and warmed up before timing",
        "masses": {"count": int(masses.size), "low": float(masses[0]), "high": float(masses[-1])},
        "toys": args.toys, "batch_size": args.batch_size, "degree": DEGREE,
        "wall_s": [run["wall_s"] for run in runs], "wall_median_s": wall, "per_toy_ms": 1e3 * wall / args.toys,
        "target_s": TARGET_S, "target_met": wall <= TARGET_S,
        "baseline": reference, "speedup_vs_baseline": reference["extrapolated_s"] / wall,
        "full_method_points": [run["result"].batches["full_method_points"] for run in runs],
        "failed_toys": [run["result"].batches["failed_toys"] for run in runs],
        "last_run": {"z_local": last.observed["max_significance"], "mass": last.observed["mass"],
                     "toys": last.toys.statement, "gross_vitells_toys_p": gv_toys.p_value,
                     "gross_vitells_observed_p": gv_observed.p_value,
                     "observed_fast_check": last.observed["fast_check"]},
    })
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
