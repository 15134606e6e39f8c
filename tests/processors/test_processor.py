"""The coffea processor against a straightforward tutorial-style implementation, and under coffea's Runner."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
import vector
from coffea import processor
from coffea.nanoevents import BaseSchema

from processors.engine import process_files
from processors.generate import generate_dataset
from processors.processor import DiphotonProcessor, cutflow_histogram, mass_histogram
from processors.selection import CUT_NAMES, Cuts


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("gen"), events=60_000, seed=11, signal_strength=20,
        periods=["data15_periodD", "data16_periodA"], basket_entries=10_000, workers=1,
    )


def reference_masses(files, cuts=Cuts()):
    """The tutorial's loop (uproot.iterate, awkward, vector), with the crack cut corrected."""
    masses = []
    for batch in uproot.iterate([f"{f}:analysis" for f in files], list(DiphotonProcessor.columns), step_size="50 MB"):
        batch = batch[ak.num(batch.photon_pt) >= 2]
        pt, eta, tight, iso = batch.photon_pt, batch.photon_eta, batch.photon_isTightID, batch.photon_ptcone20
        keep = tight[:, 0] & tight[:, 1]
        keep = keep & (pt[:, 0] > cuts.lead_pt) & (pt[:, 1] > cuts.sublead_pt)
        keep = keep & (iso[:, 0] / pt[:, 0] < cuts.isolation) & (iso[:, 1] / pt[:, 1] < cuts.isolation)
        for i in (0, 1):
            keep = keep & ((abs(eta[:, i]) <= cuts.crack[0]) | (abs(eta[:, i]) >= cuts.crack[1]))
        batch = batch[keep]
        p4 = vector.zip(
            {name: ak.values_astype(batch[f"photon_{name}"], np.float64) for name in ("pt", "eta", "phi", "e")}
        )
        mass = (p4[:, 0] + p4[:, 1]).M
        pt = batch.photon_pt
        keep = (mass != 0) & (pt[:, 0] / mass > cuts.pt_over_m) & (pt[:, 1] / mass > cuts.pt_over_m)
        masses.append(ak.to_numpy(mass[keep]))
    return np.concatenate(masses)


def test_matches_the_reference_bin_for_bin(dataset):
    result = process_files(dataset.files, processor=DiphotonProcessor(), chunksize=10_000, progress=False)
    expected, _ = np.histogram(reference_masses(dataset.files), bins=60, range=(100, 160))
    assert result.histograms["mass"]["data", :].values().tolist() == expected.tolist()
    assert expected.sum() > 1000


def test_selected_events_match_the_generator_truth(dataset):
    result = process_files(dataset.files, processor=DiphotonProcessor(), progress=False)
    truth = dataset.truth
    assert result.histograms["mass"].sum() == truth["selected_signal_events"] + truth["selected_background_events"]


def test_coffea_runner_gives_identical_histograms(dataset):
    fileset = {"data": [str(f) for f in dataset.files]}
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=BaseSchema, chunksize=25_000)
    coffea_output = runner(fileset, processor_instance=DiphotonProcessor(), treename="analysis")
    ours = process_files(dataset.files, processor=DiphotonProcessor(), progress=False)
    assert coffea_output["mass"] == ours.histograms["mass"]
    assert coffea_output["cutflow"] == ours.histograms["cutflow"]
    assert coffea_output["events"] == dataset.events_written


def test_dataset_name_comes_from_the_events_metadata(dataset):
    result = process_files(dataset.files[:1], processor=DiphotonProcessor(), dataset="period_D", progress=False)
    assert list(result.histograms["mass"].axes["dataset"]) == ["period_D"]
    assert list(result.histograms["cutflow"].axes["cut"]) == list(CUT_NAMES)


def test_each_call_fills_fresh_histograms(dataset):
    events = uproot.open(dataset.files[0])["analysis"].arrays(list(DiphotonProcessor.columns), entry_stop=5000)
    diphoton = DiphotonProcessor()
    first, second = diphoton.process(events), diphoton.process(events)
    assert first["mass"] == second["mass"] and first["mass"] is not second["mass"]
    assert first["events"] == 5000


def test_configuration_sets_the_axes():
    diphoton = DiphotonProcessor(bins=30, mass_range=(105.0, 150.0))
    assert diphoton.empty_output()["mass"].axes["mass"].edges[[0, -1]].tolist() == [105.0, 150.0]
    assert DiphotonProcessor(**diphoton.config()).config() == diphoton.config()
    assert mass_histogram().axes["mass"].size == 60 and cutflow_histogram().axes["cut"].size == len(CUT_NAMES)
    with pytest.raises(ValueError, match="bins"):
        DiphotonProcessor(bins=0)
    with pytest.raises(ValueError, match="mass_range"):
        DiphotonProcessor(mass_range=(160.0, 100.0))


def test_peak_at_the_injected_mass_with_the_true_signal_yield(dataset):
    from scipy.optimize import curve_fit

    result = process_files(dataset.files, processor=DiphotonProcessor(), progress=False)
    h = result.histograms["mass"]["data", :]
    x, y, width = h.axes[0].centers, h.values(), h.axes[0].widths[0]

    def model(x, signal, mass, sigma, a, b, c):
        t = (x - 130.0) / 30.0
        return signal * width * np.exp(-0.5 * ((x - mass) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma) + np.exp(a + b * t + c * t * t)

    start = (300.0, 125.0, 2.0, np.log(y.mean()), -1.0, 0.0)
    params, covariance = curve_fit(model, x, y, p0=start, sigma=np.sqrt(np.maximum(y, 1.0)), absolute_sigma=True)
    errors = np.sqrt(np.diag(covariance))
    truth = dataset.truth
    assert abs(params[1] - truth["signal_mass"]) < 3 * errors[1] + 0.1
    assert abs(params[0] - truth["selected_signal_events"]) < 3 * errors[0]
    assert params[0] / errors[0] > 5
