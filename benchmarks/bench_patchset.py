"""Benchmark: all 1Lbb patches on a running 2-worker cluster (tarball to written results) vs serial pyhf.

Usage: python benchmarks/bench_patchset.py [--patches N] [--serial 3] [--workers 2]
Prints a table; the numbers go into BENCHMARKS.md "## Published likelihoods".
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from deploy.clusters import dask_client
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, hypotest_patch
from stats.patchscan import scan_patches

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", type=int, default=125)
    parser.add_argument("--serial", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    reference = {r["name"]: r for r in json.loads((DATA / "1Lbb-reference-cls.json").read_text())["results"]}
    with dask_client(workers=args.workers) as client, tempfile.TemporaryDirectory() as tmp:
        client.run(lambda: None)  # the cluster is running before the clock starts
        start = time.perf_counter()
        loaded = load_likelihoods(DATA / "1Lbb-likelihoods.tar.gz")
        chosen = list(loaded.patchset.patches)[: args.patches]
        result = scan_patches(loaded, client, patches=chosen, settings=HypotestSettings(backend="jax"),
                              out=Path(tmp) / "scan.json")
        scan_wall = time.perf_counter() - start
    worst = max(
        abs(a - b) / max(1e-4, 1e-3 * abs(b))
        for p in result.results if p.status == "ok"
        for a, b in zip([p.CLs_obs, *p.CLs_exp], [reference[p.name]["CLs_obs"], *reference[p.name]["CLs_exp"]])
    )
    serial = []
    for patch in chosen[: args.serial]:
        t0 = time.perf_counter()
        hypotest_patch(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch}, HypotestSettings())
        serial.append(time.perf_counter() - t0)
    per_patch_serial = sum(serial) / len(serial)
    n = len(chosen)
    print(f"| what | patches | wall [s] | per patch [s] | ratio |")
    print(f"|---|---|---|---|---|")
    print(f"| pyhf numpy hypotest, serial | {len(serial)} | {sum(serial):.1f} | {per_patch_serial:.2f} | 1 |")
    print(f"| pyhf numpy serial, extrapolated | {n} | {per_patch_serial * n:.0f} | {per_patch_serial:.2f} | 1 |")
    print(f"| scan-patchset jax template, {args.workers} workers | {n} | {scan_wall:.1f} | {scan_wall / n:.2f} | "
          f"{per_patch_serial * n / scan_wall:.1f}x |")
    print(f"ok {n - len(result.failed)}/{n}; worst deviation from reference {worst:.2e} of the tolerance "
          f"max(1e-4, 1e-3 rel)")


if __name__ == "__main__":
    main()
