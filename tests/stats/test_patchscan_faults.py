"""A patchset scan on the real Dask cluster survives a worker SIGKILLed mid-scan: no point is lost or changed."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pyhf
import pytest

from stats.hepdata import Likelihoods
from stats.likelihoods import HypotestSettings
from stats.patchscan import scan_patches

pytestmark = pytest.mark.timeout(150)

MASSES = (100, 150, 200, 250, 300, 350)


def synthetic_likelihoods() -> Likelihoods:
    """A 4-bin background-only workspace and a 6-point signal-mass patchset in the HEPData layout."""
    bkg_only = {
        "channels": [{"name": "SR", "samples": [{"name": "background", "data": [60.0, 45.0, 30.0, 20.0], "modifiers": [
            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
            {"name": "stat", "type": "staterror", "data": [3.0, 2.5, 2.0, 1.5]},
        ]}]}],
        "observations": [{"name": "SR", "data": [63.0, 44.0, 35.0, 19.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu_sig", "parameters": []}}],
        "version": "1.0.0",
    }  # fmt: skip
    patches = []
    for index, mass in enumerate(MASSES):
        peak = index * 3 / (len(MASSES) - 1)
        signal_yields = [round(12.0 * 0.6 ** abs(b - peak), 3) for b in range(4)]
        sample = {"name": "signal", "data": signal_yields, "modifiers": [
            {"name": "mu_sig", "type": "normfactor", "data": None},
            {"name": "sig_norm", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
        ]}  # fmt: skip
        patches.append({"metadata": {"name": f"m{mass}", "values": [mass]},
                        "patch": [{"op": "add", "path": "/channels/0/samples/1", "value": sample}]})  # fmt: skip
    digest = pyhf.utils.digest(bkg_only)
    patchset = pyhf.PatchSet({
        "metadata": {"description": "synthetic signal-mass grid", "digests": {"sha256": digest}, "labels": ["mass"],
                     "references": {"hepdata": "ins0000000"}},
        "patches": patches,
        "version": "1.0.0",
    })  # fmt: skip
    return Likelihoods(bkg_only, patchset, "synthetic", digest)


def slow_target(bkg_only, settings, shared):
    """The default per-patch function, 0.5 s slower, so that a point is always in flight when the worker dies."""
    from stats.compact.worker import default_target

    compute = default_target(bkg_only, settings, shared)

    def slow(patch):
        time.sleep(0.5)
        return compute(patch)

    return slow


@pytest.mark.slow
def test_worker_killed_mid_scan_loses_no_point(dask_scheduler_address):
    from distributed import Client

    likelihoods, settings = synthetic_likelihoods(), HypotestSettings(backend="numpy")
    with Client(dask_scheduler_address) as client:
        clean = scan_patches(likelihoods, client, settings=settings)
        assert [r.status for r in clean.results] == ["ok"] * len(MASSES)

        pids = client.run(os.getpid)
        finished, seen = [], {}

        def kill_a_busy_worker():
            # Once a point has finished, kill a worker while it computes another one (and its engine process).
            while not finished:
                time.sleep(0.01)
            while "victim" not in seen:
                busy = [address for address, keys in client.processing().items() if keys]
                if busy:
                    seen["victim"] = psutil.Process(pids[busy[0]])
                    seen["engines"] = seen["victim"].children()
                    seen["victim"].send_signal(signal.SIGKILL)
                    seen["done_at_kill"] = len(finished)
                time.sleep(0.01)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        scan = scan_patches(likelihoods, client, settings=settings, progress=finished.append, target=f"{__name__}:slow_target")
        killer.join(timeout=10)
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker; leave the shared cluster as found
        assert seen["victim"].pid not in client.run(os.getpid).values()

    assert 1 <= seen["done_at_kill"] < len(MASSES)
    assert [r.name for r in scan.results] == [f"m{m}" for m in MASSES]
    assert [r.status for r in scan.results] == ["ok"] * len(MASSES), scan.failed
    for point, reference in zip(scan.results, clean.results):
        assert point.CLs_obs == pytest.approx(reference.CLs_obs, rel=1e-9)
        assert point.CLs_exp == pytest.approx(reference.CLs_exp, rel=1e-9)
    # The killed worker's engine process does not outlive it.
    _, alive = psutil.wait_procs(seen["engines"], timeout=10)
    assert alive == []
