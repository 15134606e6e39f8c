"""Benchmark: all 1Lbb patches on a running 2-worker cluster (tarball to written results) vs serial pyhf.

    python benchmarks/bench_patchset.py [--patches 125] [--serial 3] [--workers 2] [--baseline REV] [--json FILE]

Two scans, each on a fresh cluster: the first with an empty jax compilation cache, the second with the
cache the first left. The baseline, measured in the same run: pyhf's numpy ``hypotest`` serially on the first
``--serial`` patches. With ``--baseline REV`` the same two scans also run with the project's code at git revision
``REV`` (a temporary worktree, its own compilation cache), alternating with today's: empty-cache scans first, then
warm ones. Each scan runs in its own process, with ``PYTHONPATH`` naming the code it measures. Every scanned point
is compared with pyhf's reference CLs (``1Lbb-reference-cls.json``).

Writes a JSON document (``_lib.output``) with, besides the common fields, ``settings`` {patches, serial, workers,
baseline}, ``patches`` (scanned), ``serial_s`` (pyhf's seconds per patch), ``scans`` [{label, code, wall_s,
failed}] (``code``: "today" or the baseline revision), ``worst_deviation`` (the largest deviation of today's points
from the reference, in units of the tolerance max(1e-4, 1e-3 rel), where the verified fits agree with pyhf's
default fit; None where none does), ``lower_minimum`` (patches where a restart found a lower minimum than pyhf's
default fit) and ``target_s``; ``benchmarks/render.py`` makes the "## Published likelihoods" section of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _lib import output
from _lib.data import SHARED_DATA

#: Target of issue 4: every patch on 2 workers, seconds (aim 30 s).
TARGET_S = 60.0
#: Where the project's code lies (this script's repository).
ROOT = Path(__file__).resolve().parent.parent
#: The jax compilation cache's variable (``stats.compact.worker.CACHE_ENV``; the same name at older revisions).
CACHE_ENV = "OPENDATA_STATS_JAX_CACHE"


def scan_once(patches: int, workers: int) -> dict:
    """One scan with the code on ``sys.path``: seconds from the tarball to written results on a running cluster,
    and every point (name, status, CLs, whether a fit was lowered)."""
    from deploy.clusters import dask_client
    from stats.hepdata import load_likelihoods
    from stats.likelihoods import HypotestSettings
    from stats.patchscan import scan_patches

    with dask_client(workers=workers) as client, tempfile.TemporaryDirectory() as tmp:
        client.run(lambda: None)  # the cluster is running before the clock starts
        start = time.perf_counter()
        loaded = load_likelihoods(SHARED_DATA / "1Lbb-likelihoods.tar.gz")
        chosen = list(loaded.patchset.patches)[:patches]
        result = scan_patches(loaded, client, patches=chosen, settings=HypotestSettings(backend="jax"),
                              out=Path(tmp) / "scan.json")
        wall = time.perf_counter() - start
    points = [{"name": p.name, "status": p.status, "CLs": [p.CLs_obs, *(p.CLs_exp or [])],
               "lowered": bool(getattr(p, "lowered_fits", lambda: [])())} for p in result.results]
    return {"wall_s": wall, "failed": len(result.failed), "points": points}


def scan_in_process(code: Path, cache: Path, patches: int, workers: int) -> dict:
    """:func:`scan_once` in a new process that imports the project from ``code``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    env[CACHE_ENV] = str(cache)
    completed = subprocess.run([sys.executable, __file__, "--scan-once", "--patches", str(patches),
                                "--workers", str(workers)], env=env, cwd=code, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"error: the scan with the code at {code} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def serial_pyhf(count: int) -> list[float]:
    """Seconds of pyhf's numpy ``hypotest`` on each of the first ``count`` patches."""
    import pyhf

    from stats.hepdata import load_likelihoods
    from stats.likelihoods import HypotestSettings, patched_model

    loaded = load_likelihoods(SHARED_DATA / "1Lbb-likelihoods.tar.gz")
    seconds = []
    for patch in list(loaded.patchset.patches)[:count]:
        t0 = time.perf_counter()
        pyhf.set_backend("numpy")
        model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch},
                                    HypotestSettings())
        pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde", return_expected_set=True)
        seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=125)
    parser.add_argument("--serial", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", metavar="REV", help="also scan with the code at this git revision")
    parser.add_argument("--scan-once", action="store_true", help=argparse.SUPPRESS)
    output.add_arguments(parser, "--no-write")
    args = parser.parse_args()
    if args.scan_once:
        print(json.dumps(scan_once(args.patches, args.workers)))
        return
    document = output.start("patchset", output.command("bench_patchset.py", args, "patches", "serial", "workers",
                                                       "baseline"),
                            {"patches": args.patches, "serial": args.serial, "workers": args.workers,
                             "baseline": args.baseline})
    reference = {r["name"]: r for r in json.loads((SHARED_DATA / "1Lbb-reference-cls.json").read_text())["results"]}
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"today": ROOT}
        if args.baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(worktree),
                            args.baseline], check=True)
            codes[args.baseline] = worktree
        try:
            runs = []
            # Fresh clusters each time (new engines); the warm scans find their cold scan's compiled programs.
            for label in ("empty compile cache", "warm compile cache"):
                for code, path in codes.items():
                    scan = scan_in_process(path, Path(tmp) / f"cache-{code}", args.patches, args.workers)
                    runs.append({"label": label, "code": code, **scan})
                    print(f"{code}, {label}: {scan['wall_s']:.1f} s", file=sys.stderr)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    today = [run for run in runs if run["code"] == "today"]
    worst = max(
        (abs(a - b) / max(1e-4, 1e-3 * abs(b))
         for run in today for p in run["points"] if p["status"] == "ok" and not p["lowered"]
         for a, b in zip(p["CLs"], [reference[p["name"]]["CLs_obs"], *reference[p["name"]]["CLs_exp"]])),
        default=None,
    )
    lower = sorted({p["name"] for run in today for p in run["points"] if p["lowered"]})
    document.update({
        "patches": len(today[0]["points"]), "serial_s": serial_pyhf(args.serial),
        "scans": [{"label": run["label"], "code": run["code"], "wall_s": run["wall_s"], "failed": run["failed"]}
                  for run in runs],
        "worst_deviation": None if worst is None else float(worst), "lower_minimum": lower, "target_s": TARGET_S,
    })
    output.finish(document, args.json)


if __name__ == "__main__":
    main()
