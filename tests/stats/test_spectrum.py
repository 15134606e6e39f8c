"""Reading the mass spectrum from processing outputs, and rejecting bad histograms."""

import json

import hist
import hist.serialization
import numpy as np
import pytest
import uhi.io.json
from _toys import EDGES, make_toy

from stats.errors import HistogramError
from stats.spectrum import load_spectrum, validate_spectrum


def _mass_hist(counts_by_dataset):
    histogram = hist.Hist(hist.axis.StrCategory([], name="dataset", growth=True),
                          hist.axis.Regular(60, 100, 160, name="mass"), storage=hist.storage.Double())
    centres = 0.5 * (EDGES[1:] + EDGES[:-1])
    for dataset, counts in counts_by_dataset.items():
        histogram.fill(dataset=dataset, mass=centres, weight=counts)
    return histogram


def test_histograms_json_sums_datasets_and_takes_lumi_from_summary(tmp_path):
    first, second = make_toy(seed=1).counts, make_toy(seed=2, signal_yield=0.0).counts
    payload = {"mass": hist.serialization.to_uhi(_mass_hist({"data15": first, "data16": second})),
               "cutflow": hist.serialization.to_uhi(hist.Hist(hist.axis.StrCategory(["all"], name="cut")))}
    (tmp_path / "histograms.json").write_text(json.dumps(payload, default=uhi.io.json.default))
    (tmp_path / "summary.json").write_text(json.dumps({"lumi_fb": 36.1, "mass": {"edges": [0, 1], "counts": [5]}}))
    spectrum = load_spectrum(tmp_path)
    np.testing.assert_allclose(spectrum.counts, first + second)
    np.testing.assert_allclose(spectrum.edges, EDGES)
    assert spectrum.lumi_fb == 36.1


def test_summary_json_alone(tmp_path):
    toy = make_toy(seed=3)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"lumi_fb": 10.0, "mass": {"edges": toy.edges.tolist(), "counts": toy.counts.tolist()}}))
    spectrum = load_spectrum(tmp_path / "summary.json")
    np.testing.assert_array_equal(spectrum.counts, toy.counts)
    assert spectrum.lumi_fb == 10.0


@pytest.mark.parametrize(
    ("counts", "edges", "message"),
    [
        ([], [100.0], "no bins"),
        ([0.0, 0.0], [0.0, 1.0, 2.0], "empty"),
        ([1.0, 2.0], [0.0, 1.0], "edges do not match"),
        ([1.0, 2.0], [0.0, 2.0, 1.0], "strictly increasing"),
        ([1.0, np.nan], [0.0, 1.0, 2.0], "non-finite counts in 1 bin"),
        ([1.0, np.inf, 3.0], [0.0, 1.0, 2.0, 3.0], "non-finite"),
        ([1.0, -2.0], [0.0, 1.0, 2.0], "negative counts"),
    ],
)
def test_bad_histograms_are_rejected(counts, edges, message):
    with pytest.raises(HistogramError, match=message):
        validate_spectrum(counts, edges)


def test_missing_and_malformed_inputs(tmp_path):
    with pytest.raises(HistogramError, match="no histograms.json or summary.json"):
        load_spectrum(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"mass": {"edges": [0, 1, 2], "counts": [1]}}))
    with pytest.raises(HistogramError, match="edges do not match"):
        load_spectrum(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(HistogramError, match="cannot read"):
        load_spectrum(tmp_path)
