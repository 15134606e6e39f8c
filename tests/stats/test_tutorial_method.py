"""``--method tutorial`` is the statistics notebook's fit: against a call-for-call transcription of the notebook
(``notebook_transcription``) on a generated and processed data set, and against an independent minimiser."""

import warnings

import numpy as np
import pytest
import scipy.optimize
from _toys import make_toy
from notebook_transcription import fit_model, significance_at

from processors.engine import process_files
from processors.generate import generate_dataset
from processors.processor import DiphotonProcessor
from stats.background import fit_background
from stats.errors import FitError
from stats.mass_scan import scan_masses
from stats.spectrum import spectrum_from_hist

#: Masses where the notebook's lmfit fit reaches its minimum on this data set (Migrad's restarts confirm it).
CONFIRMED = [121.25, 122.5, 125.0, 126.25]
#: Masses where lmfit stops early: Migrad restarts (from lmfit's point, or from no signal) find a lower chi2.
STOPPED_EARLY = [117.5, 127.5]


@pytest.fixture(scope="module")
def spectrum(tmp_path_factory):
    dataset = generate_dataset(tmp_path_factory.mktemp("gen"), events=300_000, seed=17, signal_strength=3.0,
                               periods=["data16_periodD", "data16_periodL"], workers=1)
    result = process_files(dataset.files, processor=DiphotonProcessor(), progress=False)
    return spectrum_from_hist(result.histograms["mass"])


@pytest.fixture(scope="module")
def scan(spectrum):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scan_masses(spectrum.counts, spectrum.edges, CONFIRMED + STOPPED_EARLY, method="tutorial")


def _point(scan, mass):
    (point,) = [p for p in scan.points if p["mass"] == mass]
    return point


@pytest.mark.slow
@pytest.mark.parametrize("mass", CONFIRMED)
def test_parameters_and_significance_are_the_notebooks(spectrum, scan, mass):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notebook, significance = significance_at(spectrum.centers, spectrum.counts, mass)
    fit = fit_background(spectrum.counts, spectrum.edges, mass=mass, method="tutorial")
    assert fit.start == "found" and fit.edm < 2e-4
    for name, (value, error) in fit.parameters.items():
        assert value == pytest.approx(notebook.params[name].value, rel=1e-6, abs=1e-12), name
        assert error == pytest.approx(notebook.params[name].stderr, rel=1e-6), name
    signal_x, background_x, model_x_errors, _ = fit_model(spectrum.centers, spectrum.counts, mass=mass)
    np.testing.assert_allclose(fit.background, background_x, rtol=1e-6)
    np.testing.assert_allclose(fit.signal, signal_x, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.background_unc, model_x_errors, rtol=1e-6)
    point = _point(scan, mass)
    assert point["status"] == "ok"
    assert point["significance"] == pytest.approx(significance.observed_significance, abs=1e-4)
    assert point["fits"]["background_fit"]["start"] == "found"
    fits = point["fits"]
    # q0 from the recorded fits: the background-only -2lnL minus the free one.
    q0 = max(fits["background_only"]["twice_nll"] - fits["free"]["twice_nll"], 0.0)
    assert point["significance"] == pytest.approx(np.sqrt(q0), abs=1e-9)
    assert all(fit["edm"] < fit["edm_goal"] for name, fit in fits.items() if name != "background_fit")


@pytest.mark.slow  # its scan fixture: 20 s on 2 cores
@pytest.mark.parametrize("mass", STOPPED_EARLY)
def test_where_lmfit_stops_early_the_lower_minimum_stands(spectrum, scan, mass):
    _, _, _, notebook = fit_model(spectrum.centers, spectrum.counts, mass=mass)
    fit = fit_background(spectrum.counts, spectrum.edges, mass=mass, method="tutorial")
    assert fit.start != "found"
    assert fit.chi2 < notebook.chisqr - 1e-3
    # An independent minimiser (L-BFGS-B in the notebook's own parameters, from the notebook's and the
    # project's points) finds nothing lower than the project's minimum.
    counts, x = spectrum.counts, spectrum.centers
    weights = 1.0 / np.sqrt(counts)
    t = (x - 130.0) / 30.0

    def chi2(p):
        peak = p[5] / (np.sqrt(2 * np.pi) * p[6]) * np.exp(-0.5 * ((x - mass) / p[6]) ** 2)
        return float(np.sum(((np.polynomial.polynomial.polyval(t, p[:5]) + peak - counts) * weights) ** 2))

    def in_t(params):
        coefficients = np.array([params[f"c{i}"][0] if isinstance(params[f"c{i}"], tuple) else params[f"c{i}"].value
                                 for i in range(5)])
        # A power series in x written in t = (x - 130) / 30: a(x) = sum b_j t^j.
        return np.polynomial.polynomial.Polynomial(coefficients)(np.polynomial.polynomial.Polynomial([130, 30])).coef

    starts = [np.r_[in_t(notebook.params), notebook.params["amplitude"].value, notebook.params["sigma"].value],
              np.r_[in_t(fit.parameters), fit.parameters["amplitude"][0], fit.parameters["sigma"][0]]]
    bounds = [(None, None)] * 5 + [(0, 1e4), (1, 5)]
    best = min(scipy.optimize.minimize(chi2, s, method="L-BFGS-B", bounds=bounds,
                                       options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 20000}).fun for s in starts)
    assert fit.chi2 <= best + 1e-4
    point = _point(scan, mass)
    assert point["status"] == "ok" and point["fits"]["background_fit"]["start"] != "found"
    assert point["signal_yield"] == pytest.approx(fit.signal_yield, rel=1e-9)


@pytest.mark.slow
def test_where_the_notebook_has_no_uncertainties_the_point_fails_or_a_lower_minimum_stands(spectrum):
    # The notebook's eval_uncertainty is all zero (or raises) where lmfit estimates no covariance; the project
    # never builds a workspace from that: its verified fit either has uncertainties at a lower chi2, or fails
    # with the reason.
    seen = 0
    for mass in np.linspace(110.0, 140.0, 25):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, model_x_errors, notebook = fit_model(spectrum.centers, spectrum.counts, mass=mass)
        if notebook.errorbars:
            continue
        seen += 1
        assert np.all(model_x_errors == 0)
        try:
            fit = fit_background(spectrum.counts, spectrum.edges, mass=mass, method="tutorial")
        except FitError as err:
            assert "no parameter uncertainties" in str(err)
            continue
        assert fit.covariance_ok and fit.start != "found" and fit.chi2 < notebook.chisqr
        assert np.all(fit.background_unc > 0)
    assert seen >= 3


def test_a_fit_without_uncertainties_is_a_failed_point_with_the_reason():
    toy = make_toy(seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = scan_masses(toy.counts, toy.edges, [115.0], method="tutorial")
    (point,) = scan.points
    assert point["status"] == "failed" and point["significance"] is None and point["fits"] is None
    assert "FitError: lmfit estimated no parameter uncertainties at 115.0 GeV" in point["error"]
