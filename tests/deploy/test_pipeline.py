"""The end-to-end pipeline: results agree with the generator's injected truth; every output is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from distributed import Client, LocalCluster

from deploy.config import configure
from deploy.pipeline import run_pipeline
from processors.generate import generate_dataset


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def strong_signal(tmp_path_factory):
    # A small sample with a 4x signal: significant enough to test the mass and yield, quick to generate.
    directory = tmp_path_factory.mktemp("data")
    generate_dataset(directory, lumi_fb=36.1, scale=0.06, signal_strength=4.0, seed=11)
    return directory


def test_pipeline_agrees_with_the_injected_truth(tmp_path, strong_signal, client):
    lines = []
    configuration = configure(overrides={"dataset.lumi_fb": 36.1, "dataset.scale": 0.06, "dataset.seed": 11})
    result = run_pipeline(tmp_path / "out", client=client, configuration=configuration, data_dir=strong_signal,
                          patch_masses=[120.0, 125.0, 130.0], echo=lines.append, progress=False)
    truth = json.loads((strong_signal / "truth.json").read_text())
    results = json.loads(result.results_path.read_text())
    assert result.failures == [] and results["failures"] == []
    assert any("reusing the generated dataset" in line for line in lines)

    processing = results["processing"]
    assert processing["events_processed"] == processing["events_in_files"] == truth["events_written"]
    # The selection in the engine selects exactly the events the generator's own selection counted.
    assert processing["selected"] == truth["selected_signal_events"] + truth["selected_background_events"]

    compared = results["truth"]
    assert abs(compared["best_scan_mass"] - truth["signal_mass"]) <= 1.25 + 1e-9  # the grid spacing
    pull = (compared["fitted_signal_yield"] - truth["expected_selected_signal"]) / compared["fitted_signal_yield_unc"]
    assert abs(pull) < 3
    assert compared["observed_significance"] > 3
    assert abs(compared["observed_significance"] - compared["asimov_significance"]) < 3

    patchset = results["patchset"]
    assert patchset["points"] == 3 and patchset["failed"] == 0
    cls = {r["values"][0]: r["CLs_obs"] for r in json.loads((tmp_path / "out/patchset/cls.json").read_text())["results"]}
    assert cls[125.0] > cls[120.0] and cls[125.0] > cls[130.0]  # the signal is seen where it was injected

    report = result.report_path.read_text()
    for plot in ("fit/fit.png", "mass_scan/mass_scan.png", "patchset/cls.png", "fit/degree_scan.png"):
        assert (tmp_path / "out" / plot).is_file()
    for plot in ("fit/fit.png", "mass_scan/mass_scan.png", "patchset/cls.png"):
        assert f"]({plot})" in report


def test_run_rejects_a_bad_config_value_in_one_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("histogram:\n  bins: -3\n")
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "run", "--config", str(config), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "histogram.bins" in done.stderr


@pytest.mark.slow
def test_default_run_command_agrees_with_truth(tmp_path):
    """The README's main job, as a new user runs it: no arguments but an output directory."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "run", "--out", str(tmp_path), "--no-progress"],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    truth = json.loads((tmp_path / "data" / "truth.json").read_text())
    compared = results["truth"]
    assert abs(compared["best_scan_mass"] - truth["signal_mass"]) <= 1.25 + 1e-9
    assert abs(compared["fitted_signal_yield"] - truth["expected_selected_signal"]) < 3 * compared["fitted_signal_yield_unc"]
    assert compared["observed_significance"] > 5
    assert np.isfinite(results["fit"]["mu"]) and abs(results["fit"]["mu"] - 1) < 3 * results["fit"]["mu_unc"]
    assert str(tmp_path / "results.json") in done.stdout
