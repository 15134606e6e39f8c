"""Benchmark: all 1Lbb patches on a running 2-worker cluster (tarball to written results) vs serial pyhf.

    python benchmarks/bench_patchset.py [--patches 125] [--serial 3] [--workers 2] [--json FILE]

Two scans, each on a fresh cluster: the first with an empty jax compilation cache, the second with the
cache the first left. The baseline, measured in the same run: pyhf's numpy ``hypotest`` serially on the first
``--serial`` patches. Every scanned point is compared with pyhf's reference CLs (``1Lbb-reference-cls.json``).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {patches, serial, workers},
``patches`` (scanned), ``serial_s`` (pyhf's seconds per patch), ``scans`` [{label, wall_s, failed}],
``worst_deviation`` (the largest deviation from the reference, in units of the tolerance max(1e-4, 1e-3 rel),
where the verified fits agree with pyhf's default fit; None where none does), ``lower_minimum`` (patches where
a restart found a lower minimum than pyhf's default fit) and ``target_s``; ``benchmarks/render.py`` makes the
"## Published likelihoods" section of it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyhf

from _lib import output
from _lib.data import SHARED_DATA

from deploy.clusters import dask_client
from stats.compact.worker import CACHE_ENV
from stats.hepdata import load_likelihoods
from stats.likelihoods import HypotestSettings, patched_model
from stats.patchscan import scan_patches

#: Target of issue 4: every patch on 2 workers, seconds (aim 30 s).
TARGET_S = 60.0


def scan(workers: int, patches: int) -> tuple[float, object, list]:
    """Seconds from the tarball to written results on a running cluster, the result, the patches."""
    with dask_client(workers=workers) as client, tempfile.TemporaryDirectory() as tmp:
        client.run(lambda: None)  # the cluster is running before the clock starts
        start = time.perf_counter()
        loaded = load_likelihoods(SHARED_DATA / "1Lbb-likelihoods.tar.gz")
        chosen = list(loaded.patchset.patches)[:patches]
        result = scan_patches(loaded, client, patches=chosen, settings=HypotestSettings(backend="jax"),
                              out=Path(tmp) / "scan.json")
        return time.perf_counter() - start, result, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=125)
    parser.add_argument("--serial", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()
    document = output.start("patchset", output.command("bench_patchset.py", args, "patches", "serial", "workers"),
                            {"patches": args.patches, "serial": args.serial, "workers": args.workers})
    reference = {r["name"]: r for r in json.loads((SHARED_DATA / "1Lbb-reference-cls.json").read_text())["results"]}
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        # Fresh clusters both times (new engines); the second finds the first's compiled programs on disk.
        os.environ[CACHE_ENV] = cache
        for label in ("empty compile cache", "warm compile cache"):
            runs[label] = scan(args.workers, args.patches)
    chosen = runs["empty compile cache"][2]
    worst = max(
        (abs(a - b) / max(1e-4, 1e-3 * abs(b))
         for _, res, _ in runs.values()
         for p in res.results if p.status == "ok" and not p.lowered_fits()
         for a, b in zip([p.CLs_obs, *p.CLs_exp], [reference[p.name]["CLs_obs"], *reference[p.name]["CLs_exp"]])),
        default=None,
    )
    lower = sorted({p.name for _, res, _ in runs.values() for p in res.results if p.lowered_fits()})
    loaded = load_likelihoods(SHARED_DATA / "1Lbb-likelihoods.tar.gz")
    serial = []
    for patch in list(loaded.patchset.patches)[: args.serial]:
        t0 = time.perf_counter()
        pyhf.set_backend("numpy")
        model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch},
                                    HypotestSettings())
        pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
        serial.append(time.perf_counter() - t0)
    document.update({
        "patches": len(chosen), "serial_s": serial,
        "scans": [{"label": label, "wall_s": wall, "failed": len(res.failed)} for label, (wall, res, _) in runs.items()],
        "worst_deviation": None if worst is None else float(worst), "lower_minimum": lower, "target_s": TARGET_S,
    })
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
