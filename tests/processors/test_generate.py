"""The synthetic GamGam generator: files like the release's, a continuum and a peak where the truth says."""

from __future__ import annotations

import collections
import math
import json

import atlasopenmagic
import atlasopenmagic.metadata
import awkward as ak
import numpy as np
import pytest
import uproot
import vector
from click.testing import CliRunner

from processors.errors import ProcessingError
from processors.datasets import FILE_PATTERN, PERIODS, write_metadata
from processors.generate import EVENTS_PER_FB, SIGMA_BR_FB, generate_dataset
from processors.schema import BRANCHES, TREE_NAME, validate_file

# Two periods, 30k continuum events, a strong signal at a non-default mass, small clusters.
OPTIONS = dict(
    events=30_000,
    periods=["data16_periodI", "data15_periodJ"],
    signal_mass=127.0,
    signal_strength=40.0,
    basket_entries=2_000,
    seed=7,
)
PHOTON_BRANCHES = ["photon_pt", "photon_eta", "photon_phi", "photon_e", "photon_isTightID", "photon_ptcone20"]


@pytest.fixture(scope="module")
def signal(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("signal"), **OPTIONS)


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("background"), background_only=True, **OPTIONS)


def _photons(files):
    return ak.concatenate([uproot.open(f)[TREE_NAME].arrays(PHOTON_BRANCHES) for f in files])


def _selected_masses(files):
    """The tutorial selection and m_yy, computed with vector from the files (independent of the generator)."""
    events = _photons(files)
    photons = vector.zip(
        {"pt": events.photon_pt, "eta": events.photon_eta, "phi": events.photon_phi, "e": events.photon_e}
    )
    lead, sub = photons[:, 0], photons[:, 1]
    mass = (lead + sub).mass
    abs_eta = abs(events.photon_eta[:, :2])
    isolation = events.photon_ptcone20[:, :2] / events.photon_pt[:, :2]
    keep = (
        ak.all(events.photon_isTightID[:, :2], axis=1)
        & (lead.pt > 50)
        & (sub.pt > 30)
        & ak.all(isolation < 0.055, axis=1)
        & ~ak.any((abs_eta > 1.37) & (abs_eta < 1.52), axis=1)
        & (lead.pt / mass > 0.35)
        & (sub.pt / mass > 0.35)
        & (mass > 100)
        & (mass < 160)
    )
    return ak.to_numpy(mass[keep]).astype(np.float64)


def test_files_follow_the_schema(signal):
    assert [f.name for f in signal.files] == [
        FILE_PATTERN.format(period=name) for name in ("data15_periodJ", "data16_periodI")
    ]
    entries = [validate_file(str(f)) for f in signal.files]
    assert sum(entries) == signal.events_written == signal.truth["events_written"]
    tree = uproot.open(signal.files[1])[TREE_NAME]
    assert tree.keys() == [branch.name for branch in BRANCHES]
    assert tree["photon_pt"].typename == "float[]" and tree["photon_isTightID"].typename == "bool[]"
    assert tree["photon_n"].typename == "int32_t"
    assert ak.all(tree["photon_n"].array() == ak.num(tree["photon_pt"].array()))
    # One basket per branch per cluster of 2,000 continuum events, like ROOT clusters.
    # Period I has 6.2 of the two periods' 7.4 fb^-1.
    clusters = math.ceil(round(30_000 * 6.2 / 7.4) / 2_000)
    assert {tree[name].num_baskets for name in tree.keys()} == {clusters}


def test_photons_ordered_and_preselected(signal):
    events = _photons(signal.files)
    pt, eta = events.photon_pt, events.photon_eta
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    assert ak.all(abs(eta) < 2.37)
    assert ak.all(ak.sum((pt > 25) & (abs(eta) < 2.37), axis=1) >= 2)
    assert ak.any(ak.num(pt) > 2)  # extra soft photons
    crack = (abs(eta) > 1.37) & (abs(eta) < 1.52)
    assert 0.01 < ak.mean(ak.any(crack, axis=1)) < 0.2
    assert np.allclose(ak.flatten(events.photon_e), ak.flatten(pt * np.cosh(eta)), rtol=1e-5)


def test_peak_where_the_truth_says(signal, background):
    # Same seed: the continuum is identical, so the multiset difference of selected masses is the signal.
    with_signal, without = _selected_masses(signal.files), _selected_masses(background.files)
    peak = np.array(sorted((collections.Counter(with_signal) - collections.Counter(without)).elements()))
    truth = signal.truth
    assert len(without) == background.truth["selected_background_events"] == truth["selected_background_events"]
    assert len(peak) == len(with_signal) - len(without) == truth["selected_signal_events"]
    assert len(peak) > 300
    low, high = np.percentile(peak, [15.865, 84.135])
    width = (high - low) / 2
    assert 1.5 < truth["signal_resolution"] < 1.9
    assert width == pytest.approx(truth["signal_resolution"], rel=0.12)
    assert np.median(peak) == pytest.approx(127.0, abs=4 * width / np.sqrt(len(peak)))


def test_truth_counts(signal, background):
    truth = signal.truth
    assert truth["signal_mass"] == 127.0 and truth["seed"] == 7 and not truth["background_only"]
    assert truth["lumi_fb"] == pytest.approx(30_000 / EVENTS_PER_FB)
    assert truth["background_events"] == 30_000
    assert signal.events_written == 30_000 + truth["signal_events_injected"]
    produced = 40.0 * SIGMA_BR_FB * truth["lumi_fb"]
    for expected, observed, error in [
        (truth["signal_events_expected"], truth["signal_events_injected"], 0.0),
        (truth["expected_selected_signal"], truth["selected_signal_events"], 0.0),
        (
            truth["background_expected_in_window"],
            truth["selected_background_events"],
            truth["background_expected_in_window_error"],
        ),
    ]:
        assert abs(observed - expected) < 4 * np.sqrt(expected + error**2)
    assert 0 < truth["background_expected_in_window_error"] < 0.02 * truth["background_expected_in_window"]
    # Skim acceptance and selection efficiency of a central Higgs decaying to photons.
    assert 0.55 < truth["signal_events_expected"] / produced < 0.85
    assert 0.3 < truth["expected_selected_signal"] / produced < 0.5
    assert background.truth["signal_events_injected"] == background.truth["selected_signal_events"] == 0
    assert background.truth["background_only"]
    assert json.loads(signal.truth_path.read_text()) == truth


def test_release_luminosity_gives_a_significant_peak(signal):
    # Expectations at the release's 36.1 fb^-1 with mu = 1, rescaled from the small dataset's truth.
    per_fb = 36.1 / signal.truth["lumi_fb"]
    s = signal.truth["expected_selected_signal"] / 40.0 * per_fb
    b = signal.truth["background_expected_in_window"] * per_fb
    assert 1300 < s < 2100 and 5e4 < b < 5e5
    # Counting in +-1.5 sigma around the peak against a locally flat continuum (60 GeV window).
    z = 0.87 * s / np.sqrt(b * 3 * signal.truth["signal_resolution"] / 60 * 1.5)
    assert 5 < z < 15


def test_run_and_event_numbers(signal):
    for path in signal.files:
        period = next(p for p in PERIODS if path.name == FILE_PATTERN.format(period=p.name))
        ids = uproot.open(path)[TREE_NAME].arrays(["runNumber", "eventNumber"], library="np")
        assert np.all((ids["runNumber"] >= period.first_run) & (ids["runNumber"] <= period.last_run))
        assert np.all(np.diff(ids["runNumber"].astype(np.int64)) >= 0)
        assert len(np.unique(ids["eventNumber"])) == len(ids["eventNumber"])


def test_metadata_round_trip_through_atlasopenmagic(signal, monkeypatch, tmp_path):
    # read_metadata replaces the module's global state: restore it after the test.
    for name in ("_metadata", "current_release", "AVAILABLE_FIELDS", "current_local_path"):
        monkeypatch.setattr(atlasopenmagic.metadata, name, getattr(atlasopenmagic.metadata, name))
    atlasopenmagic.read_metadata(str(signal.metadata_path))
    urls = atlasopenmagic.get_urls("data", skim="GamGam", protocol="root")
    assert urls == [str(f.resolve()) for f in signal.files]
    with pytest.raises(ValueError, match="Skim 'exactly4lep' not found"):
        atlasopenmagic.get_urls("data", skim="exactly4lep", protocol="root")

    served = [f"root://localhost:1094//data/{f.name}" for f in signal.files]
    atlasopenmagic.read_metadata(str(write_metadata(served, tmp_path / "served.json")))
    assert atlasopenmagic.get_urls("data", skim="GamGam", protocol="root") == served


def test_metadata_needs_files(tmp_path):
    with pytest.raises(ProcessingError, match="write_metadata: no files to list"):
        write_metadata([], tmp_path / "metadata.json")


def test_reproducible_with_seed(tmp_path):
    options = dict(events=1_500, periods=["data15_periodD"], basket_entries=500, signal_mass=127.0)
    first = generate_dataset(tmp_path / "a", seed=3, **options)
    again = generate_dataset(tmp_path / "b", seed=3, **options)
    other = generate_dataset(tmp_path / "c", seed=4, **options)
    read = [uproot.open(d.files[0])[TREE_NAME].arrays() for d in (first, again, other)]
    assert ak.array_equal(read[0], read[1])
    assert not ak.array_equal(read[0].photon_pt, read[2].photon_pt)


def test_events_split_by_luminosity(tmp_path):
    # Two events over four periods: one each in the two of largest luminosity, empty (valid) files elsewhere.
    names = ["data15_periodD", "data16_periodA", "data16_periodI", "data16_periodL"]
    dataset = generate_dataset(tmp_path, events=2, periods=names, background_only=True, signal_mass=127.0)
    entries = {f.name: validate_file(str(f)) for f in dataset.files}
    assert entries == {FILE_PATTERN.format(period=name): int(name in names[2:]) for name in names}
    assert dataset.truth["lumi_fb"] == pytest.approx(2 / EVENTS_PER_FB)


def test_luminosity_and_scale_set_the_size(tmp_path):
    # Period L holds 7.3 of the release's 36.1 fb^-1; twice the luminosity at a 1/1000 scale.
    dataset = generate_dataset(tmp_path, lumi_fb=72.2, scale=1e-3, periods=["data16_periodL"], signal_mass=127.0)
    assert dataset.truth["lumi_fb"] == pytest.approx(2 * 7.3e-3)
    assert dataset.truth["background_events"] == round(2 * 7.3e-3 * EVENTS_PER_FB)


@pytest.mark.slow
def test_parallel_writing_gives_the_same_files(tmp_path):
    options = dict(events=6_000, periods=["data15_periodD", "data16_periodL"], basket_entries=1_000, seed=5)
    serial = generate_dataset(tmp_path / "serial", workers=1, **options)
    parallel = generate_dataset(tmp_path / "parallel", workers=2, **options)
    for a, b in zip(serial.files, parallel.files):
        assert ak.array_equal(uproot.open(a)[TREE_NAME].arrays(), uproot.open(b)[TREE_NAME].arrays())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(lumi_fb=0.0), "luminosity must be positive"),
        (dict(scale=-1.0), "scale must be positive"),
        (dict(signal_mass=300.0), "signal mass 300.0 GeV is outside"),
        (dict(signal_strength=-1.0), "signal strength must be non-negative"),
        (dict(events=0), "number of events must be at least 1"),
        (dict(periods=["data17_periodB"]), "unknown period 'data17_periodB'"),
        (dict(periods=[]), "no period selected"),
    ],
)
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ProcessingError, match=message):
        generate_dataset(tmp_path, **options)


def test_cli_generates(tmp_path):
    from deploy.cli import cli  # the whole command line imports slowly: only for the CLI tests

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli,
        ["generate", "--out", str(out), "--events", "2000", "--periods", "data15_periodD", "--seed", "1"]
        + ["--signal-mass", "127"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 files, 2,0" in result.output
    assert "generating" in result.output  # the bar of the events generated (stderr)
    quiet = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path / "quiet"), "--events", "2000", "--periods",
                                     "data15_periodD", "--seed", "1", "--no-progress"])
    assert quiet.exit_code == 0 and "generating" not in quiet.output, quiet.output
    truth = json.loads((out / "truth.json").read_text())
    assert truth["seed"] == 1 and truth["background_events"] == 2000
    assert validate_file(str(out / FILE_PATTERN.format(period="data15_periodD"))) == truth["events_written"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--periods", "data15_periodX"], "error: unknown period 'data15_periodX'"),
        (["--signal-mass", "90"], "error: signal mass 90.0 GeV is outside"),
        (["--lumi", "-3"], "Invalid value for '--lumi'"),
    ],
)
def test_cli_bad_options(tmp_path, capsys, args, message):
    from deploy.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--out", str(tmp_path / "x"), "--events", "10", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
