"""Simulated samples: the generator's MC files in the release's layout, their resolution through atlasopenmagic
(offline and mocked online), the weighted histograms against the generator's truth, the photon energy scale and
resolution variations, and the data's histograms left as they were."""

from __future__ import annotations

import json

import atlasopenmagic
import atlasopenmagic.metadata
import awkward as ak
import numpy as np
import pytest
import requests
import uproot
import vector
from click.testing import CliRunner

from processors.datasets import MC_FILE_PATTERN, SIMULATED_SAMPLES, Normalisation, resolve_files, resolve_samples
from processors.engine import process_files
from processors.errors import DatasetResolutionError
from processors.generate import generate_dataset
from processors.histograms import read_histograms, save_outputs
from processors.processor import DiphotonProcessor
from processors.schema import TREE_NAME, validate_file
from processors.simulation import SYSTEMATICS, SimulationProcessor

OPTIONS = dict(events=20_000, periods=["data15_periodD", "data16_periodA"], seed=5, basket_entries=10_000, workers=1)
SIGNAL = [sample.name for sample in SIMULATED_SAMPLES if sample.signal]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("mc"), mc=True, mc_events=30_000, **OPTIONS)


@pytest.fixture(scope="module")
def lumi(generated):
    return generated.truth["lumi_fb"]


@pytest.fixture(scope="module")
def processed(generated, lumi):
    """Each sample processed in chunks of 10k events, with 0.1 GeV bins."""
    return {
        name: process_files([path], processor=SimulationProcessor(lumi_fb=lumi, bins=600), dataset=name,
                            chunksize=10_000, progress=False)
        for name, path in generated.sample_files.items()
    }


@pytest.fixture
def atlasopenmagic_state(monkeypatch):
    """read_metadata and set_release replace atlasopenmagic's module state: restore it after the test."""
    for name in ("_metadata", "current_release", "AVAILABLE_FIELDS", "current_local_path"):
        monkeypatch.setattr(atlasopenmagic.metadata, name, getattr(atlasopenmagic.metadata, name))


def _reference_weights(path, lumi_fb):
    """Weights of the events passing the tutorial selection, computed here with uproot, awkward and vector."""
    events = uproot.open(path)[TREE_NAME].arrays()
    events = events[ak.num(events.photon_pt) >= 2]
    pt, eta = events.photon_pt, events.photon_eta
    p4 = vector.zip({name: ak.values_astype(events[f"photon_{name}"], np.float64)
                     for name in ("pt", "eta", "phi", "e")})
    mass = (p4[:, 0] + p4[:, 1]).M
    keep = events.photon_isTightID[:, 0] & events.photon_isTightID[:, 1] & (pt[:, 0] > 50) & (pt[:, 1] > 30)
    keep = keep & (events.photon_ptcone20[:, 0] < 0.055 * pt[:, 0]) & (events.photon_ptcone20[:, 1] < 0.055 * pt[:, 1])
    for i in (0, 1):
        keep = keep & ((abs(eta[:, i]) <= 1.37) | (abs(eta[:, i]) >= 1.52))
    keep = keep & (pt[:, 0] > 0.35 * mass) & (pt[:, 1] > 0.35 * mass) & (mass >= 100) & (mass < 160)
    selected = events[keep]
    factors = [np.asarray(selected[name], dtype=np.float64) for name in
               ("mcWeight", "ScaleFactor_PILEUP", "ScaleFactor_PHOTON", "xsec", "kfac", "filteff")]
    return np.prod(factors, axis=0) * 1000.0 * lumi_fb / np.asarray(selected.sum_of_weights, dtype=np.float64)


def test_simulated_files_have_the_release_layout(generated):
    truth = generated.truth["simulation"]["samples"]
    for sample in SIMULATED_SAMPLES:
        path = generated.sample_files[sample.name]
        assert path.name == MC_FILE_PATTERN.format(dsid=sample.dsid, physics_short=sample.physics_short)
        assert validate_file(str(path)) == truth[sample.name]["events_written"] > 10_000  # every branch, its type
        branches = uproot.open(path)[TREE_NAME].arrays(
            ["runNumber", "channelNumber", "eventNumber", "mcWeight", "ScaleFactor_PILEUP", "ScaleFactor_PHOTON",
             "xsec", "kfac", "filteff", "sum_of_weights", "sum_of_weights_squared", "num_events"], library="np")
        assert set(branches["channelNumber"]) == {int(sample.dsid)} and set(branches["runNumber"]) == {284500}
        assert len(np.unique(branches["eventNumber"])) == len(branches["eventNumber"])
        for branch, field in [("xsec", "cross_section_pb"), ("kfac", "kFactor"), ("filteff", "genFiltEff"),
                              ("sum_of_weights", "sumOfWeights"), ("sum_of_weights_squared", "sumOfWeightsSquared"),
                              ("num_events", "nEvents")]:
            assert set(branches[branch].astype(np.float64)) == {truth[sample.name][field]}, branch
        # sum_of_weights is of all 30k generated events, the file holds the ~70 % passing the skim.
        assert 0.6 < branches["mcWeight"].sum() / branches["sum_of_weights"][0] < 0.8
        assert np.std(branches["ScaleFactor_PILEUP"]) > 0.05 and np.std(branches["ScaleFactor_PHOTON"]) > 0.01
    ggh = uproot.open(generated.sample_files["ggH125"])[TREE_NAME]["mcWeight"].array(library="np")
    assert np.any(ggh < 0) and np.std(ggh) > 0.3  # NLO-like weights
    assert truth["ggH125"]["cross_section_pb"] == pytest.approx(28.3)
    assert truth["ggH125"]["kFactor"] == pytest.approx(1.717)
    assert truth["VBFH125"]["genFiltEff"] == pytest.approx(0.00227)


def test_metadata_has_atlasopenmagic_fields(generated, atlasopenmagic_state):
    atlasopenmagic.read_metadata(str(generated.metadata_path))
    for sample in SIMULATED_SAMPLES:
        record = atlasopenmagic.get_metadata(sample.dsid)
        truth = generated.truth["simulation"]["samples"][sample.name]
        assert {field: record[field] for field in ("cross_section_pb", "kFactor", "genFiltEff", "sumOfWeights")} == {
            field: truth[field] for field in ("cross_section_pb", "kFactor", "genFiltEff", "sumOfWeights")}
        assert record["physics_short"] == sample.physics_short and "file_list" not in record
        assert atlasopenmagic.get_metadata(sample.physics_short)["dataset_number"] == sample.dsid
        urls = atlasopenmagic.get_urls(sample.dsid, skim="GamGam")
        assert urls == [str(generated.sample_files[sample.name].resolve())]


def test_samples_resolve_offline_like_the_data(generated, atlasopenmagic_state):
    resolved = resolve_samples(metadata=generated.metadata_path)
    assert [r.name for r in resolved] == [s.name for s in SIMULATED_SAMPLES]
    for sample in resolved:
        truth = generated.truth["simulation"]["samples"][sample.name]
        assert sample.files == [str(generated.sample_files[sample.name].resolve())]
        assert sample.normalisation == Normalisation(truth["cross_section_pb"], truth["kFactor"], truth["genFiltEff"],
                                                     truth["sumOfWeights"])
        assert sample.signal == (sample.name in SIGNAL)
    assert [r.name for r in resolve_samples(["346214", "ggH125"], metadata=generated.metadata_path)] == [
        "VBFH125", "ggH125"]
    assert resolve_files(metadata=generated.metadata_path) == [str(f.resolve()) for f in generated.files]
    with pytest.raises(DatasetResolutionError, match="unknown simulated sample 'ttH'"):
        resolve_samples(["ttH"], metadata=generated.metadata_path)
    with pytest.raises(DatasetResolutionError, match="exactly one"):
        resolve_samples()


def test_samples_resolve_online_through_atlasopenmagic(generated, atlasopenmagic_state, monkeypatch):
    # The API as atlasopenmagic pages it: the release's datasets with root:// URLs on EOS.
    records = json.loads(generated.metadata_path.read_text())
    datasets = []
    for key, record in records.items():
        if key.isdigit() or key == "data":
            record = dict(record, release={"name": "2025e-13tev-beta"})
            for skim in record["skims"]:
                skim["file_list"] = [f"root://eospublic.cern.ch:1094//eos/opendata/atlas/{f.rsplit('/', 1)[-1]}"
                                     for f in skim["file_list"]]
            datasets.append(record)

    def api(session, method, url, params=None, **kwargs):
        response = requests.Response()
        response.status_code, response.url = 200, url
        if url.endswith("/datasets/count"):
            body = {"count": len(datasets)}
        elif url.endswith("/datasets"):
            body = datasets if params["skip"] == 0 else []
        else:
            response.status_code, body = 404, {}
        response._content = json.dumps(body).encode()
        return response

    monkeypatch.setattr(requests.Session, "request", api)
    atlasopenmagic.metadata.empty_metadata()
    resolved = resolve_samples(release="2025e-13tev-beta", protocol="https")
    ggh = generated.truth["simulation"]["samples"]["ggH125"]
    assert resolved[0].files == [f"https://opendata.cern.ch/eos/opendata/atlas/{ggh['file']}"]
    assert resolved[0].normalisation.sum_of_weights == ggh["sumOfWeights"]
    assert resolved[0].normalisation.per_weight(2.0) == pytest.approx(
        ggh["cross_section_pb"] * ggh["kFactor"] * ggh["genFiltEff"] * 2000.0 / ggh["sumOfWeights"], rel=1e-12)


@pytest.mark.parametrize("name", [sample.name for sample in SIMULATED_SAMPLES])
def test_weighted_yield_is_the_truth(generated, processed, lumi, name):
    truth = generated.truth["simulation"]["samples"][name]
    nominal = processed[name].histograms["mc_mass"][name, "nominal", :]
    integral, error = nominal.values().sum(), np.sqrt(nominal.variances().sum())
    # Exactly the weights of the selected events: the generator's count and an independent selection's.
    reference = _reference_weights(generated.sample_files[name], lumi)
    assert integral == pytest.approx(truth["selected_yield"], rel=1e-9) == pytest.approx(reference.sum(), rel=1e-9)
    assert error == pytest.approx(truth["selected_yield_error"], rel=1e-9)
    assert len(reference) == truth["selected_events"]
    cutflow = processed[name].histograms["mc_cutflow"][name, :]
    assert cutflow.values()[-1] == pytest.approx(integral, rel=1e-12)
    assert cutflow.variances()[-1] == pytest.approx(error**2, rel=1e-9)
    # The expectation from the metadata: xsec x kfac x filteff x lumi x efficiency (0.3 % precise).
    expected = truth["cross_section_pb"] * truth["kFactor"] * truth["genFiltEff"] * 1000 * lumi * truth["efficiency"]
    assert expected == pytest.approx(truth["expected_yield"], rel=1e-12)
    assert abs(integral - expected) < 3 * np.hypot(error, 0.003 * expected)
    assert 0.002 * expected < error < 0.05 * expected


def test_simulated_signal_is_the_standard_models(generated):
    simulation = generated.truth["simulation"]
    # ggF + VBF: 52.4 pb x BR(yy) 0.00227 = 118.9 fb, against 125.1 fb of all production modes in the data.
    assert simulation["expected_signal_yield"] == pytest.approx(
        sum(simulation["samples"][name]["expected_yield"] for name in SIGNAL))
    assert simulation["signal_strength"] == pytest.approx(125.1 / 118.9, rel=0.01)


def _moments(histogram, low=115.0, high=135.0):
    centers, values = histogram.axes[0].centers, histogram.values()
    inside = (centers > low) & (centers < high)
    mean = np.average(centers[inside], weights=values[inside])
    return mean, np.sqrt(np.average((centers[inside] - mean) ** 2, weights=values[inside]))


def test_energy_scale_and_resolution_variations(processed):
    histograms = processed["ggH125"].histograms["mc_mass"]
    assert list(histograms.axes["syst"]) == list(SYSTEMATICS)
    moments = {syst: _moments(histograms["ggH125", syst, :]) for syst in SYSTEMATICS}
    mean, width = moments["nominal"]
    # m_yy scales with the photon energies: +-0.5 % of 125 GeV.
    assert moments["photon_scale_up"][0] - mean == pytest.approx(0.005 * mean, abs=0.03)
    assert mean - moments["photon_scale_down"][0] == pytest.approx(0.005 * mean, abs=0.03)
    assert moments["photon_scale_up"][1] == pytest.approx(1.005 * width, rel=0.02)
    # An extra 1 % per photon widens the peak (~1.6 GeV) by ~10 %; the mirrored down-variation narrows it.
    assert 1.04 < moments["photon_resolution_up"][1] / width < 1.25
    assert 0.75 < moments["photon_resolution_down"][1] / width < 0.96
    assert moments["photon_resolution_up"][0] == pytest.approx(mean, abs=0.05)
    nominal, up, down = (histograms["ggH125", syst, :].values()
                         for syst in ("nominal", "photon_resolution_up", "photon_resolution_down"))
    assert np.allclose(down, 2 * nominal - up, rtol=0, atol=1e-12)


def test_chunks_merge_to_the_same_histograms(generated, processed, lumi):
    # One chunk per file against chunks of 10k: the per-event smearing does not depend on the chunk.
    whole = process_files([generated.sample_files["VBFH125"]], processor=SimulationProcessor(lumi_fb=lumi, bins=600),
                          dataset="VBFH125", chunksize=100_000, progress=False)
    for key in ("mc_mass", "mc_cutflow"):
        assert np.allclose(whole.histograms[key].values(), processed["VBFH125"].histograms[key].values(),
                           rtol=1e-12, atol=0)
        assert np.allclose(whole.histograms[key].variances(), processed["VBFH125"].histograms[key].variances(),
                           rtol=1e-12, atol=0)
    assert processed["VBFH125"].chunks > whole.chunks


def test_coffea_runner_with_data_and_samples_in_one_fileset(generated, processed, lumi):
    from coffea import processor
    from coffea.nanoevents import BaseSchema

    fileset = {"data": [str(f) for f in generated.files], **{n: [str(p)] for n, p in generated.sample_files.items()}}
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=BaseSchema, chunksize=7_000)
    output = runner(fileset, processor_instance=SimulationProcessor(lumi_fb=lumi, bins=600), treename="analysis")
    truth = generated.truth
    assert output["mass"].sum() == truth["selected_signal_events"] + truth["selected_background_events"]
    for name in generated.sample_files:
        assert output["mc_mass"][name, :, :].values() == pytest.approx(
            processed[name].histograms["mc_mass"][name, :, :].values(), rel=1e-12, abs=1e-15)


def test_weighted_histograms_are_written_and_read_back(processed, tmp_path, lumi):
    result = processed["ggH125"]
    paths = save_outputs(tmp_path, result, lumi_fb=lumi)
    read = read_histograms(paths.histograms)
    assert set(read) == {"mass", "cutflow", "mc_mass", "mc_cutflow"}
    assert read["mc_mass"] == result.histograms["mc_mass"] and read["mc_cutflow"] == result.histograms["mc_cutflow"]
    summary = json.loads(paths.summary.read_text())["simulation"]["ggH125"]
    nominal = result.histograms["mc_mass"]["ggH125", "nominal", :].sum().value
    assert summary["yield"]["nominal"] == pytest.approx(nominal)
    assert summary["cutflow"]["mass_window"] == pytest.approx(summary["yield"]["nominal"])
    assert set(summary["yield_error"]) == set(SYSTEMATICS)


def test_data_are_unchanged(generated, processed, tmp_path):
    alone = generate_dataset(tmp_path / "data", **OPTIONS)
    for with_mc, without in zip(generated.files, alone.files):
        assert with_mc.name == without.name
        assert ak.array_equal(uproot.open(with_mc)[TREE_NAME].arrays(), uproot.open(without)[TREE_NAME].arrays())
    timing = {"generation_seconds", "events_per_second"}
    assert {k: v for k, v in generated.truth.items() if k not in timing | {"simulation"}} == {
        k: v for k, v in alone.truth.items() if k not in timing}
    metadata = json.loads(generated.metadata_path.read_text())
    data_only = json.loads(alone.metadata_path.read_text())
    assert list(data_only) == ["data"] and metadata["data"] == data_only["data"] | {
        "skims": [{"skim_type": "GamGam", "file_list": [str(f.resolve()) for f in generated.files]}]}
    assert alone.sample_files == {}

    # Data through the simulation processor: the data's histograms, unweighted, and no simulated ones.
    plain = process_files(generated.files, processor=DiphotonProcessor(), progress=False)
    through = process_files(generated.files, processor=SimulationProcessor(lumi_fb=1.0), progress=False)
    assert set(plain.histograms) == {"mass", "cutflow", "events"}
    assert through.histograms["mass"] == plain.histograms["mass"]
    assert through.histograms["cutflow"] == plain.histograms["cutflow"]
    assert through.histograms["mc_mass"].sum().value == 0 and len(through.histograms["mc_mass"].axes["dataset"]) == 0
    # Simulated events leave the data's histograms empty.
    assert processed["VBFH125"].histograms["mass"].sum() == processed["VBFH125"].histograms["cutflow"].sum() == 0


def test_processor_options(lumi):
    processor = SimulationProcessor(lumi_fb=lumi, bins=30, energy_scale=0.01, resolution_term=0.02, seed=3)
    assert SimulationProcessor(**processor.config()).config() == processor.config()
    assert {"mcWeight", "ScaleFactor_PHOTON", "sum_of_weights", "eventNumber"} <= set(processor.columns)
    with pytest.raises(ValueError, match="lumi_fb"):
        SimulationProcessor(lumi_fb=0.0)
    with pytest.raises(ValueError, match="energy_scale"):
        SimulationProcessor(lumi_fb=1.0, energy_scale=-0.1)


def test_cli_writes_the_simulated_samples(tmp_path):
    from deploy.cli import cli  # the whole command line imports slowly: only for the CLI tests

    out = tmp_path / "cli"
    result = CliRunner().invoke(cli, ["generate", "--out", str(out), "--events", "2000", "--periods", "data15_periodD",
                                      "--seed", "1", "--mc", "--mc-events", "3000"])
    assert result.exit_code == 0, result.output
    assert "simulated ggH125 (343981)" in result.output and "simulated diphoton (302521)" in result.output
    truth = json.loads((out / "truth.json").read_text())
    for sample in SIMULATED_SAMPLES:
        assert (out / MC_FILE_PATTERN.format(dsid=sample.dsid, physics_short=sample.physics_short)).is_file()
        assert truth["simulation"]["samples"][sample.name]["nEvents"] == 3000


def test_the_continuum_samples_default_size_follows_the_datas():
    """By default the continuum sample holds the same multiple of the data's events at any data size (10M
    generated at the release's 36.1 fb^-1), within its bounds; the signal samples keep their own size."""
    from pathlib import Path

    from processors.generate.simulation import CONTINUUM_EVENTS_RANGE, sample_tasks

    def sizes(share: float) -> dict[bool, list[int]]:
        tasks = sample_tasks(Path("."), seed=1, events=None, cluster_events=1000, compression=None, data_share=share)
        found: dict[bool, list[int]] = {True: [], False: []}
        for task, sample in zip(tasks, SIMULATED_SAMPLES):
            found[sample.signal].append(task.events)
        return found

    low, high = CONTINUUM_EVENTS_RANGE
    assert sizes(1.0)[False] == [10_000_000] and sizes(0.25)[False] == [2_500_000]
    assert sizes(0.001)[False] == [low] and sizes(4.0)[False] == [high]
    assert sizes(0.25)[True] == sizes(1.0)[True] == [100_000, 100_000]
    assert [task.events for task in sample_tasks(Path("."), seed=1, events=5000, cluster_events=1000,
                                                 compression=None, data_share=0.25)] == [5000] * 3
