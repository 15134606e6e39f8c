"""Fit verification: a fitter that stops early is overruled by the restarts, against scipy's minimiser."""

import json

import numpy as np
import pyhf
import pytest
import scipy.optimize
from _toys import make_toy

from stats import inference
from stats.background import fit_background
from stats.errors import FitError
from stats.minimum import verify_minimum
from stats.workspace import build_workspace


def rosenbrock(p):
    return float((1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2)


def test_a_point_short_of_the_minimum_is_replaced_by_the_lower_restart():
    # A fitter that "stopped" on the valley floor far from the minimum (value 0.25 at (0.5, 0.25)).
    stopped = np.array([0.5, 0.25])
    minimum = verify_minimum(rosenbrock, stopped, rosenbrock(stopped), starts={"other": [-1.0, 1.0]})
    reference = scipy.optimize.minimize(rosenbrock, stopped, method="BFGS", options={"gtol": 1e-10})
    assert minimum.start != "found"
    # Equal within Migrad's own resolution (its EDM goal) and far below the stopped point's 0.25.
    assert minimum.fval == pytest.approx(reference.fun, abs=minimum.edm_goal)
    np.testing.assert_allclose(minimum.params, reference.x, atol=0.02)
    assert minimum.edm < minimum.edm_goal


def test_a_true_minimum_stands_with_its_own_numbers():
    found = np.array([1.0, 1.0])
    minimum = verify_minimum(rosenbrock, found, 0.0, starts={"other": [-1.0, 1.0]})
    assert minimum.start == "found" and minimum.fval == 0.0
    np.testing.assert_array_equal(minimum.params, found)
    assert set(minimum.restarts) == {"found", "other"}


def test_no_valid_minimum_is_a_fit_error_with_the_reasons():
    with pytest.raises(FitError, match="no valid minimum.*from found.*from other"):
        verify_minimum(lambda p: float(p[0]), [0.0], 0.0, starts={"other": [1.0]})


def test_robust_fit_equals_scipy_on_the_same_chi2():
    toy = make_toy(seed=4, signal_yield=900.0)
    fit = fit_background(toy.counts, toy.edges, mass=125.0)
    centres = 0.5 * (toy.edges[1:] + toy.edges[:-1])
    # lmfit's GaussianModel: the density at the bin centre times the amplitude.
    peak = np.exp(-0.5 * ((centres - 125.0) / 1.7) ** 2) / (np.sqrt(2 * np.pi) * 1.7)
    design = np.column_stack([np.vander((centres - 130.0) / 30.0, 5, increasing=True), peak])
    weights = 1.0 / np.sqrt(np.maximum(toy.counts, 1.0))
    solution = np.linalg.lstsq(design * weights[:, None], toy.counts * weights, rcond=None)
    assert fit.chi2 == pytest.approx(float(solution[1][0]), rel=1e-8)
    assert fit.signal_yield == pytest.approx(solution[0][-1], rel=1e-6)
    assert fit.start == "found" and fit.edm < 2e-4


@pytest.mark.slow
def test_a_pyhf_fit_that_stops_early_does_not_make_the_significance(monkeypatch):
    toy = make_toy(seed=1, signal_yield=1800.0)
    spec = build_workspace(toy.counts, fit_background(toy.counts, toy.edges, mass=125.0))
    honest = inference.discovery_significance(spec)
    original = pyhf.infer.mle.fit

    def stops_at_its_start(data, pdf, init_pars=None, par_bounds=None, fixed_params=None, **kwargs):
        # Like scipy's SLSQP on the HEPData likelihood: it returns its starting point as the minimum.
        init = np.asarray(pdf.config.suggested_init() if init_pars is None else init_pars, dtype=float)
        value = float(-2.0 * pdf.logpdf(init, np.asarray(data))[0])
        return (init, value) if kwargs.get("return_fitted_val") else init

    monkeypatch.setattr(pyhf.infer.mle, "fit", stops_at_its_start)
    early = inference.discovery_significance(spec)
    monkeypatch.setattr(pyhf.infer.mle, "fit", original)
    assert early.fits["free"]["start"] != "found"
    assert early.observed == pytest.approx(honest.observed, abs=1e-3)
    assert early.expected == pytest.approx(honest.expected, abs=1e-3)
    assert early.fits["free"]["twice_nll"] == pytest.approx(honest.fits["free"]["twice_nll"], abs=1e-3)
    assert json.loads(json.dumps(early.fits)) == early.fits
