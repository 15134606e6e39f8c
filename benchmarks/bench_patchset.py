"""Benchmark: all 1Lbb patches on a running 2-worker cluster (tarball to written results) vs serial pyhf.

Usage: python benchmarks/bench_patchset.py [--patches N] [--serial 3] [--workers 2]
Two scans, each on a fresh cluster: the first with an empty jax compilation cache, the second with the
cache the first left.
Prints a table; the numbers go into BENCHMARKS.md "## Published likelihoods".
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from deploy.clusters import dask_client
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, hypotest_patch
from stats.patchengine import CACHE_ENV
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
    args = parser.parse_args()
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
        for p in res.results if p.status == "ok"
        for a, b in zip([p.CLs_obs, *p.CLs_exp], [reference[p.name]["CLs_obs"], *reference[p.name]["CLs_exp"]])
    )
    loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
    serial = []
    for patch in list(loaded.patchset.patches)[: args.serial]:
        t0 = time.perf_counter()
        hypotest_patch(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch}, HypotestSettings())
        serial.append(time.perf_counter() - t0)
    per_patch_serial = sum(serial) / len(serial)
    n = len(chosen)
    print("| what | patches | wall [s] | per patch [s] | ratio |")
    print("|---|---|---|---|---|")
    print(f"| pyhf numpy hypotest, serial | {len(serial)} | {sum(serial):.1f} | {per_patch_serial:.2f} | 1 |")
    print(f"| pyhf numpy serial, extrapolated | {n} | {per_patch_serial * n:.0f} | {per_patch_serial:.2f} | 1 |")
    for label, (wall, res, _) in runs.items():
        print(f"| scan-patchset compact jax engine, {args.workers} workers, {label} | {n} | {wall:.1f} | {wall / n:.2f} | "
              f"{per_patch_serial * n / wall:.1f}x |")
    ok = min(n - len(res.failed) for _, res, _ in runs.values())
    print(f"ok {ok}/{n} in each run; worst deviation from reference {worst:.2e} of the tolerance max(1e-4, 1e-3 rel)")


if __name__ == "__main__":
    main()
