"""Benchmark: all 1Lbb patches on a running 2-worker cluster (tarball to written results) vs serial pyhf.

Usage: python benchmarks/bench_patchset.py [--patches N] [--serial 3] [--workers 2] [--no-write]
Two scans, each on a fresh cluster: the first with an empty jax compilation cache, the second with the
cache the first left. Prints a table and, unless ``--no-write``, replaces the "## Published likelihoods"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyhf
from _common import machine, replace_section

from deploy.clusters import dask_client
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, patched_model
from stats.compact.worker import CACHE_ENV
from stats.patchscan import scan_patches

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def scan(workers: int, patches: int) -> tuple[float, object, list]:
    """Seconds from the tarball to written results on a running cluster, the result, the patches."""
    with dask_client(workers=workers) as client, tempfile.TemporaryDirectory() as tmp:
        client.run(lambda: None)  # the cluster is running before the clock starts
        start = time.perf_counter()
        loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
        chosen = list(loaded.patchset.patches)[:patches]
        result = scan_patches(loaded, client, patches=chosen, settings=HypotestSettings(backend="jax"),
                              out=Path(tmp) / "scan.json")
        return time.perf_counter() - start, result, chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", type=int, default=125)
    parser.add_argument("--serial", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started, before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine()
    reference = {r["name"]: r for r in json.loads((DATA / "1Lbb-reference-cls.json").read_text())["results"]}
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        # Fresh clusters both times (new engines); the second finds the first's compiled programs on disk.
        os.environ[CACHE_ENV] = cache
        for label in ("empty compile cache", "warm compile cache"):
            runs[label] = scan(args.workers, args.patches)
    _, result, chosen = runs["empty compile cache"]
    worst = max(
        abs(a - b) / max(1e-4, 1e-3 * abs(b))
        for _, res, _ in runs.values()
        for p in res.results if p.status == "ok" and not p.lowered_fits()
        for a, b in zip([p.CLs_obs, *p.CLs_exp], [reference[p.name]["CLs_obs"], *reference[p.name]["CLs_exp"]])
    )
    lower = sorted({p.name for _, res, _ in runs.values() for p in res.results if p.lowered_fits()})
    loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
    serial = []
    for patch in list(loaded.patchset.patches)[: args.serial]:
        t0 = time.perf_counter()
        pyhf.set_backend("numpy")
        model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch},
                                    HypotestSettings())
        pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
        serial.append(time.perf_counter() - t0)
    per_patch_serial = sum(serial) / len(serial)
    n = len(chosen)
    lines = [
        f"`python benchmarks/bench_patchset.py --patches {args.patches} --serial {args.serial}"
        f" --workers {args.workers}`:"
        f" {n} 1Lbb patches from the tarball to the written results on a running {args.workers}-worker LocalCluster,"
        f" beside pyhf's numpy `hypotest` serially on {len(serial)} patch(es); started {started} on {before}.",
        "",
        "| what | patches | wall [s] | per patch [s] | ratio |",
        "|---|---|---|---|---|",
        f"| pyhf numpy hypotest, serial | {len(serial)} | {sum(serial):.1f} | {per_patch_serial:.2f} | 1 |",
        f"| pyhf numpy serial, extrapolated | {n} | {per_patch_serial * n:.0f} | {per_patch_serial:.2f} | 1 |",
    ]
    for label, (wall, res, _) in runs.items():
        lines.append(f"| scan-patchset, compact jax engine, {args.workers} workers, {label} | {n} | {wall:.1f} | "
                     f"{wall / n:.2f} | {per_patch_serial * n / wall:.1f}x |")
    ok = min(n - len(res.failed) for _, res, _ in runs.values())
    cold = runs["empty compile cache"][0]
    lines += [
        "",
        f"{ok}/{n} ok in each run; worst deviation from the reference {worst:.2e} of the tolerance max(1e-4, 1e-3 rel)"
        f" where the verified fits agree with pyhf's default fit; a lower minimum than pyhf's at {', '.join(lower) or 'none'}"
        f" (there the reference, pyhf's default fit, is not the minimum)."
        f" Target (issue 4): {n} patches <= 60 s on 2 workers (aim 30 s): {cold:.1f} s with an empty compile cache"
        f" ({'met' if cold <= 60 else 'NOT met'}).",
        "",
        "How: every patch is padded to one shared structure (zero-yield samples, neutral modifiers; checked per",
        "patch), its likelihood is built as a compact jax model (`stats/compact/model.py`: the histosys sums as",
        "matrix products, the normsys factors as precomputed code-4 polynomials; no pyhf model per patch; checked",
        "against pyhf's per structure) and the five hypotest fits run as jax programs compiled once per worker",
        "(`stats/compact/minimise.py`: exact Hessian at the start, BFGS updates, active-set bounds), each verified",
        "(`stats/compact/hypotest.py`: restarts from the other fits' minima and from the lowest point, the EDM from",
        "the exact Hessian). The CLs arithmetic is pyhf's. The first patch of each worker pays the compilation.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        replace_section("## Published likelihoods", lines)

if __name__ == "__main__":
    main()
