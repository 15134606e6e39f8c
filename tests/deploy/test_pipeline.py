"""The end-to-end pipeline: results agree with the generator's injected truth; every output is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deploy.config import configure
from deploy.pipeline import patchset_signal, run_pipeline
from processors.generate import generate_dataset


@pytest.fixture(scope="module")
def strong_signal(tmp_path_factory):
    # A small sample with a 4x signal: significant enough to test the mass and yield, quick to generate; with the
    # simulated samples (60k events each) that `run` processes beside the data.
    directory = tmp_path_factory.mktemp("data")
    generate_dataset(directory, lumi_fb=36.1, scale=0.06, signal_strength=4.0, seed=11, mc=True, mc_events=60_000)
    return directory


@pytest.mark.slow
def test_pipeline_agrees_with_the_injected_truth(tmp_path, strong_signal, client):
    lines = []
    configuration = configure(overrides={"dataset.lumi_fb": 36.1, "dataset.scale": 0.06, "dataset.seed": 11})
    result = run_pipeline(tmp_path / "out", client=client, configuration=configuration, data_dir=strong_signal,
                          patch_masses=[120.0, 125.0, 130.0], echo=lines.append, progress=False)
    truth = json.loads((strong_signal / "truth.json").read_text())
    results = json.loads(result.results_path.read_text())
    assert result.failures == [] and results["failures"] == []
    assert any("reusing the generated dataset" in line for line in lines)
    # Its simulated samples have 60k events each, not today's defaults: kept, and said.
    assert any("note: its simulated sample diphoton has 60,000 generated events, today's default is 600,000" in line
               for line in lines), lines

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

    # Upper limits on mu (relative to the simulated SM yield) per mass: pyhf's own hypotest gives CLs = 0.05 there.
    limits = results["limits"]
    assert limits["patches"] == 3 and limits["failed"] == 0
    assert results["patchset_signal"]["normalisation"].startswith("the simulated Standard Model yield")
    # The patches' signal is the simulated ggH + VBF template (1 GeV bins): itself at 125 GeV, 5 bins lower at
    # 120 GeV and 5 bins higher at 130 GeV, with its yield less the tail's 5 GeV moved out of the range.
    signal = results["patchset_signal"]
    assert signal["model"] == "simulation" and signal["template_mass"] == 125.0
    simulated = json.loads((tmp_path / "out/processing/simulation/histograms.json").read_text())["mc_mass"]
    datasets, systs = (simulated["axes"][i]["categories"] for i in (0, 1))
    values = np.asarray(simulated["storage"]["values"])[:, systs.index("nominal"), 1:-1]  # flow bins left out
    template = sum(values[datasets.index(name)] for name in ("ggH125", "VBFH125"))
    patches = {p["metadata"]["values"][0]: p["patch"][0]["value"]["data"] for p in
               json.loads((tmp_path / "out/patchset/likelihoods/patchset.json").read_text())["patches"]}
    assert np.allclose(patches[125.0], template, rtol=1e-12, atol=0)
    assert np.allclose(patches[120.0][:-5], template[5:], rtol=1e-9) and np.allclose(patches[130.0][5:], template[:-5])
    assert signal["yield"] == pytest.approx(template.sum(), rel=1e-12)
    assert sum(patches[120.0]) == pytest.approx(template[5:].sum(), rel=1e-9)
    assert sum(patches[120.0]) > 0.999 * template.sum()
    by_mass = {p["values"][0]: p for p in limits["points"]}
    assert by_mass[125.0]["observed"] > by_mass[125.0]["expected"][4]  # 4x the SM signal: above the +2 sigma band
    import pyhf

    from stats.hepdata import load_likelihoods
    from stats.likelihoods import HypotestSettings, patched_model

    loaded = load_likelihoods(tmp_path / "out/patchset/likelihoods")
    patch = next(p for p in loaded.patchset.patches if list(p.values) == [120.0])
    pyhf.set_backend("jax")  # numpy takes minutes for the 60 shapesys parameters (upper_limit: 450 s)
    try:
        model, data = patched_model(loaded.bkg_only, {"metadata": patch.metadata, "patch": patch.patch},
                                    HypotestSettings())
        observed = pyhf.infer.hypotest(by_mass[120.0]["observed"], data, model, test_stat="qtilde")
        _, expected = pyhf.infer.hypotest(by_mass[120.0]["expected"][2], data, model, test_stat="qtilde",
                                          return_expected_set=True)
    finally:
        pyhf.set_backend("numpy")
    assert float(observed) == pytest.approx(0.05, abs=5e-4)
    assert float(expected[2]) == pytest.approx(0.05, abs=5e-4)

    report = result.report_path.read_text()
    assert "## Upper limits" in report and "](patchset/limits/limits.png)" in report
    assert (tmp_path / "out/patchset/limits/limits.png").is_file()
    for plot in ("fit/fit.png", "mass_scan/mass_scan.png", "patchset/cls.png", "fit/degree_scan.png",
                 "fit/simulation_fit.png", "fit/spurious_signal.png"):
        assert (tmp_path / "out" / plot).is_file()
    for plot in ("fit/fit.png", "mass_scan/mass_scan.png", "patchset/cls.png", "fit/simulation_fit.png"):
        assert f"]({plot})" in report

    # The simulation model: mu relative to the SM against the injected strength, observed against expected.
    model = results["fit"]["simulation_model"]
    injected = truth["simulation"]["signal_strength"]
    assert abs(model["mu"] - injected) < 2 * model["mu_unc"]
    assert model["significance"]["observed"] > 3 > model["significance"]["expected"]  # 4x the SM signal
    assert compared["simulation_mu"]["truth"] == injected and compared["simulation_mu"]["within_2_sigma"] is True
    assert set(model["spurious_signal"]) == {"2", "3", "4", "5", "6"}  # beside each F-test
    # The spurious-signal uncertainty: zeta where the template's statistics dominate, S_spur where they do not.
    chosen, taken = model["spurious_signal"][str(model["degree"])], model["spurious_uncertainty"]
    assert taken["value"] == (chosen["zeta"] if chosen["mc_unc"] >= chosen["sigma_bkg"] else chosen["value"])
    workspace = json.loads((tmp_path / "out/fit/workspace_simulation.json").read_text())
    spurious = [m["data"]["hi_data"] for s in workspace["channels"][0]["samples"] for m in s["modifiers"]
                if m["name"] == "spurious_signal"]
    assert sum(map(sum, spurious)) == pytest.approx(taken["value"], rel=1e-9)
    # Every number of the report says how it was computed.
    fit, significance = results["fit"], results["fit"]["significance"]
    for line in (
        f"Discovery significance, tutorial workspace (pyhf/cabinetry q0; the fitted Gaussian as signal, per-bin "
        f"shapesys of the background fit): observed {significance['observed']:.2f} sigma, expected "
        f"{significance['expected']:.2f} sigma.",
        f"Discovery significance, profile likelihood (binned Poisson fit of polynomial + Gaussian of fixed width "
        f"1.7 GeV, polynomial coefficients profiled, no systematic uncertainty; the mass scan's method): "
        f"{fit['profile_likelihood']['significance']:.2f} sigma.",
        "Expected significance of the injected truth (Asimov formula: the generator's expected "
        f"{truth['expected_selected_signal']:.0f} selected signal events",
        f"): {compared['asimov_significance']:.2f} sigma.",
        "Signal strength (profile likelihood, every nuisance parameter profiled; cabinetry fit, verified): "
        f"mu = {model['mu']:.3f} +/- {model['mu_unc']:.3f}.",
        "Discovery significance, simulation model (pyhf q0 with every systematic uncertainty): observed "
        f"{model['significance']['observed']:.2f} sigma, expected {model['significance']['expected']:.2f} sigma",
        f"Against the injected signal strength {injected:.3f}",
        f"pull {compared['simulation_mu']['pull']:+.2f} sigma, within 2 sigma: yes",
        "| `spurious_signal` | histosys |", "| `lumi` | lumi |", "| `photon_energy_scale` | histosys |",
        "Signal of each patch: the simulated ggH125 + VBFH125 template at 125 GeV moved to each mass (only that "
        "mass is simulated); mu = 1 is the simulated Standard Model yield at 125 GeV, at every mass",
        f"| {fit['degree']} (chosen) |",
        f"Spurious-signal uncertainty of the chosen degree {fit['degree']}: the model takes {taken['from']} = "
        f"{taken['value']:.1f} events",
    ):
        assert line in report, line


@pytest.mark.parametrize("model", [None, {"error": "no continuum"}])
def test_without_the_simulation_model_the_patches_signal_is_the_fitted_gaussian(tmp_path, model):
    fit = {"background_fit": {"sigma": 1.74, "signal_yield": 1520.0}, "simulation_model": model}
    record, options = patchset_signal(fit, tmp_path / "no simulation")
    assert options == {"resolution": 1.74, "signal_yield": 1520.0}
    assert record["model"] == "gaussian" and record["yield"] == 1520.0
    assert "Gaussian of the fitted width 1.74 GeV" in record["shape"]


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


def _pyhf_cls(likelihoods, name):
    """CLs_obs of one patch straight from pyhf (the reference, independent of the project's engine)."""
    import pyhf

    bkg_only = json.loads((likelihoods / "BkgOnly.json").read_text())
    patchset = pyhf.PatchSet(json.loads((likelihoods / "patchset.json").read_text()))
    workspace = pyhf.Workspace(patchset[name].apply(bkg_only))
    model = workspace.model(modifier_settings={"normsys": {"interpcode": "code4"},
                                               "histosys": {"interpcode": "code4p"}})
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    try:
        return float(pyhf.infer.hypotest(1.0, workspace.data(model), model, test_stat="qtilde"))
    finally:
        pyhf.set_backend("numpy")


@pytest.mark.slow
def test_a_rerun_on_other_data_recomputes_instead_of_reusing(tmp_path, strong_signal, client):
    """`run`, then `run --scale 0.03 --seed 99` into the same folder: the patch scan gives the new data's CLs."""
    out, lines = tmp_path / "out", []
    first_config = configure(overrides={"dataset.scale": 0.06, "dataset.seed": 11})
    run_pipeline(out, client=client, configuration=first_config, data_dir=strong_signal, patch_masses=[125.0],
                 echo=lines.append, progress=False)
    (first,) = json.loads((out / "patchset/cls.json").read_text())["results"]

    # Without the simulated samples (generated faster): the first run's are removed, not fitted to these data.
    other = configure(overrides={"dataset.scale": 0.03, "dataset.seed": 99, "processing.simulation": False},
                      flags={"dataset.seed": "--seed"})
    result = run_pipeline(out, client=client, configuration=other, data_dir=tmp_path / "other",
                          patch_masses=[125.0], echo=lines.append, progress=False)
    (second,) = json.loads((out / "patchset/cls.json").read_text())["results"]
    assert result.failures == []
    assert any("recomputing" in line for line in lines)
    assert not (out / "processing/simulation").exists() and "simulation_model" not in result.results["fit"]

    truth = json.loads((tmp_path / "other/truth.json").read_text())
    assert truth["seed"] == 99 and result.results["dataset"]["seed"] == 99
    assert result.results["processing"]["events_processed"] == truth["events_written"]
    expected = _pyhf_cls(out / "patchset/likelihoods", second["name"])
    assert second["CLs_obs"] == pytest.approx(expected, rel=2e-3, abs=1e-6)
    assert abs(first["CLs_obs"] - second["CLs_obs"]) > 1e-3  # the stale number would have been told apart
    identity = json.loads((out / "patchset/identity.json").read_text())
    assert identity == result.results["patchset"]["identity"] and identity["version"]
    assert result.results["settings"]["dataset.seed"] == {"value": 99, "origin": "flag --seed"}
    fit_identity = json.loads((out / "fit/fit.json").read_text())["identity"]
    histograms = (out / "processing/histograms.json").read_bytes()
    import hashlib

    assert fit_identity["inputs"][0]["sha256"] == hashlib.sha256(histograms).hexdigest()
    # The look-elsewhere toys of the first data are not resumed on the second: recomputed for its histogram.
    from stats.mass_scan import scan_identity
    from stats.spectrum import load_spectrum

    spectrum = load_spectrum(out / "processing")
    lee = json.loads((out / "mass_scan/look_elsewhere.json").read_text())
    digest = scan_identity(spectrum.counts, spectrum.edges, [])["histogram_sha256"]
    assert lee["identity"]["histogram_sha256"] == digest
    assert result.results["look_elsewhere"]["identity"]["histogram_sha256"] == digest
