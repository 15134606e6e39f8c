"""Benchmark: 95 % CL CLs upper limits for 1Lbb patches, the compact engine (stats.limits) vs pyhf's upper_limit.

Usage: python benchmarks/bench_limits.py [--patches A,B,...|all] [--pyhf N] [--pyhf-backend numpy|jax] [--no-compact]
                                        [--dask W] [--dask-patches A,B,...|all] [--json FILE]
Both serially in this process (single-threaded, as the scan's engine processes), patch by patch:
``stats.limits.upper_limits`` through one compact ``PatchEngine`` (the first patch pays the compilation), and
pyhf's ``upper_limit`` (numpy backend by default; toms748, its default rtol 1e-4, the model's POI bounds, qtilde,
code4/code4p) on the first N patches. Per patch: wall and CPU seconds, hypotests, the six limits; the limits'
largest relative difference where both have one. With ``--dask W``, also ``stats.limit_scan.scan_limits`` of the
same patches (or ``--dask-patches``) on a running W-worker local cluster (its engines compile once per worker), from
the tarball to the written results.
Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {patches, pyhf,
pyhf_backend, no_compact, dask}, ``rows`` (per patch: ``compact`` and ``pyhf`` {wall, cpu, hypotests, limits},
``largest_relative_difference``), ``curves``, ``dask`` {workers, patches, wall, failed, hypotests, limits} and
``target_s`` (all 125 patches on 2 workers); ``benchmarks/render.py`` makes the "## Upper limits of published
likelihoods" section of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One thread, as in the scan's engine processes (stats.patchscan): CPU time is then the work, not idle spinning.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import numpy as np
from _lib import output

from stats.compact.engine import PatchEngine
from stats.compact.padding import shared_modifiers
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, patched_model, switch_backend
from stats.limits import CURVES, engine_hypotest, poi_bounds, upper_limits

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Target of issue 20: the limits of all 125 1Lbb patches on 2 workers.
TARGET_S = 300.0
#: Spread over the grid: strongly excluded, near the contour, not excluded (1000_0: +2 sigma above the POI bound).
PATCHES = ("650_0", "1000_0", "150_0", "300_150", "400_200", "500_250", "550_0", "700_200", "800_300", "900_150")


def timed(function, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def pyhf_upper_limit(data, model, backend: str):
    """pyhf's upper_limit (toms748). Under jax, its hypotest's CLs are handed on as numpy floats: pyhf 0.7.6's toms748
    scan keys its cache by POI values derived from them, and jax arrays are unhashable."""
    from pyhf.infer.intervals import upper_limits

    hypotest = upper_limits.hypotest

    def numpy_hypotest(*args, **kwargs):
        observed, expected = hypotest(*args, **kwargs)
        return np.float64(observed), [np.float64(value) for value in expected]

    if backend == "jax":
        upper_limits.hypotest = numpy_hypotest
    try:
        return upper_limits.upper_limit(data, model, test_stat="qtilde", return_results=True)
    finally:
        upper_limits.hypotest = hypotest


def dask_scan(workers: int, names: list[str]) -> dict:
    """scan_limits of the named patches on a running local cluster: wall seconds from the tarball to the results, with
    an empty jax compilation cache (each worker's engine compiles)."""
    import tempfile

    from deploy.clusters import dask_client
    from stats.compact.worker import CACHE_ENV
    from stats.limit_scan import scan_limits

    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = str(Path(tmp) / "jax")  # before the workers start: their engines inherit it
        with dask_client(workers=workers) as client:
            client.run(lambda: None)  # the cluster is running before the clock starts
            start = time.perf_counter()
            loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
            chosen = [p for p in loaded.patchset.patches if p.name in set(names)]
            result = scan_limits(loaded, client, patches=chosen, settings=HypotestSettings(backend="jax"),
                                 out=Path(tmp) / "limits.json")
            wall = time.perf_counter() - start
    print(f"scan_limits on {workers} workers: {len(chosen)} patches in {wall:.1f} s, {len(result.failed)} failed",
          flush=True)
    return {"workers": workers, "patches": len(chosen), "wall": wall, "failed": [r.name for r in result.failed],
            "hypotests": sum(r.hypotests for r in result.results),
            "limits": {r.name: [r.observed, *(r.expected or [None] * 5)] for r in result.results}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", default=",".join(PATCHES))
    parser.add_argument("--pyhf", type=int, default=3, help="patches for pyhf's upper_limit (the first N)")
    parser.add_argument("--pyhf-backend", default="numpy", choices=["numpy", "jax"])
    parser.add_argument("--no-compact", action="store_true", help="pyhf only")
    parser.add_argument("--dask", type=int, default=0, help="also scan_limits on a local cluster of this many workers")
    parser.add_argument("--dask-patches", default=None,
                        help="the patches of the cluster's scan, as --patches (default: the same as --patches)")
    output.add_arguments(parser)
    args = parser.parse_args()
    names_of_settings = ("patches", "pyhf", "pyhf_backend", "no_compact", "dask", "dask_patches")
    document = output.start("patch_limits", output.command("bench_limits.py", args, *names_of_settings),
                            {name: getattr(args, name) for name in names_of_settings})
    loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
    def chosen(patches: str) -> list[str]:
        return ([p.name for p in loaded.patchset.patches] if patches == "all"
                else [f"C1N2_Wh_hbb_{key}" for key in patches.split(",")])

    names = chosen(args.patches)
    specs = {p.name: {"metadata": dict(p.metadata), "patch": list(p.patch)} for p in loaded.patchset.patches}
    rows: list[dict] = []
    engine = PatchEngine(loaded.bkg_only, HypotestSettings(backend="jax"),
                         shared_modifiers(loaded.bkg_only, list(specs.values())))

    for index, name in enumerate(names):
        spec = specs[name]
        row = {"name": name}
        if not args.no_compact:
            bounds = poi_bounds(loaded.bkg_only, spec)
            wall, cpu, result = timed(upper_limits, engine_hypotest(engine, spec), bounds=bounds)
            row["compact"] = {"wall": wall, "cpu": cpu, "hypotests": len(result.points) + len(result.failed),
                              "limits": list(result.values), "status": [x.status for x in result.limits],
                              "methods": sorted({p.method for p in result.points})}
            print(f"{name}: compact {wall:.1f} s wall, {cpu:.1f} s CPU, {row['compact']['hypotests']} hypotests, "
                  f"{result.values}", file=sys.stderr, flush=True)
        if index < args.pyhf:
            switch_backend(args.pyhf_backend)  # the model is built under the backend that fits it
            model, data = patched_model(loaded.bkg_only, spec, HypotestSettings())
            try:
                wall, cpu, (obs, exp, (scan, _)) = timed(pyhf_upper_limit, data, model, args.pyhf_backend)
            except ValueError as err:  # e.g. its search going past the POI's bound, where its fit refuses to start
                switch_backend("numpy")
                row["pyhf"] = {"error": str(err).splitlines()[0]}
                print(f"{name}: pyhf failed: {row['pyhf']['error']}", file=sys.stderr, flush=True)
            else:
                switch_backend("numpy")
                limits = [float(obs), *(float(v) for v in exp)]
                row["pyhf"] = {"wall": wall, "cpu": cpu, "hypotests": len(scan), "limits": limits,
                               "backend": args.pyhf_backend}
                if "compact" in row:
                    both = [(a, b) for a, b in zip(row["compact"]["limits"], limits) if a is not None]
                    row["largest_relative_difference"] = max((abs(a - b) / abs(b) for a, b in both), default=None)
                print(f"{name}: pyhf {wall:.1f} s wall, {cpu:.1f} s CPU, {len(scan)} hypotests, {limits}", file=sys.stderr, flush=True)
        rows.append(row)
    document.update({"rows": rows, "curves": list(CURVES), "target_s": TARGET_S,
                     "dask": dask_scan(args.dask, chosen(args.dask_patches or args.patches)) if args.dask
                     else None})
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
