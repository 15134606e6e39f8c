"""Mass-scan benchmark: the tutorial's serial method against the robust scan on a running 2-worker cluster.

    python benchmarks/bench_mass_scan.py [--input DIR] [--workers 2] [--write]

Without ``--input`` the spectrum is a seeded toy of the tutorial's size (1e5 continuum events and 1800 signal
events at 125.09 GeV in 60 bins). ``--write`` replaces the "## Mass scan" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import numpy as np
import scipy.special

from _common import machine, replace_section

from deploy.clusters import dask_client
from stats.mass_scan import DEFAULT_GRID, scan_masses
from stats.spectrum import Spectrum, load_spectrum

TARGETS = {"robust, 25 points, cluster": 3.0, "robust, 601 points, cluster": 60.0}


def toy_spectrum(seed: int = 2026) -> Spectrum:
    edges = np.linspace(100.0, 160.0, 61)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shape = np.exp(-(centres - 100.0) / 30.0)
    expected = 1e5 * shape / shape.sum() + 1800.0 * np.diff(scipy.special.ndtr((edges - 125.09) / 1.7))
    return Spectrum(np.random.default_rng(seed).poisson(expected).astype(float), edges, 36.1)


def timed(label: str, repeats: int, run) -> dict:
    walls, scan = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        scan = run()
        walls.append(time.perf_counter() - start)
    best = scan.best
    return {"label": label, "points": len(scan.points), "wall": statistics.median(walls), "repeats": repeats,
            "failed": len(scan.failed), "peak": f"{best['significance']:.2f} at {best['mass']:g}" if best else "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=pathlib.Path, help="processing output directory (default: a toy)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    spectrum = load_spectrum(args.input) if args.input else toy_spectrum()
    counts, edges = spectrum.counts, spectrum.edges
    grid25 = np.linspace(*DEFAULT_GRID)
    grid601 = np.linspace(110.0, 140.0, 601)

    rows = [timed("tutorial (lmfit + cabinetry), 25 points, serial", 1,
                  lambda: scan_masses(counts, edges, grid25, method="tutorial"))]
    rows.append(timed("robust, 25 points, serial", 5, lambda: scan_masses(counts, edges, grid25)))
    rows.append(timed("robust, 601 points, serial", 3, lambda: scan_masses(counts, edges, grid601)))
    with dask_client(workers=args.workers) as client:
        scan_masses(counts, edges, grid25, client=client)  # warm-up: imports on the workers ("running cluster")
        rows.append(timed("robust, 25 points, cluster", 5, lambda: scan_masses(counts, edges, grid25, client=client)))
        rows.append(timed("robust, 601 points, cluster", 3,
                          lambda: scan_masses(counts, edges, grid601, client=client)))

    reference = rows[0]["wall"] / rows[0]["points"]
    lines = ["| scan | points | wall (s, median) | per point (ms) | speed-up per point vs tutorial | failed | "
             "max local Z at m (GeV) | target |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for row in rows:
        per_point = row["wall"] / row["points"]
        target = TARGETS.get(row["label"])
        target_text = "-" if target is None else f"<= {target:g} s: {'met' if row['wall'] <= target else 'MISSED'}"
        lines.append(f"| {row['label']} | {row['points']} | {row['wall']:.3f} | {1e3 * per_point:.2f} | "
                     f"{reference / per_point:.0f}x | {row['failed']} | {row['peak']} | {target_text} |")
    print("\n".join(lines))
    print(f"machine: {machine()}")
    if args.write:
        source = f"`{args.input}`" if args.input else "a seeded toy (1e5 continuum + 1800 signal events, 60 bins)"
        replace_section("## Mass scan", [
            f"Command: `python benchmarks/bench_mass_scan.py --write`; machine: {machine()} (shared, so cluster "
            f"timings vary); {args.workers}-worker LocalCluster (one thread each) already running; input: {source}.",
            "", *lines,
        ])


if __name__ == "__main__":
    main()
