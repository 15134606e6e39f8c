"""The simulated samples through the commands: ``process`` writes them beside the data (``OUT/simulation``, the
data's whole luminosity, the data's outputs unchanged), ``fit`` builds the simulation model on them."""

from __future__ import annotations

import json

import pytest

from deploy.cli import main
from processors.generate import generate_dataset
from processors.histograms import read_histograms


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("mc"), scale=0.03, seed=5, mc=True, mc_events=30_000, workers=1)


def succeed(argv, capsys):
    main(argv)
    return capsys.readouterr().err


def test_process_writes_the_samples_beside_the_data_at_the_data_luminosity(generated, tmp_path, capsys):
    metadata = str(generated.metadata_path)
    common = ["--metadata", metadata, "--workers", "0", "--no-progress", "--fraction", "0.5"]
    err = succeed(["process", *common, "--out", str(tmp_path / "mc")], capsys)
    assert "selected yields ggH125" in err
    succeed(["process", *common, "--no-mc", "--out", str(tmp_path / "data")], capsys)

    lumi = generated.truth["lumi_fb"]
    data = json.loads((tmp_path / "mc" / "summary.json").read_text())
    simulated = json.loads((tmp_path / "mc" / "simulation" / "summary.json").read_text())
    assert data["lumi_fb"] == pytest.approx(0.5 * lumi)  # the data: the processed half of the luminosity
    assert simulated["lumi_fb"] == pytest.approx(lumi)  # the samples: weighted to the data's whole luminosity
    truth = generated.truth["simulation"]["samples"]
    for name, sample in simulated["simulation"].items():
        # Half of each sample's events give about half of its yield.
        assert sample["yield"]["nominal"] == pytest.approx(0.5 * truth[name]["selected_yield"], rel=0.1)
    histograms = read_histograms(tmp_path / "mc" / "simulation" / "histograms.json")
    assert list(histograms["mc_mass"].axes["dataset"]) == ["ggH125", "VBFH125", "diphoton"]
    # The data's outputs are the same with or without the samples.
    without = json.loads((tmp_path / "data" / "summary.json").read_text())
    assert data["mass"] == without["mass"] and data["cutflow"] == without["cutflow"]
    assert not (tmp_path / "data" / "simulation").exists()


def test_paths_have_no_samples_unless_asked_for(generated, tmp_path, capsys):
    files = [str(path) for path in generated.files[:2]]
    succeed(["process", *files, "--workers", "0", "--no-progress", "--out", str(tmp_path / "auto")], capsys)
    assert not (tmp_path / "auto" / "simulation").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["process", *files, "--mc", "--workers", "0", "--no-progress", "--out", str(tmp_path / "mc")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--metadata or --release" in err


@pytest.mark.slow
def test_fit_builds_the_simulation_model(generated, tmp_path, capsys):
    out = tmp_path / "processed"
    succeed(["process", "--metadata", str(generated.metadata_path), "--workers", "0", "--no-progress", "--out",
             str(out)], capsys)
    main(["fit", str(out), "--degree", "3", "--out", str(tmp_path / "fit")])
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    model = record["simulation_model"]
    assert "error" not in model and model["degree"] == record["degree"] == 3
    assert list(model["spurious_signal"]) == ["3"]  # the degree was set: no F-test, one spurious-signal test
    assert model["expected_signal"] == pytest.approx(generated.truth["simulation"]["selected_signal_yield"])
    assert {"mu", "lumi", "photon_energy_scale", "photon_energy_resolution", "spurious_signal"} <= {
        name for name, _ in model["modifiers"]}
    assert (tmp_path / "fit" / "workspace_simulation.json").is_file()
    assert f"mu = {model['mu']:.3f}" in printed and "spurious signal of degree 3" in printed
    assert f"spurious-signal uncertainty: {model['spurious_uncertainty']['explanation']}" in printed
    assert record["identity"]["settings"]["model"]["lumi_uncertainty"] == 0.017


def test_samples_of_another_luminosity_are_refused(tmp_path):
    from deploy.simulation import check_normalisation
    from stats.errors import HistogramError

    (tmp_path / "simulation").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"lumi_fb": 1.0, "fraction": 0.5}))
    (tmp_path / "simulation" / "summary.json").write_text(json.dumps({"lumi_fb": 2.0}))
    check_normalisation(tmp_path, tmp_path / "simulation")  # half the data: their whole luminosity is 2 fb^-1
    (tmp_path / "simulation" / "summary.json").write_text(json.dumps({"lumi_fb": 36.1}))
    with pytest.raises(HistogramError, match="weighted to 36.1 fb\\^-1, the data .* hold 2 fb\\^-1"):
        check_normalisation(tmp_path, tmp_path / "simulation")
