"""Mass-scan benchmark: the tutorial's serial method against the robust scan on a running 2-worker cluster.

    python benchmarks/bench_mass_scan.py [--input DIR] [--workers 2] [--json FILE]

Without ``--input`` the spectrum is a seeded toy of the tutorial's size (1e5 continuum events and 1800 signal
events at 125.09 GeV in 60 bins). The tutorial's method (lmfit + cabinetry, serial, once) is the baseline, measured
in the same run; the robust scan runs 5 (25 points) or 3 (601 points) times, serially and on the cluster (started
and warmed up before the clock).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {workers, input},
``input`` (its description) and ``scans``: [{label, points, walls_s, failed, max_significance, at_mass,
target_s}] (``max_significance``: the largest local significance, at ``at_mass`` GeV, or None; ``target_s``:
the issue's bound on the median wall, or None); ``benchmarks/render.py`` makes the "## Mass scan" section of it.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from _lib import output
from _lib.data import TOY_SPECTRUM, toy_spectrum

from deploy.clusters import dask_client
from stats.mass_scan import DEFAULT_GRID, scan_masses
from stats.spectrum import load_spectrum

#: Targets of the issue: median wall seconds on the cluster.
TARGETS = {"robust, 25 points, cluster": 3.0, "robust, 601 points, cluster": 60.0}


def timed(label: str, repeats: int, run: Callable[[], Any]) -> dict[str, Any]:
    """``repeats`` calls of ``run`` (a mass scan): their walls, the points, failures and the largest significance."""
    walls, scan = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        scan = run()
        walls.append(time.perf_counter() - start)
    best = scan.best
    return {"label": label, "points": len(scan.points), "walls_s": walls, "failed": len(scan.failed),
            "max_significance": float(best["significance"]) if best else None,
            "at_mass": float(best["mass"]) if best else None, "target_s": TARGETS.get(label)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=pathlib.Path, help="processing output directory (default: a toy)")
    parser.add_argument("--workers", type=int, default=2)
    output.add_arguments(parser, "--write")
    args = parser.parse_args()
    document = output.start("mass_scan", output.command("bench_mass_scan.py", args, "input", "workers"),
                            {"workers": args.workers, "input": str(args.input) if args.input else None})
    document["input"] = f"`{args.input}`" if args.input else TOY_SPECTRUM
    spectrum = load_spectrum(args.input) if args.input else toy_spectrum()
    counts, edges = spectrum.counts, spectrum.edges
    grid25 = np.linspace(*DEFAULT_GRID)
    grid601 = np.linspace(110.0, 140.0, 601)

    scans = [timed("tutorial (lmfit + cabinetry), 25 points, serial", 1,
                   lambda: scan_masses(counts, edges, grid25, method="tutorial"))]
    scans.append(timed("robust, 25 points, serial", 5, lambda: scan_masses(counts, edges, grid25)))
    scans.append(timed("robust, 601 points, serial", 3, lambda: scan_masses(counts, edges, grid601)))
    with dask_client(workers=args.workers) as client:
        scan_masses(counts, edges, grid25, client=client)  # warm-up: imports on the workers ("running cluster")
        scans.append(timed("robust, 25 points, cluster", 5, lambda: scan_masses(counts, edges, grid25, client=client)))
        scans.append(timed("robust, 601 points, cluster", 3,
                           lambda: scan_masses(counts, edges, grid601, client=client)))
    document["scans"] = scans
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
